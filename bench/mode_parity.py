"""Faithful vs fast mode on world v2, several seeds each (docs/speed.md "Accuracy parity").

For each family, the first N held-out images are inverted once (W, ground-truth masks), then the
method as published — the ladder's ``prior_predicted`` rung: the family's recipe, the ellipsoid prior
pre-fit, one stage of ``--stage-iters`` — runs once per (mode, seed), all N images as independent
models in one batch (``bench/ladder.py --batch``). ``--jobs`` runs go on at once (separate
processes sharing the device). A finished run is not run again, so a device call's limit only
costs the unfinished runs.

Writes ``OUT/mode_parity.json``: per family and pooled over the families, :func:`speed.mode_stats`
(each run's mean SIDE / MAD, the per-image fast − faithful difference over the seed means with its
standard error, the within-mode seed spread, and per run how many images ended worse than their
prior), and ``OUT/mode_parity.csv`` (one row per family, mode, seed and image). Run folders of other variants,
``OUT/<family>/<label>_seed<k>`` (e.g. ``fast_nobf16``: ``--modes fast --extra --no-bf16`` into an ``--out``
of their own, renamed), are compared with the faithful runs the same way (``variants``). SIDE in ×10⁻².

    python bench/mode_parity.py --families face2 car2 --n 8 --seeds 0 1 2 --jobs 6 \\
        --gan models/synthetic_v2_gan.pt --view-mvn V.pth --light-mvn L.pth --out OUT/parity --device cuda
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import logging
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNG = "prior_predicted"
log = logging.getLogger("gan2shape")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=["face2", "car2"])
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--modes", nargs="+", default=["faithful", "fast"], choices=["faithful", "fast"])
    p.add_argument("--test-root", type=Path, default=Path("data/synthetic_v2/test"))
    p.add_argument("--gan", type=Path, default=Path("models/synthetic_v2_gan.pt"))
    p.add_argument("--view-mvn", type=Path, required=True)
    p.add_argument("--light-mvn", type=Path, required=True)
    p.add_argument("--invert-steps", type=int, default=1000)
    p.add_argument("--stage-iters", default="100,100,100")
    p.add_argument("--prior-iters", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=1, help="runs at once (processes sharing the device)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--summarize-only", action="store_true", help="run nothing: summarise the finished runs")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="everything after --extra goes to every reconstruct (e.g. --np 4 at toy scale)")
    return p.parse_args(argv)


def run_dir(args, family: str, mode: str, seed: int) -> Path:
    return args.out / family / f"{mode}_seed{seed}"


def ladder_argv(args, family: str, mode: str, seed: int) -> list[str]:
    return ["--family", family, "--n", str(args.n), "--test-root", str(args.test_root), "--gan", str(args.gan),
            "--view-mvn", str(args.view_mvn), "--light-mvn", str(args.light_mvn),
            "--latents", str(args.out / family / "latents"), "--rungs", RUNG, "--batch",
            "--stage-iters", args.stage_iters, "--prior-iters", str(args.prior_iters), "--device", args.device,
            "--out", str(run_dir(args, family, mode, seed)), "--mode", mode, "--seed", str(seed), *args.extra]


def invert_all(args, ladder) -> None:
    """Each family's latents, once, shared by every run (so runs differ only in mode and seed)."""
    for fam in args.families:
        images = ladder.test_images(args.test_root, fam, args.n)
        ns = argparse.Namespace(latents=None, out=args.out / fam, gan=args.gan, invert_steps=args.invert_steps,
                                device=args.device, threads=None)
        ladder.latents(ns, images)


def run_all(args) -> None:
    todo = [(f, m, s) for f in args.families for m in args.modes for s in args.seeds
            if not (run_dir(args, f, m, s) / "ladder.json").is_file()]

    def one(task):
        fam, mode, seed = task
        d = run_dir(args, fam, mode, seed)
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(d / "stdout.log", "w") as logf:
            rc = subprocess.call([sys.executable, str(HERE / "ladder.py"), *ladder_argv(args, fam, mode, seed)],
                                 stdout=logf, stderr=subprocess.STDOUT)
        log.info("%s %s seed %d: exit %d after %.0f s", fam, mode, seed, rc, time.perf_counter() - t0)
        return rc

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        rcs = list(pool.map(one, todo))
    if any(rcs):
        log.warning("%d of %d runs failed (see their stdout.log)", sum(1 for r in rcs if r), len(rcs))


def variant_stats(args, family: str, runs: dict, start: dict | None, speed) -> dict:
    """Other run folders ``<label>_seed<k>`` of a family (e.g. ``fast_nobf16``, made with ``--out`` of
    their own and renamed), each compared with the faithful runs as ``mode_stats`` compares fast."""
    faithful = {k: v for k, v in runs.items() if k.startswith("faithful_seed")}
    labels = {}
    for d in sorted((args.out / family).glob("*_seed*")):
        label, _, seed = d.name.rpartition("_seed")
        if label in ("faithful", "fast") or not (d / "ladder.json").is_file():
            continue
        rs = [r for r in json.loads((d / "ladder.json").read_text())["runs"] if r["rung"] == RUNG]
        if len(rs) == args.n:
            labels.setdefault(label, {})[f"fast_seed{seed}"] = {"side": [r["final_side"] for r in rs],
                                                                "mad": [r["final_mad"] for r in rs]}
    out = {}
    for label, vruns in labels.items():
        try:
            out[label] = {"vs_faithful": speed.mode_stats({**faithful, **vruns}, start),
                          "runs": {k.replace("fast", label): v for k, v in vruns.items()}}
        except ValueError as e:
            out[label] = {"incomplete": str(e)}
    return out


def summarize(args, speed) -> dict:
    rows, per_family = [], {}
    for fam in args.families:
        runs, start = {}, None
        for mode in args.modes:
            for seed in args.seeds:
                f = run_dir(args, fam, mode, seed) / "ladder.json"
                if not f.is_file():
                    continue
                res = json.loads(f.read_text())
                rs = [r for r in res["runs"] if r["rung"] == RUNG]
                if len(rs) != args.n:
                    continue
                runs[f"{mode}_seed{seed}"] = {"side": [r["final_side"] for r in rs], "mad": [r["final_mad"] for r in rs]}
                # the start (prior pre-fit) depends on the seed's initialisation only slightly; keep seed 0's faithful
                if start is None or (mode, seed) == ("faithful", args.seeds[0]):
                    start = {"side": [r["start_side"] for r in rs], "mad": [r["start_mad"] for r in rs]}
                rows += [{"family": fam, "mode": mode, "seed": seed, **{k: r[k] for k in (
                    "image", "start_side", "final_side", "start_mad", "final_mad", "seconds")}} for r in rs]
        per_family[fam] = (runs, start)
    out = {"rung": RUNG, "stage_iters": args.stage_iters, "prior_iters": args.prior_iters, "n": args.n,
           "gan": str(args.gan), "device": args.device, "extra": args.extra, "side_unit": "x1e-2", "families": {}}
    complete = {}
    for fam, (runs, start) in per_family.items():
        try:
            out["families"][fam] = {"stats": speed.mode_stats(runs, start), "start": start, "runs": runs}
            complete[fam] = (runs, start)
        except (ValueError, TypeError) as e:
            out["families"][fam] = {"incomplete": str(e), "runs": runs}
        variants = variant_stats(args, fam, runs, start, speed)
        if variants:
            out["families"][fam]["variants"] = variants
    common = set.intersection(*(set(r) for r, _ in complete.values())) if complete else set()
    if len(complete) > 1:
        pooled = {k: {m: [v for f in complete for v in complete[f][0][k][m]] for m in ("side", "mad")}
                  for k in sorted(common)}
        pstart = {m: [v for f in complete for v in complete[f][1][m]] for m in ("side", "mad")}
        out["pooled"] = speed.mode_stats(pooled, pstart)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mode_parity.json").write_text(json.dumps(out, indent=1) + "\n")
    if rows:
        with open(args.out / "mode_parity.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not args.summarize_only:
        invert_all(args, _load("ladder"))
        run_all(args)
    out = summarize(args, _load("speed"))
    for fam, block in list(out["families"].items()) + [("pooled", {"stats": out.get("pooled")})]:
        st = block.get("stats")
        if not st:
            continue
        for metric in ("side", "mad"):
            s = st[metric]
            print(f"{fam:>7} {metric}: faithful {s['mode_means']['faithful']:.2f} fast {s['mode_means']['fast']:.2f} "
                  f"(fast − faithful {s['fast_minus_faithful']:+.2f} ± {s['standard_error']:.2f} per image, "
                  f"{s['run_level']['fast_minus_faithful']:+.2f} ± {s['run_level']['standard_error']:.2f} per run; "
                  f"{len(s['run_means'])} runs; seed sd per image "
                  f"{s['per_image_seed_sd']['faithful']:.2f} / {s['per_image_seed_sd']['fast']:.2f}); worse than start "
                  f"{s.get('worse_than_start')}")
    return out


if __name__ == "__main__":
    main()
