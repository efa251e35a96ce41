"""Device smoke benchmark: how fast are the synthetic renderer, GAN training, GAN2Shape steps and
inversion on this GPU? Prints a table; writes JSON to $OUT (or ./bench_out).

    source .devcarry/activate.sh && python3 bench/device_smoke.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))


def timed(fn, n: int, warmup: int = 2) -> float:
    """Median seconds per call (CUDA-synchronised)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    out_dir = os.environ.get("OUT", "bench_out")
    os.makedirs(out_dir, exist_ok=True)
    dev = "cuda"
    res: dict = {"device": torch.cuda.get_device_name(0)}

    # 1. synthetic renders for GAN training
    from gan2shape.world import render_batch, stream_params
    for raster in ("native", "tiled"):
        for ss in (4, 2):
            params = stream_params(("face", "box"), 32, seed=0, start=0)
            try:
                t = timed(lambda: render_batch(params, 64, dev, supersample=ss, raster=raster), 5)
                res[f"render32_{raster}_ss{ss}_s"] = t
            except Exception as e:  # noqa: BLE001
                res[f"render32_{raster}_ss{ss}_s"] = f"error: {e}"
    print({k: v for k, v in res.items() if k.startswith("render")}, flush=True)

    # 2. GAN training step
    from gan2shape.gan.train_gan import GANConfig, GANTrainer
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    tr = GANTrainer(GANConfig(), dev)
    real = torch.rand(32, 3, 64, 64, device=dev) * 2 - 1
    res["gan_step_s"] = timed(lambda: tr.train_step(real), 20, warmup=5)
    print("gan step", res["gan_step_s"], flush=True)

    # 3. GAN2Shape iterations with a random GAN of the committed architecture
    from gan2shape.method.losses import PerceptualLoss
    from gan2shape.method.priors import make_prior
    from gan2shape.method.sampling import ViewLightDistribution
    from gan2shape.method.config import Stage, preset
    from gan2shape.method.model import GAN2Shape, Target
    from gan2shape.method.trainer import Trainer
    from gan2shape.utils import resize
    g, d = tr.g_ema, tr.d.eval()
    vl = ViewLightDistribution.from_moments(torch.zeros(6), torch.eye(6) * 0.03, torch.zeros(4), torch.eye(4) * 0.03)
    img = resize(render_batch(stream_params(("face",), 1, 0, 0), 64, dev)["image"], 64)
    mask = (img.mean(1, keepdim=True) > -2).float()
    for bins in (0, 16):
        cfg = preset("synface", image_size=64, crop=None, schedule=[Stage(10, 10, 10, flip3=True)], collect_iters=5,
                     prior_iters=10, raster_bin_size=bins, raster_max_faces_per_bin=2000 if bins else None)
        m = GAN2Shape(cfg, g, d, PerceptualLoss("discriminator", discriminator=d), vl).to(dev)
        t = Target("x", img, torch.zeros(1, 128, device=dev), mask=mask, prior=make_prior("ellipsoid", mask=mask))
        trn = Trainer(m, log_every=1000)
        times: dict = {}
        orig = trn._iteration

        def it(phase, *a, **k):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            r = orig(phase, *a, **k)
            torch.cuda.synchronize()
            times.setdefault(phase.step, []).append(time.perf_counter() - t0)
            return r
        trn._iteration = it
        trn.fit(t)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        trn.fit(t)
        res[f"g2s_fit_bins{bins}_s"] = time.perf_counter() - t0
        res[f"g2s_step_median_bins{bins}"] = {k: statistics.median(v[len(v) // 2:]) for k, v in times.items()}
        print("g2s", bins, res[f"g2s_step_median_bins{bins}"], flush=True)

    # 4. inversion
    from gan2shape.gan.invert import InversionConfig, invert
    targets = render_batch(stream_params(("face", "box"), 64, 5, 0), 64, dev)["image"]
    t0 = time.perf_counter()
    invert(g, targets, InversionConfig(steps=50, n_mean_samples=1024))
    torch.cuda.synchronize()
    res["invert64_50steps_s"] = time.perf_counter() - t0
    print("invert", res["invert64_50steps_s"], flush=True)

    with open(os.path.join(out_dir, "device_smoke.json"), "w") as f:
        json.dump(res, f, indent=2, default=str)
    for k, v in res.items():
        print(f"{k:32s} {v}")


if __name__ == "__main__":
    main()
