"""Tabulates the progress lines of `gan2shape reconstruct` logs (one per --log-every: loss and, with
ground truth, SIDE ×10⁻² and MAD °) as CSV, so that runs stopped before writing their files (a device
call's limit) still give their trajectories.

    python bench/progress_csv.py LOG [LOG ...] --out trajectory.csv [--label-from-parent 3] [--plot t.png]

A log's label is its path's last `--label-from-parent` folders plus its stem (default: the whole path).
Progress bars joined to a line with carriage returns are split off first.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

LINE = re.compile(r"INFO (?:(?P<image>\S+) )?iteration (?P<iteration>\d+) \(stage (?P<stage>\d+), step (?P<step>\d+)\): "
                  r"loss (?P<loss>\S+)(?: SIDE (?P<side>\S+) MAD (?P<mad>\S+))?$")
FIELDS = ["log", "image", "iteration", "stage", "step", "loss", "side_x100", "mad"]


def read_progress(path: Path, label: str) -> list[dict]:
    """The progress entries of one log, in order."""
    rows = []
    for raw in path.read_text(errors="replace").replace("\r", "\n").splitlines():
        m = LINE.search(raw.strip())
        if m:
            rows.append({"log": label, "image": m["image"] or "", "iteration": int(m["iteration"]),
                         "stage": int(m["stage"]), "step": int(m["step"]), "loss": float(m["loss"]),
                         "side_x100": float(m["side"]) if m["side"] else "", "mad": float(m["mad"]) if m["mad"] else ""})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """SIDE against iteration, one line per log (the entries with ground truth)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label in dict.fromkeys(r["log"] for r in rows):
        pts = [(r["iteration"], r["side_x100"]) for r in rows if r["log"] == label and r["side_x100"] != ""]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("SIDE ×10⁻²")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("logs", nargs="+", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--label-from-parent", type=int, help="label = the last N folders and the stem")
    p.add_argument("--plot", type=Path, help="also a figure: SIDE ×10⁻² against iteration, one line per log")
    args = p.parse_args(argv)
    rows = []
    for path in args.logs:
        if not path.is_file():
            raise SystemExit(f"{path}: no such log")
        label = str(path) if args.label_from_parent is None else \
            "/".join([*path.parent.parts[len(path.parent.parts) - args.label_from_parent:], path.stem])
        found = read_progress(path, label)
        if not found:
            print(f"{path}: no progress lines (was it run with --log-every?)", file=sys.stderr)
        rows += found
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    if args.plot:
        plot(rows, args.plot)
    print(f"{len(rows)} entries from {len(args.logs)} logs -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
