#!/usr/bin/env python3
"""The end of a run, for people: progress while it runs, the report and headline numbers after it,
and the committed reference numbers of `make demo`.

  demo_result.py watch -- snakemake all ...   run the command, pass its output through, and add an
                                              overall progress line (jobs done, elapsed, estimate,
                                              what each running reconstruct job is doing)
  demo_result.py show                         where the report is, the headline numbers, and how
                                              they compare with the reference (never fails)
  demo_result.py check                        exit 1 when the numbers leave the reference tolerance
  demo_result.py record                       make the current results the reference

The reference (results/reference/demo/) is what `make demo` produced with the committed params.yaml,
seed and thread count; `check` compares SIDE and MAD of every method with it (TOLERANCE below).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

METRICS = Path("results/metrics.json")
PER_IMAGE = Path("results/per_image.csv")
REPORT = Path("results/report/index.html")
REFERENCE = Path("results/reference/demo")
# Same seed, same thread count, same machine: identical numbers (tests/test_pipeline.py checks a
# re-run). Across machines the summation order of the BLAS/OpenMP kernels differs; a fresh `make
# demo` must stay within this relative difference of the reference on every method's SIDE and MAD.
TOLERANCE = 0.02
KEYS = ("side_mean", "mad_mean")


# --------------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------------

def load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path}: not found (run `make demo` first)") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}: not valid JSON ({e})") from None


def compare(current: dict, reference: dict, tol: float = TOLERANCE) -> list[str]:
    """Differences beyond ``tol`` (relative) of SIDE / MAD per method, and missing methods."""
    problems = []
    ref_methods, cur_methods = reference.get("methods", {}), current.get("methods", {})
    for name, ref in sorted(ref_methods.items()):
        cur = cur_methods.get(name)
        if cur is None:
            problems.append(f"{name}: missing from the current results")
            continue
        for key in KEYS:
            a, b = cur.get(key), ref.get(key)
            if a is None or b is None:
                continue
            rel = abs(a - b) / max(abs(b), 1e-12)
            if rel > tol:
                problems.append(f"{name} {key}: {a:.4g} vs reference {b:.4g} ({100 * rel:.1f}% > {100 * tol:.0f}%)")
    for name in sorted(set(cur_methods) - set(ref_methods)):
        problems.append(f"{name}: not in the reference")
    return problems


def headline(m: dict) -> str:
    lines = [f"{m.get('dataset', '?')}, preset {m.get('preset', '?')}, N_p = {m.get('np', '?')}, "
             f"{m.get('runs', '?')} reconstruction(s), {m.get('seconds_per_image', float('nan')):.1f} s per image"]
    lines.append(f"  {'method':28s} {'SIDE':>8s} {'MAD (deg)':>10s}   (lower is better)")
    for name, v in sorted(m.get("methods", {}).items(), key=lambda kv: kv[1].get("side_mean", 0)):
        mark = "  <- main" if name == m.get("main_method") else ""
        lines.append(f"  {name:28s} {v.get('side_mean', float('nan')):8.3f} {v.get('mad_mean', float('nan')):10.2f}{mark}")
    return "\n".join(lines)


def cmd_show(args) -> int:
    if not METRICS.is_file():
        print(f"no {METRICS} yet: the run did not finish (see the messages above)")
        return 0
    m = load(METRICS)
    print("\n" + "=" * 78)
    print(f"Report: {REPORT.resolve()}" + ("" if REPORT.is_file() else " (not written)"))
    print(headline(m))
    ref = REFERENCE / "metrics.json"
    if ref.is_file():
        probs = compare(m, load(ref))
        print(f"Reference ({ref}): " + ("within " + f"{100 * TOLERANCE:.0f}%" if not probs else
                                         "DIFFERS:\n  " + "\n  ".join(probs)))
    print("=" * 78)
    return 0


def cmd_check(args) -> int:
    probs = compare(load(METRICS), load(REFERENCE / "metrics.json"), args.tolerance)
    if probs:
        print(f"{METRICS} differs from {REFERENCE / 'metrics.json'} (tolerance {100 * args.tolerance:g}%):\n  "
              + "\n  ".join(probs), file=sys.stderr)
        return 1
    print(f"{METRICS} matches {REFERENCE / 'metrics.json'} within {100 * args.tolerance:g}%")
    return 0


def cmd_record(args) -> int:
    m = load(METRICS)
    REFERENCE.mkdir(parents=True, exist_ok=True)
    shutil.copy2(METRICS, REFERENCE / "metrics.json")
    if PER_IMAGE.is_file():
        shutil.copy2(PER_IMAGE, REFERENCE / "per_image.csv")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "src", "workflow", "params.yaml"],
                                capture_output=True, text=True).stdout.strip())
    try:
        import torch
        torch_version, threads = torch.__version__, torch.get_num_threads()
    except ImportError:
        torch_version, threads = None, None
    prov = {"commit": commit + ("+changes" if dirty else ""), "date": datetime.now(timezone.utc).isoformat(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch_threads": threads,
            "torch": torch_version, "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "tolerance": TOLERANCE, "dataset": m.get("dataset")}
    (REFERENCE / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    print(f"recorded {METRICS} as the reference in {REFERENCE}/ (commit it)")
    return 0


# --------------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------------

STEPS = re.compile(r"(\d+) of (\d+) steps \((\d+)%\) done")
TQDM = re.compile(r"(\d+)/(\d+) \[[^\]]*\]")


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def running_reconstructions(since: float) -> list[str]:
    """The last progress-bar state of every reconstruct log written to in the last 30 s."""
    out = []
    for path in sorted(glob.glob("results/*/logs/reconstruct/*/*.log")):
        try:
            st = os.stat(path)
            if st.st_mtime < max(since, time.time() - 30):
                continue
            with open(path, "rb") as f:
                f.seek(max(0, st.st_size - 4096))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        bars = [b for b in re.split(r"[\r\n]", tail) if TQDM.search(b)]
        if not bars:
            continue
        bar = bars[-1]
        m = TQDM.search(bar)
        prior, image = Path(path).parent.name, Path(path).stem
        extra = bar[m.end():].strip(" ,]")  # a postfix (e.g. stage / step) when the trainer sets one
        out.append(f"reconstruct {prior}/{image} {m.group(1)}/{m.group(2)} it" + (f" {extra}" if extra else ""))
    return out


def progress_line(done: int, total: int, start: float, running: list[str]) -> str:
    elapsed = time.time() - start
    eta = f", ~{_fmt(elapsed / done * (total - done))} left at the pace so far" if 0 < done < total else ""
    pct = 100 * done // total if total else 0
    return (f"[progress] {done}/{total} jobs ({pct}%), {_fmt(elapsed)} elapsed{eta}"
            + ("; " + "; ".join(running) if running else ""))


def cmd_watch(args) -> int:
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        raise SystemExit("watch: give the command after --")
    start = time.time()
    state = {"done": 0, "total": 0, "last": 0.0}
    lock = threading.Lock()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)

    def emit():
        line = progress_line(state["done"], state["total"], start, running_reconstructions(start))
        print(line, flush=True)
        state["last"] = time.time()

    def pump():
        for line in proc.stdout:
            sys.stdout.write(line)
            m = STEPS.search(line)
            with lock:
                if m:
                    state["done"], state["total"] = int(m.group(1)), int(m.group(2))
                    emit()

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    while proc.poll() is None:
        time.sleep(1)
        with lock:
            if time.time() - state["last"] >= args.every and running_reconstructions(start):
                emit()
    t.join()
    return proc.returncode


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watch", help="run a command with an overall progress line")
    w.add_argument("--every", type=float, default=30, help="seconds between progress lines while a job runs")
    w.add_argument("command", nargs=argparse.REMAINDER)
    w.set_defaults(func=cmd_watch)
    sub.add_parser("show", help="report path, headline numbers, comparison with the reference").set_defaults(
        func=cmd_show)
    c = sub.add_parser("check", help="exit 1 when SIDE/MAD leave the reference tolerance")
    c.add_argument("--tolerance", type=float, default=TOLERANCE, help="relative (default %(default)s)")
    c.set_defaults(func=cmd_check)
    sub.add_parser("record", help="make the current results the reference").set_defaults(func=cmd_record)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
