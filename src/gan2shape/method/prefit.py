"""The depth pre-fit: D is first fitted to a shape prior (METHOD §2.6; EXTENSIONS §1.7)."""

from __future__ import annotations

import math

import torch

from .optim import make_optimizer


def depth_prior_loss(model, images: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Per-image MSE between the un-clamped depth of ``images`` (K×3×S×S) and ``priors`` (K×S×S):
    a K vector."""
    depth = model.predict_depth(images, border=False)
    return (depth - priors).pow(2).flatten(1).mean(1)


def fit_depth_to_prior(model, images: torch.Tensor, priors: torch.Tensor, iters: int,
                       tol: float | None = None, batch_size: int | None = None,
                       optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Pre-fit D on a set of images at once (joint pre-training, the generalized trainer, the
    ``pretrain-depth`` stage); the instance trainer runs the same loss as its phase 0.

    MSE over all pixels, a fresh Adam on D only. ``images`` N×3×S×S and ``priors`` N×S×S; with
    ``batch_size`` an iteration is an epoch over mini-batches in fixed order. Stops early when
    ``tol`` is given and the epoch's MSE drops below it. Returns the final MSE and the number of
    iterations run.
    """
    opt = optimizer or make_optimizer(model.nets["netD"].parameters(), model.cfg)
    n = images.shape[0]
    bs = batch_size or n
    mse = float("nan")
    it = 0
    for it in range(1, iters + 1):
        total = 0.0
        for s in range(0, n, bs):
            loss = depth_prior_loss(model, images[s:s + bs], priors[s:s + bs]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * min(bs, n - s)
        mse = total / n
        if not math.isfinite(mse):
            raise FloatingPointError(f"depth pre-fit diverged (MSE {mse}) at iteration {it}")
        if tol is not None and mse < tol:
            break
    return {"prior_mse": mse, "prior_iters": it}
