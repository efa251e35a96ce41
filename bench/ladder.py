"""The diagnostic ladder: does step 3 hold a depth that starts at the truth? (docs/RESULTS.md
"Diagnostic ladder").

For the first N held-out images of a world-v2 family, six ``gan2shape reconstruct`` runs per image
(in this process, through ``gan2shape.cli.main``), one model per run:

| rung | start | projected samples | step 3 renders them in |
|---|---|---|---|
| ``truth_pseudo`` (a) | ground truth (``--init-truth``) | self-consistent oracle | the true views and lights (``--step3-viewlight pseudo``) |
| ``truth_predicted`` (b) | ground truth | oracle | V(Q), L(Q) of the untrained V, L (the method) |
| ``truth_warmup`` (c) | ground truth | oracle | V(Q), L(Q) after ``--vl-warmup`` V/L-only iterations |
| ``prior_pseudo`` | prior pre-fit | the GAN's | the pseudo samples' views and lights |
| ``prior_predicted`` | prior pre-fit | the GAN's | V(Q), L(Q) (the method) |
| ``prior_warmup`` | prior pre-fit | the GAN's | V(Q), L(Q) after the warm-up |
| ``joint_shared`` | all five nets of a joint pre-train (``--pretrain``) | the GAN's | V(Q), L(Q); ``--group`` images share one model (the original synface protocol) |
| ``joint_independent`` | the joint pre-train | the GAN's | V(Q), L(Q); one model per image |

Inputs: the test set's image, ground-truth mask (the prior and, for car2, the method's mask), depth
and scene record; the latents are inverted here (``gan2shape invert`` into W with the masks,
``--invert-steps``) unless ``--latents DIR`` holds ``<name>.pt``. The GAN and the view / light MVNs
are explicit flags (world v2's GAN may not exist yet: world v1's ``models/synthetic_gan.pt``
smoke-tests the runner). Recipe: the family's preset (face2: synface, car2: car) at the test
set's size, one stage of ``--stage-iters``; any further flag goes to every ``reconstruct``.

Per run: **start** = SIDE / MAD of the last step-1 forward before the first step-3 iteration (steps 1
and 2 leave D and V alone, so this is the depth after the truth fit or the prior pre-fit, in the
predicted view), **final** = after the schedule, **drift** = final − start. Writes
``OUT/ladder.json`` (per rung mean ± std over the images, and every run) and ``OUT/ladder.csv``
(one row per run); SIDE in ×10⁻². A run whose ``metrics.json`` exists is not run again (a
device-call limit can stop the ladder; run it again to continue); ``--summarize-only`` summarises the
finished runs and lists the others under ``not_run``. ``--batch`` trains a prior rung's images as
independent models in one batch (``reconstruct --independent``; equal to image-by-image runs up to
floating-point rounding); ``joint_independent`` always does. A ``joint_shared`` group logs its
means, so its images' start is the group's mean (their final values are their own).
``--baselines results/synthetic_v2/baselines_<family>.csv`` adds, per rung, the baselines of that
file (constant, average, each prior alone) on the rung's own images, and the rung's final SIDE over the
constant's and each prior's (``ladder.json``'s ``baselines``).

    python bench/ladder.py --family face2 --n 8 --gan G.pt --view-mvn V.pth --light-mvn L.pth \\
        --out bench_out/ladder --device cuda
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import sys
from pathlib import Path

log = logging.getLogger("gan2shape")

# rung: (start, projection, flags); "{warmup}" is --vl-warmup
RUNGS = {
    "truth_pseudo": ("truth", "oracle", ["--step3-viewlight", "pseudo"]),
    "truth_predicted": ("truth", "oracle", []),
    "truth_warmup": ("truth", "oracle", ["--vl-warmup", "{warmup}"]),
    "prior_pseudo": ("prior", "gan", ["--step3-viewlight", "pseudo"]),
    "prior_predicted": ("prior", "gan", []),
    "prior_warmup": ("prior", "gan", ["--vl-warmup", "{warmup}"]),
    "joint_shared": ("joint", "gan", []),
    "joint_independent": ("joint", "gan", []),
}
DEFAULT_RUNGS = [r for r, (start, _, _) in RUNGS.items() if start != "joint"]
PRESETS = {"face2": "synface", "car2": "car"}   # the families' recipes (docs/world.md)
# Pass criterion: rung (a) holds the depth within +0.3 SIDE ×10⁻² of its start after 100 step-3 iterations.
CRITERION = {"rung": "truth_pseudo", "max_drift_side_x100": 0.3, "step3_iterations": 100}
METRICS = ("start_side", "final_side", "drift_side", "start_mad", "final_mad", "drift_mad")


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Unknown flags are passed to every `gan2shape reconstruct`.")
    p.add_argument("--family", required=True, choices=sorted(PRESETS))
    p.add_argument("--n", type=int, default=8, help="first N images of the family's list.txt")
    p.add_argument("--test-root", type=Path, default=Path("data/synthetic_v2/test"))
    p.add_argument("--gan", required=True, type=Path)
    p.add_argument("--view-mvn", required=True, type=Path)
    p.add_argument("--light-mvn", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--latents", type=Path, help="folder with <name>.pt W latents (default: invert here)")
    p.add_argument("--invert-steps", type=int, default=1000)
    p.add_argument("--rungs", nargs="+", choices=list(RUNGS), default=DEFAULT_RUNGS,
                   help="default: the truth and prior rungs (the joint ones need --pretrain)")
    p.add_argument("--preset", help="method preset (default: the family's recipe)")
    p.add_argument("--stage-iters", default="100,100,100", help="N1,N2,N3 of the one stage")
    p.add_argument("--prior-iters", type=int, help="prior pre-fit / truth fit iterations (default: preset)")
    p.add_argument("--vl-warmup", type=int, default=100, help="V/L warm-up of the *_warmup rungs")
    p.add_argument("--prior-name", default="ellipsoid", help="prior of the prior_* rungs (from the mask)")
    p.add_argument("--pretrain", type=Path, help="joint_* rungs: the joint pre-train (all five nets)")
    p.add_argument("--net-width", type=float, default=1.0,
                   help="joint_* rungs: the channel multiplier the pre-train was trained with (1: the original)")
    p.add_argument("--group", type=int, default=4, help="joint_shared: images per shared model (original: 4)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once, each in its own process (one GPU shared): joint_shared's groups, or the "
                        "images of an image-by-image rung")
    p.add_argument("--summarize-only", action="store_true",
                   help="run nothing: summarise the runs of --out that finished (e.g. after a device call's limit)")
    p.add_argument("--batch", action="store_true",
                   help="prior_* rungs: train the rung's unfinished images as independent models in one "
                        "`reconstruct --independent` call (one batch; truth rungs always run image by image)")
    p.add_argument("--baselines", type=Path,
                   help="a baselines_<family>.csv of `gan2shape world-report`: its rows on each rung's images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="CPU threads (gan2shape --threads)")
    return p.parse_known_args(argv)


def test_images(root: Path, family: str, n: int) -> list[dict]:
    """The first ``n`` images of ``root/family/list.txt`` with their files and size."""
    folder = root / family
    listing = folder / "list.txt"
    if not listing.is_file():
        raise SystemExit(f"{listing}: not found (make the test set with `gan2shape synthesize`)")
    names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()][:n]
    if len(names) < n:
        raise SystemExit(f"{listing}: {len(names)} images, fewer than --n {n}")
    out = []
    for name in names:
        record = json.loads((folder / f"{name}.json").read_text())
        out.append({"name": name, "size": record["size"], "scene": folder / f"{name}.json",
                    **{k: folder / f for k, f in record["files"].items()}})
    return out


def _cli(args: argparse.Namespace, argv: list[str]) -> None:
    from gan2shape.cli import main

    threads = ["--threads", str(args.threads)] if args.threads else []
    rc = main(threads + argv)
    if rc != 0:
        raise SystemExit(f"gan2shape {argv[0]} exited with status {rc}")


def _cli_parallel(args: argparse.Namespace, calls: dict[Path, list[str]]) -> None:
    """The calls (log file -> argv), ``--jobs`` at a time, each in its own ``python -m gan2shape``
    process writing to its log; every call runs, then the failures are raised together."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    threads = ["--threads", str(args.threads)] if args.threads else []

    def one(item: tuple[Path, list[str]]) -> int:
        logfile, argv = item
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(logfile, "w") as f:
            return subprocess.run([sys.executable, "-m", "gan2shape", *threads, *argv], stdout=f,
                                  stderr=subprocess.STDOUT).returncode

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        codes = list(pool.map(one, calls.items()))
    failed = [f"{logfile} (exit status {c})" for logfile, c in zip(calls, codes) if c != 0]
    if failed:
        raise SystemExit("gan2shape failed, see: " + ", ".join(failed))


def latents(args: argparse.Namespace, images: list[dict]) -> dict[str, Path]:
    """Each image's W latent: from ``--latents``, or inverted into ``OUT/latents`` (once)."""
    folder = args.latents or args.out / "latents"
    paths = {im["name"]: folder / f"{im['name']}.pt" for im in images}
    missing = [im for im in images if not paths[im["name"]].is_file()]
    if missing and args.latents:
        raise SystemExit(f"--latents {folder}: no latent for {[im['name'] for im in missing]}")
    if missing:
        _cli(args, ["invert", "--gan", str(args.gan), "--images", *[str(im["image"]) for im in missing],
                    "--masks", *[str(im["mask"]) for im in missing], "--out-dir", str(folder),
                    "--steps", str(args.invert_steps), "--image-size", str(missing[0]["size"]),
                    "--device", args.device])
    return paths


def reconstruct_argv(args: argparse.Namespace, rung: str, images: list[dict], latents: list[Path],
                     extra: list[str], shared: bool = False) -> list[str]:
    """One ``reconstruct`` of ``rung``: one image into runs/<rung>/<name>, or several as independent
    models in one batch (``--independent``), or with ``shared`` as one model for the group; either
    way each image into runs/<rung>/<name>."""
    start, projection, flags = RUNGS[rung]
    if len(images) > 1 and start == "truth":
        raise SystemExit(f"{rung}: the truth start fits one model to one image; run its images one by one")
    if len({im["size"] for im in images}) > 1:
        raise SystemExit(f"{rung}: one batch needs images of one size, got {sorted({im['size'] for im in images})}")

    def each(key):
        return [str(im[key]) for im in images]

    batch = len(images) > 1
    run = args.out / "runs" / rung / ("" if batch else images[0]["name"])
    ckpt = (f"{'group' if shared else 'batch'}_{images[0]['name']}_{len(images)}.ckpt" if batch
            else f"{images[0]['name']}.ckpt")
    argv = ["reconstruct", "--preset", args.preset or PRESETS[args.family], "--image-size", str(images[0]["size"]),
            "--crop", "0", "--image", *each("image"), "--latent", *map(str, latents), "--name", *each("name"),
            "--mask", *each("mask"), "--gt-depth", *each("depth"), "--gt-encoding", "synthetic",
            "--scene", *each("scene"), "--out", str(run), *(["--independent"] if batch and not shared else []),
            "--checkpoint", str(args.out / "checkpoints" / rung / ckpt),
            "--gan", str(args.gan), "--view-mvn", str(args.view_mvn), "--light-mvn", str(args.light_mvn),
            "--device", args.device, "--num-stages", "1", "--stage-iters", args.stage_iters,
            "--projection", projection]
    if args.prior_iters is not None:
        argv += ["--prior-iters", str(args.prior_iters)]
    if start == "truth":
        argv += ["--init-truth"]
    else:  # a joint start loads netD, so the prior is not pre-fitted (it is still recorded)
        argv += ["--prior-name", args.prior_name, "--category", "synthetic"]
        argv += ["--pretrain", str(args.pretrain), "--net-width", f"{args.net_width:g}"] if start == "joint" else []
    return argv + [f.format(warmup=args.vl_warmup) for f in flags] + extra


def start_metrics(run: Path) -> tuple[float, float]:
    """SIDE and MAD of the last logged step-1 forward before the first step-3 iteration."""
    entries = json.loads((run / "log.json").read_text())
    before = []
    for e in entries:
        if e["step"] == 3:
            break
        if e["step"] == 1 and "side" in e:
            before.append(e)
    if not before:
        raise SystemExit(f"{run}/log.json: no step-1 depth metrics before step 3 (needs N1 >= 1 and --gt-depth)")
    return before[-1]["side"], before[-1]["mad"]


def run_row(rung: str, image: dict, run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    side0, mad0 = start_metrics(run)
    row = {"rung": rung, "image": image["name"], "start_side": 100 * side0, "final_side": 100 * m["final_side"],
           "start_mad": mad0, "final_mad": m["final_mad"], "iterations": m["iterations"], "seconds": m["seconds"]}
    row["drift_side"] = row["final_side"] - row["start_side"]
    row["drift_mad"] = row["final_mad"] - row["start_mad"]
    return row


def summarize(rows: list[dict]) -> dict:
    """Per rung: the number of images and mean / population std of every metric."""
    out = {}
    for rung in dict.fromkeys(r["rung"] for r in rows):
        rs = [r for r in rows if r["rung"] == rung]
        out[rung] = {"n": len(rs), **{f"{k}_{s}": f([r[k] for r in rs]) for k in METRICS
                                      for s, f in (("mean", statistics.fmean), ("std", statistics.pstdev))}}
    return out


def baseline_rows(path: Path, family: str) -> dict[str, dict[str, tuple[float, float]]]:
    """``{method: {image: (SIDE ×10⁻², MAD)}}`` of a ``baselines_<family>.csv`` (its "ok" rows)."""
    if not path.is_file():
        raise SystemExit(f"--baselines {path}: not found (written by `gan2shape world-report`)")
    out: dict[str, dict[str, tuple[float, float]]] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r.get("family") == family and r.get("status", "ok") == "ok":
                out.setdefault(r["method"], {})[r["image"]] = (float(r["side"]), float(r["mad"]))
    if not out:
        raise SystemExit(f"--baselines {path}: no rows of family {family}")
    return out


def compare_baselines(rows: list[dict], base: dict[str, dict[str, tuple[float, float]]]) -> dict:
    """Per rung: each baseline's mean ± std on the rung's images (all of them must be in the file), and
    the rung's mean final SIDE over each baseline's mean SIDE (``side_ratio``)."""
    out = {}
    for rung in dict.fromkeys(r["rung"] for r in rows):
        rs = [r for r in rows if r["rung"] == rung]
        names = [r["image"] for r in rs]
        final = statistics.fmean(r["final_side"] for r in rs)
        out[rung] = {}
        for method, per_image in base.items():
            missing = [n for n in names if n not in per_image]
            if missing:
                raise SystemExit(f"--baselines: method {method} has no row for {missing}")
            side = [per_image[n][0] for n in names]
            mad = [per_image[n][1] for n in names]
            out[rung][method] = {"n": len(names), "side_mean": statistics.fmean(side), "side_std": statistics.pstdev(side),
                                 "mad_mean": statistics.fmean(mad), "mad_std": statistics.pstdev(mad),
                                 "side_ratio": final / statistics.fmean(side),
                                 "images_better": sum(r["final_side"] < per_image[r["image"]][0] for r in rs)}
    return out


def criterion(summary: dict, n3: int) -> dict:
    """The pass criterion on rung (a), when it ran (``passed`` only at the criterion's step-3 length)."""
    c = dict(CRITERION)
    s = summary.get(c["rung"])
    if s is not None:
        c["drift_side_x100"] = s["drift_side_mean"]
        c["passed"] = s["drift_side_mean"] <= c["max_drift_side_x100"] if n3 == c["step3_iterations"] else None
    return c


def main(argv=None) -> dict:
    args, extra = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    joint = [r for r in args.rungs if RUNGS[r][0] == "joint"]
    if joint and not args.summarize_only and (args.pretrain is None or not args.pretrain.is_file()):
        raise SystemExit(f"rungs {joint} need --pretrain (a joint pre-train file), got {args.pretrain}")
    if args.group < 1 or args.jobs < 1:
        raise SystemExit(f"--group and --jobs must be >= 1, got {args.group} and {args.jobs}")
    images = test_images(args.test_root, args.family, args.n)
    lat = None if args.summarize_only else latents(args, images)
    rows, missing = [], []
    for rung in args.rungs:
        todo = [im for im in images if not (args.out / "runs" / rung / im["name"] / "metrics.json").is_file()]
        if args.summarize_only:
            missing += [f"{rung}/{im['name']}" for im in todo]
        elif rung == "joint_shared":  # groups of the first N images, as they come (a group reruns whole)
            groups = [images[i:i + args.group] for i in range(0, len(images), args.group)]
            calls = {args.out / "logs" / f"{rung}_{grp[0]['name']}.log":
                     reconstruct_argv(args, rung, grp, [lat[im["name"]] for im in grp], extra, shared=len(grp) > 1)
                     for grp in groups if any(im in todo for im in grp)}
            log.info("ladder: %s, %d groups of <= %d images sharing one model, %d at a time", rung, len(calls),
                     args.group, args.jobs)
            if args.jobs > 1 and len(calls) > 1:
                _cli_parallel(args, calls)
            else:
                for argv in calls.values():
                    _cli(args, argv)
        elif (args.batch and RUNGS[rung][0] == "prior" or rung == "joint_independent") and len(todo) > 1:
            log.info("ladder: %s, %d images in one batch", rung, len(todo))
            _cli(args, reconstruct_argv(args, rung, todo, [lat[im["name"]] for im in todo], extra))
        elif args.jobs > 1 and len(todo) > 1:  # image by image, --jobs processes at a time
            log.info("ladder: %s, %d images, %d at a time", rung, len(todo), args.jobs)
            _cli_parallel(args, {args.out / "logs" / f"{rung}_{im['name']}.log":
                                 reconstruct_argv(args, rung, [im], [lat[im["name"]]], extra) for im in todo})
        else:
            for im in todo:
                log.info("ladder: %s %s", rung, im["name"])
                _cli(args, reconstruct_argv(args, rung, [im], [lat[im["name"]]], extra))
        for im in images:
            run = args.out / "runs" / rung / im["name"]
            if (run / "metrics.json").is_file():
                rows.append(run_row(rung, im, run))
    if not rows:
        raise SystemExit(f"{args.out}/runs: no finished run to summarise")
    summary = summarize(rows)
    n3 = int(args.stage_iters.split(",")[2])
    result = {"family": args.family, "images": [im["name"] for im in images], "gan": str(args.gan),
              "stage_iters": args.stage_iters, "vl_warmup": args.vl_warmup, "device": args.device,
              "reconstruct_extra": extra, "side_unit": "x1e-2", "criterion": criterion(summary, n3),
              "rungs": summary, "runs": rows, "not_run": missing}
    if args.baselines:
        result["baselines"] = compare_baselines(rows, baseline_rows(args.baselines, args.family))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ladder.json").write_text(json.dumps(result, indent=1) + "\n")
    with open(args.out / "ladder.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"{'rung':<16} {'n':>2}  {'start SIDE':>13} {'final SIDE':>13} {'drift':>13}  "
          f"{'start MAD':>12} {'final MAD':>12} {'drift':>12}")
    for rung, s in summary.items():
        cells = "  ".join(f"{s[k + '_mean']:6.2f} ± {s[k + '_std']:4.2f}" for k in METRICS)
        print(f"{rung:<16} {s['n']:>2}  {cells}")
    for rung, methods in result.get("baselines", {}).items():
        print(f"{rung}: final SIDE over " + ", ".join(f"{m} {b['side_mean']:.2f} = {b['side_ratio']:.2f} "
                                                       f"({b['images_better']}/{b['n']} images better)"
                                                       for m, b in methods.items()))
    return result


if __name__ == "__main__":
    main()
