"""Record the golden tiny runs (``python tests/golden/record.py``): fixed seeds, 32 px, one stage.

Runs (float64, so that re-ordered but equal arithmetic stays far below the 1e-6 tolerance). Each run
is short on purpose: Adam's first step after each optimiser re-creation is ≈ lr·g/(|g| + eps), which
multiplies a rounding difference in a near-zero gradient by up to lr/eps = 1e4, so a rounding
difference of 1e-16 (batched instead of one-by-one convolutions) grows ~100× per iteration; in float32,
or after ~15 iterations in float64, two equal computations no longer agree to 1e-6.
* ``k1``: one image, its own model;
* ``k3``: three images, independent models trained in one batch;
* ``shared2``: two images sharing one model (losses averaged);
* ``joint``: joint pre-training over three images;
* ``joint2``: joint pre-training over three images, two stages (the step-1 and step-2 collect passes
  twice, masks on); recorded in 2026-12 by ``fit_joint`` before it got P streams, so it pins P = 1;
* ``generalized``: the generalized trainer over three images (initialisation epoch + 2 epochs).
Each stores depth, recon_depth, albedo, view, light and the loss log. ``tests/test_golden.py``
compares the current code with the stored file. The first file was made on 2026-12-01 by the
code before the training-loop refactor (two trainer classes), and today's code matched it on that
machine (the last time on 2026-12-02, commit 1b571f6). Its targets were the GAN's samples made in
float32 and then cast: on another CPU (an AMD EPYC) those samples differ by ~1e-7, which the short runs
amplify to 1e-3, so no other machine could match it. On 2026-12-02 the file was re-recorded on that
AMD EPYC with the samples made in float64 (everything in a run is float64 now), by the same training
code (commit 1b571f6 plus changes that leave the default networks and loop untouched).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

GOLDEN = HERE / "golden_runs.npz"
CFG = dict(schedule=None, prior_iters=2, collect_iters=2, relative_enc=True, lam_perc=1.0)
KEYS = ("depth", "recon_depth", "albedo", "view", "light")


def f64(target):
    return replace(target, image=target.image.double(), latent=target.latent.double(), mask=target.mask.double(),
                   prior=target.prior.double(), gt_depth=target.prior.double().clone())


def world(seeds, **over):
    from conftest import tiny_config, tiny_model, tiny_target
    from gan2shape.method.config import Stage

    cfg = {**CFG, "schedule": [Stage(1, 2, 2, flip1=True, flip3=True)], **over}
    model = tiny_model(tiny_config(**cfg)).to(torch.float64)
    targets = [f64(tiny_target(model, f"im{s}", s)) for s in seeds]   # the GAN's samples made in float64
    return model, targets


def log_array(log) -> np.ndarray:
    """The numeric log entries as one flat float array (keys sorted within each entry)."""
    vals = []
    for e in log:
        for k in sorted(e):
            if isinstance(e[k], (int, float)) and not isinstance(e[k], bool):
                vals.append(float(e[k]))
    return np.asarray(vals, dtype=np.float64)


def runs() -> dict[str, np.ndarray]:
    """Every golden run through the current API; returns name -> array."""
    from gan2shape.method.config import GeneralizedConfig, Stage
    from gan2shape.method.generalized import fit_generalized
    from gan2shape.method.pretrain import fit_joint
    from gan2shape.method.trainer import Trainer

    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU reductions (and so the runs) depend on the thread count

    def keep(name, res):
        for k in KEYS:
            out[f"{name}/{k}"] = getattr(res, k).detach().double().numpy()
        out[f"{name}/log"] = log_array(res.log)

    model, ts = world([0])
    keep("k1", Trainer(model, log_every=1).fit(ts))
    model, ts = world([0, 1, 2])
    keep("k3", Trainer(model, log_every=1).fit(ts, independent=True))
    model, ts = world([3, 4])
    keep("shared2", Trainer(model, log_every=1).fit(ts))
    model, ts = world([0, 1, 2], use_mask=False, collect_iters=6)
    keep("joint", fit_joint(Trainer(model, log_every=1), ts))
    model, ts = world([0, 1, 2], collect_iters=6, schedule=[Stage(1, 2, 2), Stage(1, 1, 2, flip1=True, flip3=True)])
    keep("joint2", fit_joint(Trainer(model, log_every=1), ts))
    model, ts = world([0, 1, 2], schedule=[])
    gcfg = GeneralizedConfig(epochs=1, batch_size=2, stage=(1, 1, 1), init_epochs=0, prior_epochs=2, save_every=1)
    keep("generalized", fit_generalized(Trainer(model, log_every=1), ts, gcfg))
    torch.set_num_threads(threads)
    return out


if __name__ == "__main__":
    np.savez_compressed(GOLDEN, **runs())
    print(f"wrote {GOLDEN}")
