"""Speed benchmark (issue 15 item 4): the WHOLE per-image schedule (depth pre-fit, every stage's steps
1-3, pool collection, final prediction) for N images at three scales, faithful vs fast, in one run;
plus an accuracy-parity check of the fast mode on synthetic test images.

Scales (random GANs are seeded; speed does not depend on trained weights):

* ``synthetic``: 64 px, the committed synthetic GAN (models/synthetic_gan.pt), synface-like preset
  (N_p 16, masks), test images of data/synthetic/test/face;
* ``celeba``: 128 px, a random StyleGAN2 of config-e size (128 px, 512-d styles, channel multiplier 1),
  the celeba preset (N_p 16, relative encoder), the GAN's own samples as targets;
* ``car``: 128 px from a random 512-px config-f StyleGAN2 (channel multiplier 2), the car preset (N_p 8,
  masks), the GAN's own samples resized to 128 px.

Modes: ``faithful`` = what a faithful pipeline job does, one image per fit, exact fp32, on one GPU;
``fast`` = ``Trainer(fast=True)``, K images as independent models in one batch (``--k``), images
sharded over ``--gpus`` devices, one process per device.

``--schedule-scale f`` runs every phase with round(f·n) iterations (≥ 1; also the pre-fit and the
collection) and extrapolates to the original schedule *per phase*: each phase's measured time (one
host timestamp at every phase end; the pool collection counts with the step-3 phase it precedes) is
multiplied by n_full/n_run, the rest (set-up, G(w), final prediction) is added once. The JSON keeps
the measured seconds next to the extrapolation. TFLOP/s: ``torch.utils.flop_counter.FlopCounterMode``
over one iteration of every (step, flip) of the schedule and one collection forward (GAN, networks,
losses; pytorch3d rasterisation is not counted), times the iterations run, over the measured time. Order: synthetic speed, parity, celeba, car (``--budget-s`` skips what would
start late).

    python3 bench/speed.py --device cpu --tiny          # self-check on a CPU (two simulated devices)
    python3 bench/speed.py --schedule-scale 0.05        # on the GPU(s); writes $OUT/bench.json if $OUT is set

Output: ``--out`` (default ``$OUT/bench.json``, else results/speed/bench.json) with
``{scale: {mode: {s_per_image, images_per_hour, peak_gib, tflops, ...}}, "parity": {...}, "meta": {...}}``,
rewritten after every measurement (a run cut short keeps what it finished), and a Markdown table next to it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gan2shape.data import load_depth, load_image, load_mask  # noqa: E402
from gan2shape.gan.stylegan2 import Discriminator, Generator, load_stylegan2  # noqa: E402
from gan2shape.method.config import Stage, preset  # noqa: E402
from gan2shape.method.losses import PerceptualLoss  # noqa: E402
from gan2shape.method.model import GAN2Shape, Target  # noqa: E402
from gan2shape.method.priors import make_prior  # noqa: E402
from gan2shape.method.sampling import ViewLightDistribution, postprocess_gan_image  # noqa: E402
from gan2shape.method.trainer import Phase, Trainer, phases_of  # noqa: E402
from gan2shape.sharding import shard  # noqa: E402

SCALES = ("synthetic", "celeba", "car")
MODES = ("faithful", "fast")
VIEW_MVN, LIGHT_MVN = ROOT / "models/synthetic_view_mvn.pth", ROOT / "models/synthetic_light_mvn.pth"


# ------------------------------------------------------------------------------------------------
# The three worlds
# ------------------------------------------------------------------------------------------------

def _disc(size: int, radius: float = 0.35) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = ((yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2).sqrt()
    return (r <= radius * size).float()[None, None]


def build_world(scale: str, device: str, tiny: bool, n_images: int, faithful_schedule: bool = False):
    """(model, targets, full config) of a scale; ``tiny``: a CPU-sized version of the same world.
    Everything is seeded, so every process builds the same world."""
    torch.manual_seed(0)
    if scale == "synthetic":
        ck = load_stylegan2(ROOT / "models/synthetic_gan.pt", device="cpu")
        G, D = ck.generator, ck.discriminator
        size = 32 if tiny else 64
        cfg = preset("synface", image_size=size, n_p=2 if tiny else 16, crop=None, use_mask=True)
        category = "synthetic"
    elif scale == "celeba":
        gsize, width = (32, 32) if tiny else (128, 512)
        G = Generator(gsize, style_dim=width, n_mlp=4 if tiny else 8, channel_multiplier=1, channel_max=width)
        D = Discriminator(max(gsize, 64), channel_multiplier=1, channel_max=width)
        size = 32 if tiny else 128
        cfg = preset("celeba", image_size=size, n_p=2 if tiny else 16)
        category = "face"
    elif scale == "car":
        gsize, width = (64, 32) if tiny else (512, 512)
        G = Generator(gsize, style_dim=width, n_mlp=4 if tiny else 8, channel_multiplier=2, channel_max=width)
        D = Discriminator(gsize, channel_multiplier=2, channel_max=width)
        size = 32 if tiny else 128
        cfg = preset("car", image_size=size, n_p=2 if tiny else 8)
        category = "car"
    else:
        raise ValueError(f"unknown scale {scale!r}")
    G.eval()
    D.eval()
    vl = ViewLightDistribution.from_files(VIEW_MVN, LIGHT_MVN)
    torch.manual_seed(1)
    model = GAN2Shape(cfg, G, D, PerceptualLoss("discriminator", discriminator=D), vl).to(device)
    targets = make_targets(model, scale, category, n_images)
    return model, targets, cfg


def make_targets(model: GAN2Shape, scale: str, category: str, n: int) -> list[Target]:
    """``n`` targets: synthetic test images with masks and seeded GAN latents (speed only needs the
    shapes), or the GAN's own samples (exact latents) with a disc mask; ellipsoid priors."""
    S, g = model.cfg.image_size, torch.Generator().manual_seed(0)
    dev = model.device
    pngs = sorted(p for p in (ROOT / "data/synthetic/test/face").glob("*.png") if p.stem.count("_") == 2)
    out = []
    for i in range(n):
        z = torch.randn(1, model.G.style_dim, generator=g).to(dev)
        with torch.no_grad():
            w = model.G.style(z)
            if scale == "synthetic":
                p = pngs[i % len(pngs)]
                img, origin = load_image(p, S)
                mask = load_mask(p.with_name(p.stem + "_mask.png"), S)
            else:
                raw, _ = model.G(w, input_is_w=True)
                img, origin = postprocess_gan_image(raw, S).cpu(), S
                mask = _disc(S)
        prior = make_prior("ellipsoid", mask=mask, category=category)
        out.append(Target(name=f"{scale}_{i:03d}", image=img, latent=w.cpu(), mask=mask, prior=prior,
                          origin_size=origin))
    return out


def scaled(cfg, f: float):
    """The configuration with every phase (and the pre-fit, the collection) at round(f·n) ≥ 1 iterations."""
    def sc(n):
        return 0 if n == 0 else max(1, round(n * f))
    sched = [replace(st, n1=sc(st.n1), n2=sc(st.n2), n3=sc(st.n3)) for st in cfg.schedule]
    return replace(cfg, schedule=sched, prior_iters=sc(cfg.prior_iters), collect_iters=sc(cfg.collect_iters))


def minimal(cfg):
    """One iteration of every phase (the warm-up run)."""
    sched = [replace(st, n1=min(st.n1, 1), n2=min(st.n2, 1), n3=min(st.n3, 1)) for st in cfg.schedule[:1]]
    return replace(cfg, schedule=sched, prior_iters=min(cfg.prior_iters, 1), collect_iters=1)


# ------------------------------------------------------------------------------------------------
# Timing one fit
# ------------------------------------------------------------------------------------------------

def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def timed_fit(model: GAN2Shape, init: dict, targets: list[Target], cfg, fast: bool,
              independent: bool | None = None) -> dict:
    """One fit of ``targets`` with ``cfg`` (``independent``: K independent models, default for the
    fast mode; else one model shared by the targets, i.e. one image for the faithful speed rows):
    total seconds, per-phase seconds (host timestamps at phase ends), the result."""
    model.cfg = cfg
    stamps: dict[int, float] = {}
    tr = Trainer(model, log_every=10 ** 9, fast=fast,
                 on_log=lambda e: stamps.setdefault(e["iteration"], time.perf_counter()))
    tr.initial_state = init
    dev = str(model.device)
    sync(dev)
    t0 = time.perf_counter()
    res = tr.fit([replace(t, gan_image=None) for t in targets], independent=fast if independent is None else independent)
    sync(dev)
    total = time.perf_counter() - t0
    phases = phases_of(cfg.schedule, cfg.prior_iters)
    ends = [stamps[k] for k in sorted(stamps)]
    if len(ends) != len(phases):
        raise RuntimeError(f"{len(ends)} phase-end stamps for {len(phases)} phases")
    durations = [b - a for a, b in zip([t0] + ends[:-1], ends)]
    return {"seconds": total, "phases": phases, "durations": durations, "overhead": total - sum(durations),
            "result": res}


def extrapolate(run: dict, full_cfg) -> float:
    """Seconds of the original schedule: each phase's time × n_full / n_run, plus the fixed part."""
    full = phases_of(full_cfg.schedule, full_cfg.prior_iters)
    if [(p.stage, p.step) for p in full] != [(p.stage, p.step) for p in run["phases"]]:
        raise RuntimeError("the scaled schedule has other phases than the original")
    return run["overhead"] + sum(d * pf.n / pr.n for d, pf, pr in zip(run["durations"], full, run["phases"]))


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None) -> int:
    """FLOPs of ``aten.convolution_backward``: the input gradient and the weight gradient each cost what
    the forward convolution costs. torch's own formula (2.11) counts a grouped convolution's input
    gradient as if it were dense, i.e. ``groups`` times too much; the faithful modulated convolution is
    one group per sample and vmapped (stacked) networks are one group per model, so it overstated them
    (a 16-sample modulated 3×3 convolution: 329 instead of 39 GFLOP)."""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter():
    """A FlopCounterMode (matmuls and convolutions, forward and backward) with the grouped-convolution
    backward counted right (:func:`conv_backward_flops`)."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})


def count_flops(model: GAN2Shape, init: dict, targets: list[Target], cfg, fast: bool) -> dict:
    """FLOPs of one iteration of every (step, flip) in the schedule and of one collection forward,
    for this group (:func:`flop_counter`)."""

    model.cfg = replace(cfg, collect_iters=1)
    tr = Trainer(model, fast=fast)
    tr.initial_state = init
    tr.reset()
    group = tr.group([replace(t, gan_image=None) for t in targets], independent=fast)
    kinds = sorted({(p.step, p.flip) for p in phases_of(cfg.schedule, cfg.prior_iters)})
    out = {}
    with tr.precision():
        # steps in an order that gives each what it needs (step 1 -> canonical state -> step 2 -> pool)
        for step, flip in sorted(kinds, key=lambda sf: (sf[0] != 0, sf[0] == 3, sf)):
            if step == 3 and "collect" not in out:
                with flop_counter() as fc:
                    tr.collect(group)
                out["collect"] = fc.get_total_flops()
            opts = tr.optimizers(step, group, None)
            with flop_counter() as fc:
                tr.iteration(Phase(0, 0, step, 1, flip), group, opts)
            out[(step, flip)] = fc.get_total_flops()
    tr.reset()
    model.cfg = cfg
    return out


def per_image_flops(model: GAN2Shape, target: Target, cfg, fast: bool = False) -> float:
    """The FLOPs of one image's schedule ``cfg`` in the mode's formulation (``fast``: the efficient ops,
    which need no weight gradient of the frozen GAN's convolutions), counted at N_p = 1 and 2 and
    extrapolated to ``cfg.n_p``: every operation is either per target or batched over the N_p samples,
    so the count is affine in N_p (to 10^-4 of a sample's share; tests/test_bench_scripts.py checks it), and the small counts fit in
    a CPU's memory where N_p samples of a 512-px GAN's backward would not."""
    init = model.nets_state()
    f1, f2 = (schedule_flops(count_flops(model, init, [target], replace(cfg, n_p=n), fast=fast), replace(cfg, n_p=n))
              for n in (1, 2))
    model.cfg = cfg
    return f1 + (cfg.n_p - 1) * (f2 - f1)


def recount_flops(path: Path, schedule_scale: float, tiny: bool = False, only: Sequence[str] = SCALES,
                  modes: Sequence[str] = MODES) -> dict:
    """Recount the FLOPs of the rows of an existing ``bench.json`` with :func:`flop_counter` (on the CPU;
    no timing) and rewrite its TFLOP/s from the measured seconds it keeps. The count: one image's scaled
    schedule in the row's mode (:func:`per_image_flops`), times the row's images. The previous values stay as
    ``*_torch_counter``; a recounted row gets ``flops_recounted`` (the date). ``only``, ``modes``: the
    scales and modes to recount (the other rows are left as they are; on a 2-core CPU a 128-px scale
    takes about 40 minutes per mode)."""
    res = json.loads(path.read_text())
    scales = [s for s in only if isinstance(res.get(s), dict) and any("tflops" in r for r in res[s].values())]
    if not scales:
        raise SystemExit(f"{path}: no measured rows to recount")
    for scale in scales:
        model, targets, full = build_world(scale, "cpu", tiny, 1)
        cfg = scaled(full, schedule_scale)
        rows = {mode: row for mode, row in res[scale].items() if "tflops" in row and mode in modes}
        for mode, row in rows.items():
            if row["iterations_run"] != _schedule_dict(cfg):
                raise SystemExit(f"{path}: {scale}/{mode} ran {row['iterations_run']}, not the schedule of "
                                 f"--schedule-scale {schedule_scale} ({_schedule_dict(cfg)})")
        for mode, row in rows.items():
            per_image = per_image_flops(model, targets[0], cfg, fast=mode == "fast")
            seconds = row["s_per_image_measured"] * row["images"]
            row.setdefault("tflops_torch_counter", row["tflops"])
            row.setdefault("gflop_per_image_run_torch_counter", row["gflop_per_image_run"])
            row["gflop_per_image_run"] = per_image / 1e9
            row["tflops"] = per_image * row["images"] / seconds / 1e12
            row["flops_recounted"] = time.strftime("%Y-%m-%d")
    res["meta"]["flops_recount"] = (
        f"{time.strftime('%Y-%m-%d')}: TFLOP/s recounted on the CPU (bench/speed.py --recount-flops) with a "
        "grouped-convolution-correct backward formula, one image's FLOPs in the row's mode (at N_p 1 and 2, "
        "extrapolated) times the images, over the measured seconds; torch's own counter had counted a "
        "grouped convolution's input gradient groups times (*_torch_counter: the values before)")
    path.write_text(json.dumps(res, indent=1, default=str))
    path.with_suffix(".md").write_text(table(res) + "\n")
    return res


def schedule_flops(flops: dict, cfg) -> float:
    """FLOPs of a whole schedule for the group ``flops`` was counted on."""
    phases = phases_of(cfg.schedule, cfg.prior_iters)
    total = sum(p.n * flops[(p.step, p.flip)] for p in phases)
    return total + sum(cfg.collect_iters * flops.get("collect", 0) for p in phases if p.step == 2)


# ------------------------------------------------------------------------------------------------
# One scale, one mode
# ------------------------------------------------------------------------------------------------

def run_faithful(scale: str, args, device: str) -> dict:
    """Faithful: ``--faithful-images`` images one after the other, fp32, one device."""
    n = min(args.faithful_images, args.images)
    model, targets, full = build_world(scale, device, args.tiny, n)
    init = model.nets_state()
    cfg = scaled(full, args.schedule_scale)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    timed_fit(model, init, targets[:1], minimal(cfg), fast=False)        # warm-up
    _reset_peak(device)
    runs = [timed_fit(model, init, [t], cfg, fast=False) for t in targets]
    peak = _peak(device)
    flops = count_flops(model, init, targets[:1], cfg, fast=False)
    measured = sum(r["seconds"] for r in runs) / n
    full_s = sum(extrapolate(r, full) for r in runs) / n
    return _row(measured, full_s, peak, schedule_flops(flops, cfg) * n, sum(r["seconds"] for r in runs),
                images=n, devices=1, k=1, cfg=cfg, full=full, runs=runs,
                final=[m for r in runs for m in r["result"].metrics])


def fast_shard(scale: str, args, device: str, indices: list[int], barrier=None) -> dict:
    """Fast mode on one device: the images ``indices`` in groups of ≤ ``--k`` independent models."""
    model, targets, full = build_world(scale, device, args.tiny, max(indices) + 1)
    targets = [targets[i] for i in indices]
    init = model.nets_state()
    cfg = scaled(full, args.schedule_scale)
    groups = [targets[i:i + args.k] for i in range(0, len(targets), args.k)]
    timed_fit(model, init, groups[0], minimal(cfg), fast=True)           # warm-up (cuDNN autotuning)
    if barrier is not None:
        barrier.wait()
    _reset_peak(device)
    t0 = time.perf_counter()
    runs = [timed_fit(model, init, g, cfg, fast=True) for g in groups]
    wall = time.perf_counter() - t0
    peak = _peak(device)
    flops = sum(schedule_flops(count_flops(model, init, g, cfg, fast=True), cfg) for g in groups)
    return {"wall": wall, "measured": [r["seconds"] for r in runs],
            "extrapolated": [extrapolate(r, full) for r in runs], "sizes": [len(g) for g in groups],
            "peak": peak, "flops": flops, "cfg": cfg, "full": full,
            "phase_seconds": _phase_table(runs), "final": [m for r in runs for m in r["result"].metrics]}


def _shard_worker(rank, scale, args, devices, parts, barrier, queue):
    try:
        if devices[rank].startswith("cuda"):
            torch.cuda.set_device(devices[rank])
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // len(devices)))
        out = fast_shard(scale, args, devices[rank], parts[rank], barrier)
        out["result_cfg"] = None
        queue.put((rank, _portable(out), None))
    except BaseException:  # noqa: BLE001 - reported to the parent
        barrier.abort()
        queue.put((rank, None, traceback.format_exc()))


def run_fast(scale: str, args, devices: list[str]) -> dict:
    """Fast: all ``--images`` images sharded round-robin over ``devices``, one process per device
    (in-process for one device); images/hour from the slowest device's wall time."""
    parts = [p for p in shard(list(range(args.images)), len(devices)) if p]
    devices = devices[:len(parts)]
    if len(devices) == 1:
        outs = [_portable(fast_shard(scale, args, devices[0], parts[0]))]
    else:
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        barrier, queue = ctx.Barrier(len(devices)), ctx.Queue()
        procs = [ctx.Process(target=_shard_worker, args=(r, scale, args, devices, parts, barrier, queue))
                 for r in range(len(devices))]
        for p in procs:
            p.start()
        got = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        errors = [e for _, _, e in got if e]
        if errors:
            raise RuntimeError("a shard failed:\n" + errors[0])
        outs = [o for _, o, _ in sorted(got, key=lambda x: x[0])]
    n = args.images
    wall = max(o["wall"] for o in outs)
    # per device, its groups run one after the other; the devices run side by side
    full_wall = max(sum(o["extrapolated"]) for o in outs)
    row = _row(wall / n, full_wall / n, max(o["peak"] for o in outs if o["peak"] is not None)
               if any(o["peak"] is not None for o in outs) else None,
               sum(o["flops"] for o in outs), wall, images=n, devices=len(devices),
               k=max(max(o["sizes"]) for o in outs), cfg=outs[0]["cfg"], full=outs[0]["full"], runs=None,
               final=[m for o in outs for m in o["final"]])
    row["phase_seconds"] = outs[0]["phase_seconds"]
    row["per_device_wall_s"] = [o["wall"] for o in outs]
    return row


def _portable(out: dict) -> dict:
    """A shard's result without tensors or config objects (sent between processes)."""
    o = dict(out)
    o["cfg"] = _schedule_dict(out["cfg"])
    o["full"] = _schedule_dict(out["full"])
    o.pop("result_cfg", None)
    return o


def _schedule_dict(cfg) -> dict:
    if isinstance(cfg, dict):
        return cfg
    ph = phases_of(cfg.schedule, cfg.prior_iters)
    per_step = {s: sum(p.n for p in ph if p.step == s) for s in (0, 1, 2, 3)}
    return {"prefit": per_step[0], "step1": per_step[1], "step2": per_step[2], "step3": per_step[3],
            "collect": cfg.collect_iters * sum(1 for p in ph if p.step == 2),
            "total": sum(p.n for p in ph)}


def _phase_table(runs: list[dict]) -> dict:
    """Measured seconds per step kind, summed over the runs' phases (collection inside step 3)."""
    out: dict[str, float] = {}
    for r in runs:
        for p, d in zip(r["phases"], r["durations"]):
            key = "prefit" if p.step == 0 else f"step{p.step}"
            out[key] = out.get(key, 0.0) + d
        out["overhead"] = out.get("overhead", 0.0) + r["overhead"]
    return out


def _row(measured, full_s, peak, flops, seconds, *, images, devices, k, cfg, full, runs, final) -> dict:
    row = {
        "s_per_image": full_s,                          # extrapolated to the original schedule
        "images_per_hour": 3600.0 / full_s if full_s > 0 else None,
        "peak_gib": peak,
        "tflops": flops / seconds / 1e12 if seconds > 0 else None,
        "s_per_image_measured": measured,               # at the scaled schedule
        "images": images, "devices": devices, "k": k,
        "iterations_run": _schedule_dict(cfg), "iterations_full": _schedule_dict(full),
        "gflop_per_image_run": flops / images / 1e9,
        "final_side_mean": _mean([m.get("final_side") for m in final]),
        "final_mad_mean": _mean([m.get("final_mad") for m in final]),
    }
    if runs is not None:
        row["phase_seconds"] = _phase_table(runs)
    return row


def _mean(v):
    v = [x for x in v if x is not None and math.isfinite(x)]
    return statistics.fmean(v) if v else None


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: str):
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.startswith("cuda") else None


# ------------------------------------------------------------------------------------------------
# Accuracy parity
# ------------------------------------------------------------------------------------------------

def parity_targets(model: GAN2Shape, n: int, inv_steps: int) -> list[Target]:
    """The first n/2 synthetic test images of each family (face, box), with masks, ground-truth
    depth, ellipsoid priors and latents inverted in W (batched :func:`gan2shape.gan.invert.invert`)."""
    from gan2shape.gan.invert import InversionConfig, invert

    S = model.cfg.image_size
    per = {"face": (n + 1) // 2, "box": n // 2}
    files = []
    for fam, k in per.items():
        pngs = sorted(p for p in (ROOT / "data/synthetic/test" / fam).glob("*.png") if p.stem.count("_") == 2)
        files += pngs[:k]
    imgs, masks, gts = [], [], []
    for p in files:
        imgs.append(load_image(p, S)[0])
        masks.append(load_mask(p.with_name(p.stem + "_mask.png"), S))
        gts.append(load_depth(p.with_name(p.stem + "_depth.png"), S, encoding="synthetic"))
    images, mask = torch.cat(imgs), torch.cat(masks)
    inv = invert(model.G, images.to(model.device), InversionConfig(steps=inv_steps), masks=mask.to(model.device))
    out = []
    for i, p in enumerate(files):
        out.append(Target(name=p.stem, image=imgs[i], latent=inv.latents[i:i + 1].detach().cpu(), mask=masks[i],
                          gt_depth=gts[i], prior=make_prior("ellipsoid", mask=masks[i], category="synthetic"),
                          origin_size=S))
    return out


def run_parity(args, device: str) -> dict:
    """Faithful with ``--parity-seeds`` seeds and fast with one, K independent models on one device,
    the benchmark's synface-like schedule × ``--parity-schedule-scale``: per-image SIDE/MAD and spreads."""
    model, _, _ = build_world("synthetic", device, args.tiny, 0)
    full = replace(model.cfg, schedule=[Stage(500, 500, 200, flip3=True)], prior_iters=1000, collect_iters=100)
    cfg = scaled(full, args.parity_schedule_scale)
    targets = parity_targets(model, args.parity_images, args.parity_inversion_steps)
    init = model.nets_state()
    runs = {}
    for mode, seed in [("faithful", s) for s in range(args.parity_seeds)] + [("fast", 0)]:
        t0 = time.perf_counter()
        # both modes fit K independent models (one per image): the runs differ only in kernels and seed
        res = timed_fit(model, init, targets, replace(cfg, seed=seed), fast=mode == "fast", independent=True)["result"]
        runs[f"{mode}_seed{seed}"] = {
            "side": [m["final_side"] for m in res.metrics], "mad": [m["final_mad"] for m in res.metrics],
            "seconds": time.perf_counter() - t0}
    out = {"images": [t.name for t in targets], "schedule": _schedule_dict(cfg), "inversion_steps":
           args.parity_inversion_steps, "runs": runs}
    out.update(parity_stats(runs))
    return out


def parity_stats(runs: dict) -> dict:
    """Per metric (side, mad): the run means, the faithful seeds' spread and paired seed noise, and
    whether the fast run lies within them (``runs``: ``{"faithful_seed<k>" | "fast_seed0": {metric: [per image]}}``)."""
    out = {}
    ref = runs["faithful_seed0"]
    for metric in ("side", "mad"):
        means = {k: statistics.fmean(r[metric]) for k, r in runs.items()}
        seeds = [means[k] for k in runs if k.startswith("faithful")]
        per_image_seed = [statistics.fmean(abs(a - b) for a, b in zip(runs[k][metric], ref[metric]))
                          for k in runs if k.startswith("faithful") and k != "faithful_seed0"]
        per_image_fast = statistics.fmean(abs(a - b) for a, b in zip(runs["fast_seed0"][metric], ref[metric]))
        spread = max(seeds) - min(seeds)
        # paired seed noise: the spread of a mean over the n images when only the seed changes
        # (per-image differences seed k − seed 0); fast passes when its paired mean difference to
        # seed 0 is within two such standard errors
        diffs = [a - b for k in runs if k.startswith("faithful") and k != "faithful_seed0"
                 for a, b in zip(runs[k][metric], ref[metric])]
        fast_diff = statistics.fmean(a - b for a, b in zip(runs["fast_seed0"][metric], ref[metric]))
        noise = statistics.stdev(diffs) / math.sqrt(len(ref[metric])) if len(diffs) > 1 else None
        out[metric] = {
            "means": means,
            "faithful_seed_spread": spread,                                  # of the mean over images
            "fast_minus_faithful": means["fast_seed0"] - statistics.fmean(seeds),
            "per_image_abs_diff_faithful_seeds": statistics.fmean(per_image_seed) if per_image_seed else None,
            "per_image_abs_diff_fast_vs_seed0": per_image_fast,
            "fast_within_seed_spread": (min(seeds) - 1e-12 <= means["fast_seed0"] <= max(seeds) + 1e-12)
            if len(seeds) > 1 else None,
            "paired_fast_minus_seed0": fast_diff,
            "seed_noise_of_mean": noise,
            "fast_within_seed_noise": abs(fast_diff) <= 2 * noise if noise is not None else None,
        }
    return out


def mode_stats(runs: dict, start: dict | None = None) -> dict:
    """Faithful vs fast when both ran with several seeds (``runs``: ``{"<mode>_seed<k>": {metric: [per
    image]}}``, the same images in the same order). Per metric: each run's mean; per image the mean
    over a mode's seeds, their difference fast − faithful (d_i), its mean and standard error over
    the images (a paired test whose noise includes the seeds'), and whether |mean d| ≤ 2 SE; the
    mean within-mode seed standard deviation per image; and the same question with the run as the
    unit (``run_level``: Welch's difference of the modes' mean run means, its standard error from the
    run means' spread). The images of a batched run draw from generators with one seed, so their
    errors are correlated within a run and the per-image test's SE can be too small; the run-level
    test is the conservative one. With ``start`` (``{metric: [per image]}``, the depth before step
    3): per run, how many images ended worse than they started."""
    modes = {m: [k for k in runs if k.startswith(m + "_seed")] for m in ("faithful", "fast")}
    if any(len(v) < 2 for v in modes.values()):
        raise ValueError(f"mode_stats needs >= 2 seeds per mode, got {modes}")
    n = len(runs[modes["faithful"][0]]["side"])
    out = {"seeds": {m: len(v) for m, v in modes.items()}, "n_images": n}
    for metric in ("side", "mad"):
        per_mode = {m: [statistics.fmean(runs[k][metric][i] for k in ks) for i in range(n)] for m, ks in modes.items()}
        d = [b - a for a, b in zip(per_mode["faithful"], per_mode["fast"])]
        se = statistics.stdev(d) / math.sqrt(n) if n > 1 else None
        seed_sd = {m: statistics.fmean(statistics.stdev(runs[k][metric][i] for k in ks) for i in range(n))
                   for m, ks in modes.items()}
        run_means = {k: statistics.fmean(r[metric]) for k, r in runs.items()}
        by_mode = {m: [run_means[k] for k in ks] for m, ks in modes.items()}
        run_diff = statistics.fmean(by_mode["fast"]) - statistics.fmean(by_mode["faithful"])
        run_se = math.sqrt(sum(statistics.variance(v) / len(v) for v in by_mode.values()))
        out[metric] = {
            "run_means": run_means,
            "mode_means": {m: statistics.fmean(v) for m, v in per_mode.items()},
            "fast_minus_faithful": statistics.fmean(d),
            "standard_error": se,
            "modes_within_noise": abs(statistics.fmean(d)) <= 2 * se if se is not None else None,
            "per_image_seed_sd": seed_sd,
            "run_level": {"fast_minus_faithful": run_diff, "standard_error": run_se,
                          "within_noise": abs(run_diff) <= 2 * run_se},
        }
        if start is not None:
            out[metric]["worse_than_start"] = {k: sum(f > s0 for f, s0 in zip(r[metric], start[metric]))
                                               for k, r in runs.items()}
    return out


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------

def table(res: dict) -> str:
    lines = ["| scale | mode | devices | K | s / image (full schedule) | images / hour | peak GiB | TFLOP/s | "
             "s / image measured |", "|---|---|---|---|---|---|---|---|---|"]
    for scale in SCALES:
        for mode in MODES:
            r = res.get(scale, {}).get(mode)
            if not r:
                continue
            if "error" in r or "skipped" in r:
                why = f"error: {r['error'].splitlines()[-1][:80]}" if "error" in r else f"skipped: {r['skipped']}"
                lines.append(f"| {scale} | {mode} | – | – | {why} | | | | |")
                continue
            f = lambda v, p=1: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
            # after a recount, a row it left alone keeps torch's count (grouped convolutions overcounted)
            stale = "flops_recount" in res.get("meta", {}) and "flops_recounted" not in r
            lines.append(f"| {scale} | {mode} | {r['devices']} | {r['k']} | {f(r['s_per_image'])} | "
                         f"{f(r['images_per_hour'], 0)} | {f(r['peak_gib'], 2)} | "
                         f"{f(r['tflops'], 2)}{' (torch counter, too high)' if stale else ''} | "
                         f"{f(r['s_per_image_measured'], 2)} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--scales", nargs="+", default=list(SCALES), choices=SCALES)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--images", type=int, default=8, help="images of the fast mode per scale (amortised)")
    p.add_argument("--faithful-images", type=int, default=1,
                   help="images timed in the faithful mode (one after the other; its cost per image is constant)")
    p.add_argument("--k", type=int, default=8, help="fast mode: images per batch of independent models")
    p.add_argument("--gpus", type=int, default=None,
                   help="devices the fast mode shards images over, one process each (default: all visible GPUs; "
                        "on the CPU: simulated devices)")
    p.add_argument("--schedule-scale", type=float, default=0.05, help="fraction of every phase's iterations")
    p.add_argument("--parity-images", type=int, default=16, help="synthetic test images for the parity check (0: none)")
    p.add_argument("--parity-seeds", type=int, default=2, help="faithful seeds (the seed-to-seed spread)")
    p.add_argument("--parity-schedule-scale", type=float, default=0.1)
    p.add_argument("--parity-inversion-steps", type=int, default=200)
    p.add_argument("--parity-only", action="store_true", help="run only the accuracy-parity check (no timings)")
    p.add_argument("--recount-flops", type=Path, metavar="BENCH_JSON",
                   help="time nothing: recount the FLOPs of this bench.json's rows on the CPU (at --schedule-scale, "
                        "the one they ran) and rewrite their TFLOP/s from the seconds it keeps")
    p.add_argument("--budget-s", type=float, default=None,
                   help="skip measurements that would start after this many seconds (recorded as skipped)")
    p.add_argument("--tiny", action="store_true",
                   help="self-check: CPU-sized worlds, 2 images, 2 simulated devices, every phase 1-2 iterations")
    p.add_argument("--out", type=Path, default=(Path(os.environ["OUT"]) / "bench.json") if "OUT" in os.environ
                   else ROOT / "results/speed/bench.json")
    args = p.parse_args(argv)
    if args.recount_flops:
        return recount_flops(args.recount_flops, args.schedule_scale, args.tiny, args.scales, args.modes)
    if args.tiny:
        args.images, args.faithful_images, args.k = 2, 1, 2
        args.schedule_scale = args.parity_schedule_scale = 0.002
        args.parity_images, args.parity_inversion_steps = min(args.parity_images, 2), 2
        args.gpus = 2 if args.gpus is None else args.gpus
    if args.device == "cuda":
        n_vis = torch.cuda.device_count()
        devices = [f"cuda:{i}" for i in range(args.gpus or n_vis)]
        if len(devices) > n_vis:
            raise SystemExit(f"--gpus {args.gpus}: only {n_vis} visible")
    else:
        devices = ["cpu"] * (args.gpus or 1)
    main_dev = devices[0]
    start = time.perf_counter()
    res: dict = {"meta": {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "devices": devices, "torch": torch.__version__, "schedule_scale": args.schedule_scale,
        "extrapolation": "per phase: measured seconds x n_full / n_run (collection with its step-3 phase), "
                         "plus the measured set-up/prediction once",
        "faithful": "one image per fit, exact fp32, one device; fast: K independent models per batch, "
                    "bf16/TF32 kernels, images sharded over the devices",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}}

    def save():
        res["meta"]["elapsed_s"] = time.perf_counter() - start
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1, default=str))
        args.out.with_suffix(".md").write_text(table(res) + "\n")

    def over_budget() -> bool:
        return args.budget_s is not None and time.perf_counter() - start > args.budget_s

    def parity():
        if args.parity_images <= 0 or "parity" in res:
            return
        if over_budget():
            res["parity"] = {"skipped": "budget"}
            return
        t0 = time.perf_counter()
        try:
            res["parity"] = run_parity(args, main_dev)
        except Exception:  # noqa: BLE001
            res["parity"] = {"error": traceback.format_exc()}
            print(res["parity"]["error"], file=sys.stderr)
        res["parity"]["bench_seconds"] = time.perf_counter() - t0
        save()

    for scale in ([] if args.parity_only else args.scales):
        for mode in args.modes:
            if over_budget():
                res.setdefault(scale, {})[mode] = {"skipped": "budget"}
                continue
            t0 = time.perf_counter()
            try:
                row = run_faithful(scale, args, main_dev) if mode == "faithful" else run_fast(scale, args, devices)
            except Exception:  # noqa: BLE001 - one failing measurement must not lose the others
                row = {"error": traceback.format_exc()}
                print(row["error"], file=sys.stderr)
            row["bench_seconds"] = time.perf_counter() - t0
            res.setdefault(scale, {})[mode] = row
            save()
            print(f"{scale:>9} {mode:>8}: " + (f"{row['s_per_image']:.2f} s/image (full schedule), "
                                               f"{row['s_per_image_measured']:.2f} measured, "
                                               f"{row['bench_seconds']:.0f} s" if "error" not in row else "ERROR"),
                  flush=True)
        if scale == "synthetic":
            parity()   # right after the synthetic world's speed (the order a cut-short run keeps)
    parity()
    save()
    print(table(res))
    if "side" in res.get("parity", {}):
        print(json.dumps({m: res["parity"][m] for m in ("side", "mad")}, indent=1))
    return res


if __name__ == "__main__":
    main()
