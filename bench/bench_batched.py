"""Benchmark: one image's Trainer iterations vs K independent models in one batch (the same loop; K images' models in one
batch), per step, in one run. Prints ms per image-iteration and the speed-up; writes JSON to
$OUT/bench_batched.json when $OUT is set (the device tool's output folder), or to --json.

    python3 bench/bench_batched.py                       # GPU: 64 px, N_p 16, K 1 4 16 32
    python3 bench/bench_batched.py --fast                # also the TF32 + bf16 mode
    python3 bench/bench_batched.py --device cpu --tiny   # quick check on a CPU

Uses the committed synthetic GAN and view/light distributions, test images (and masks) of
data/synthetic/test/face, and the GAN's own random samples as latents (inversion is not the point).
Timing: warm-up iterations, then the median over timed iterations, CUDA-synchronised.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gan2shape.data import load_image, load_mask  # noqa: E402
from gan2shape.method.losses import PerceptualLoss  # noqa: E402
from gan2shape.method.sampling import ViewLightDistribution  # noqa: E402
from gan2shape.gan.stylegan2 import load_stylegan2  # noqa: E402
from gan2shape.method.config import preset  # noqa: E402
from gan2shape.method.model import GAN2Shape, Target  # noqa: E402
from gan2shape.method.trainer import Phase, Trainer  # noqa: E402

STEPS = (1, 2, 3)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn, device: str, n: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def build(args):
    ck = load_stylegan2(args.gan, device="cpu")
    cfg = preset("synface", image_size=args.image_size, n_p=args.np, crop=None, collect_iters=2,
                 use_mask=True, raster_bin_size=args.raster_bin_size,
                 raster_max_faces_per_bin=args.raster_max_faces_per_bin)
    perceptual = PerceptualLoss(args.perceptual, discriminator=ck.discriminator)
    vl = ViewLightDistribution.from_files(args.view_mvn, args.light_mvn)
    torch.manual_seed(0)
    return GAN2Shape(cfg, ck.generator, ck.discriminator, perceptual, vl).to(args.device)


def load_targets(model: GAN2Shape, args, k: int) -> list[Target]:
    """``k`` targets cycling over the first test images; latents are seeded GAN samples."""
    pngs = sorted(p for p in Path(args.images).glob("*.png") if p.stem.count("_") == 2)[:args.n_images]
    if not pngs:
        raise SystemExit(f"{args.images}: no test images")
    S, g = model.cfg.image_size, torch.Generator().manual_seed(0)
    out = []
    for i in range(k):
        p = pngs[i % len(pngs)]
        img, origin = load_image(p, S)
        z = torch.randn(1, model.G.style_dim, generator=g).to(args.device)
        with torch.no_grad():
            w = model.G.style(z)
        mask = load_mask(p.with_name(p.stem + "_mask.png"), S)
        out.append(Target(name=f"{p.stem}_{i}", image=img, latent=w, mask=mask, origin_size=origin).to(args.device))
    return out


def time_group(model: GAN2Shape, targets: list[Target], args, fast: bool = False) -> dict[int, float]:
    """Seconds per iteration of each step for a group: one image, or K independent models in one batch."""
    tr = Trainer(model, fast=fast)
    tr.reset()
    group = tr.group([replace(t) for t in targets], independent=len(targets) > 1)
    out = {}
    with tr.precision():
        for step in STEPS:
            opts = tr.optimizers(step, group, None)
            phase = Phase(0, 0, step, 1, flip=step == 3)
            out[step] = median_seconds(lambda: tr.iteration(phase, group, opts), args.device, args.iters, args.warmup)
            if step == 2:
                tr.collect(group)
    return out


def time_sequential(model: GAN2Shape, target: Target, args) -> dict[int, float]:
    """Seconds per iteration of each step for one image (the sequential cost per image)."""
    return time_group(model, [target], args)


def time_batched(model: GAN2Shape, targets: list[Target], args, fast: bool) -> dict[int, float]:
    """Seconds per iteration of each step for K images in one batch."""
    return time_group(model, targets, args, fast)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--k", type=int, nargs="+", default=[1, 4, 16, 32], help="images per batch")
    p.add_argument("--np", type=int, default=16, help="N_p: pseudo/projected samples per image and iteration")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--iters", type=int, default=10, help="timed iterations per step (median)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--fast", action="store_true", help="also time the TF32 + bf16 batched mode")
    p.add_argument("--tiny", action="store_true", help="quick check: 32 px, N_p 2, K 1 2, 1 timed iteration, no warm-up")
    p.add_argument("--perceptual", default="discriminator", choices=["discriminator", "none"])
    p.add_argument("--raster-bin-size", type=int, default=None, help="default: the method's (naive on CPU; overflow-safe binning on CUDA)")
    p.add_argument("--raster-max-faces-per-bin", type=int, default=None)
    p.add_argument("--gan", type=Path, default=ROOT / "models/synthetic_gan.pt")
    p.add_argument("--view-mvn", type=Path, default=ROOT / "models/synthetic_view_mvn.pth")
    p.add_argument("--light-mvn", type=Path, default=ROOT / "models/synthetic_light_mvn.pth")
    p.add_argument("--images", type=Path, default=ROOT / "data/synthetic/test/face")
    p.add_argument("--n-images", type=int, default=8, help="distinct test images (cycled to fill K)")
    p.add_argument("--json", type=Path, default=Path(os.environ["OUT"]) / "bench_batched.json" if "OUT" in os.environ
                   else None, help="write the results here (default: $OUT/bench_batched.json if $OUT is set)")
    args = p.parse_args()
    cuda = args.device.startswith("cuda")
    if args.tiny:
        args.image_size, args.np, args.k, args.iters, args.warmup = 32, 2, [1, 2], 1, 0
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # faithful fp32 baseline

    model = build(args)
    targets = load_targets(model, args, max(args.k))
    res: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
                 "image_size": args.image_size, "np": args.np, "iters": args.iters, "warmup": args.warmup,
                 "raster_bin_size": args.raster_bin_size, "perceptual": args.perceptual, "rows": []}
    seq = time_sequential(model, targets[0], args)
    res["rows"].append({"mode": "sequential", "k": 1, **{f"step{s}_ms": 1e3 * seq[s] for s in STEPS}})
    modes = ["batched"] + (["batched_fast"] if args.fast else [])
    for mode in modes:
        for k in args.k:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            t = time_batched(model, targets[:k], args, fast=mode == "batched_fast")
            row = {"mode": mode, "k": k, **{f"step{s}_ms": 1e3 * t[s] / k for s in STEPS}}
            if cuda:
                row["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
            res["rows"].append(row)

    # the table: ms per image-iteration, speed-up over sequential
    print(f"{res['device']}, {args.image_size} px, N_p {args.np}, median of {args.iters} "
          f"(warm-up {args.warmup}); ms per image-iteration (speed-up vs sequential)")
    print(f"{'mode':<14}{'K':>4}" + "".join(f"{'step' + str(s):>20}" for s in STEPS)
          + (f"{'peak GiB':>10}" if cuda else ""))
    for row in res["rows"]:
        cells = "".join(f"{row[f'step{s}_ms']:>11.2f} ({seq[s] * 1e3 / row[f'step{s}_ms']:>5.1f}x)" for s in STEPS)
        print(f"{row['mode']:<14}{row['k']:>4}{cells}" + (f"{row.get('peak_gib', 0):>10.2f}" if cuda else ""))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
