"""Profile of one training iteration of each step at celeba scale (issue 15, item 2): 128 px, a random
StyleGAN2 of config-e size (128 px, channel multiplier 1, 512-d styles), the discriminator perceptual
loss, N_p 16, fp32 eager, safe binned rasterisation. For each step: the median wall time of 5
iterations, then torch.profiler over one iteration — GPU time by kernel category, forward GPU time by
component (module scopes), kernel launches, and the top operators.

    python3 bench/profile_steps.py        # CUDA; text + JSON under $OUT when $OUT is set
                                          # (without CUDA: a 32-px dry run of the script)
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gan2shape.gan.stylegan2 import Discriminator, Generator
from gan2shape.method.losses import PerceptualLoss
from gan2shape.method.config import preset
from gan2shape.method.model import GAN2Shape, Target
from gan2shape.method.sampling import ViewLightDistribution
from gan2shape.method.trainer import Phase, Trainer

# kernel name → category (first match wins)
CATEGORIES = [
    ("rasterisation (pytorch3d)", r"Rasterize|TriangleBoundingBox"),
    ("grid_sample", r"grid_sampler"),
    ("conv / gemm", r"conv|gemm|cutlass|cudnn|sm90_|sm80_|implicit|dgrad|wgrad|xmma|Winograd|fft"),
    ("optimizer", r"multi_tensor|adam|Adam"),
    ("reductions", r"reduce|Reduce|norm|softmax|cumsum|scan"),
    ("index / scatter / gather", r"index|scatter|gather|Index"),
    ("elementwise / copy / other", r"."),
]


def build(device: str, dry: bool):
    """The celeba-scale model (``dry``: a 32-px toy for a CPU check) and one target image."""
    torch.manual_seed(0)
    size, width, cm = (32, 32, 1) if dry else (128, 512, 1)
    G = Generator(size, style_dim=width, n_mlp=8, channel_multiplier=cm, channel_max=width).eval()
    D = Discriminator(max(size, 64), channel_multiplier=cm, channel_max=width).eval()
    # raster_bin_size None: pytorch3d's bin heuristic, max_faces_per_bin = the fullest bin (counted)
    cfg = preset("celeba", image_size=size, collect_iters=2 if dry else 50, raster_bin_size=None,
                 raster_max_faces_per_bin=None)
    vl = ViewLightDistribution.from_files(ROOT / "models/synthetic_view_mvn.pth", ROOT / "models/synthetic_light_mvn.pth")
    model = GAN2Shape(cfg, G, D, PerceptualLoss("discriminator", discriminator=D), vl).to(device)
    with torch.no_grad():
        w = G.style(torch.randn(1, width, device=device))
    image = torch.rand(1, 3, size, size, device=device) * 2 - 1
    return model, Target(name="celeba_like", image=image, latent=w)


def scopes(model: GAN2Shape) -> list:
    """record_function ranges around the forwards of the components (GPU time of their kernels)."""
    mods = {"GAN synthesis (G)": model.G, "discriminator features (perceptual)": model.perceptual,
            "renderer": model.renderer}
    mods.update({f"net {k}": v for k, v in model.nets.items()})
    handles = []
    for name, m in mods.items():
        ctx = {}

        def pre(mod, args, name=name, ctx=ctx):
            ctx["r"] = record_function(f"fwd: {name}")
            ctx["r"].__enter__()

        def post(mod, args, out, ctx=ctx):
            ctx.pop("r").__exit__(None, None, None)
        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return handles


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def dev_time_us(e) -> float:
    return e.self_device_time_total


def main() -> None:
    dry = not torch.cuda.is_available()
    device = "cpu" if dry else "cuda"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # faithful fp32
    model, target = build(device, dry)
    tr = Trainer(model)
    tr.reset()
    group = tr.group([target])
    out_dir = Path(os.environ["OUT"]) if "OUT" in os.environ else None
    res, lines = {"device": "cpu (dry run)" if dry else torch.cuda.get_device_name(0), "torch": torch.__version__, "steps": {}}, []
    handles = scopes(model)
    for step in (1, 2, 3):
        opts = tr.optimizers(step, group, None)
        phase = Phase(0, 0, step, 1, flip=step == 3)

        def it(phase=phase, opts=opts):
            tr.iteration(phase, group, opts)
        ts = []
        for i in range(3 if dry else 7):
            sync(device)
            t0 = time.perf_counter()
            it()
            sync(device)
            ts.append(time.perf_counter() - t0)
        wall = 1e3 * statistics.median(ts[2:])
        acts = [ProfilerActivity.CPU] + ([] if dry else [ProfilerActivity.CUDA])
        with profile(activities=acts) as prof:
            it()
            sync(device)
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                   and not e.name.startswith("fwd: ")]  # (GPU-side copies of the scopes)
        gpu_ms = max(sum(dev_time_us(e) for e in kernels) / 1e3, 1e-9)
        cats = defaultdict(float)
        for e in kernels:
            for cat, pat in CATEGORIES:
                if re.search(pat, e.name):
                    cats[cat] += dev_time_us(e) / 1e3
                    break
        ka = prof.key_averages()
        comp = {e.key[5:]: (e.cpu_time_total if dry else e.device_time_total) for e in ka
                if e.key.startswith("fwd: ")}
        comp = {k: v / 1e3 for k, v in sorted(comp.items(), key=lambda kv: -kv[1])}
        sort = "self_cpu_time_total" if dry else "self_device_time_total"
        table = ka.table(sort_by=sort, row_limit=25, max_name_column_width=60)
        res["steps"][step] = {"wall_ms": wall, "gpu_ms": gpu_ms, "kernels": len(kernels),
                              "categories_ms": dict(cats), "forward_components_ms": comp}
        lines.append(f"=== step {step}: wall {wall:.1f} ms/iteration (median), GPU {gpu_ms:.1f} ms, "
                     f"{len(kernels)} kernels")
        lines += [f"  {k:<32}{v:8.2f} ms  {100 * v / gpu_ms:5.1f} %" for k, v in sorted(cats.items(), key=lambda kv: -kv[1])]
        lines.append("  forward GPU time by component (kernels launched inside the module's forward):")
        lines += [f"    {k:<40}{v:8.2f} ms" for k, v in comp.items()]
        lines.append(table)
        if step == 2:
            tr.collect(group)
    for h in handles:
        h.remove()
    text = "\n".join(lines)
    print(text)
    if out_dir is not None:
        (out_dir / "profile_steps.txt").write_text(text)
        (out_dir / "profile_steps.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
