"""Pre-fits: D is first fitted to a shape prior (METHOD §2.6; EXTENSIONS §1.7); the same MSE fit
puts D or A on given maps (the diagnostic start from the ground truth)."""

from __future__ import annotations

import math

import torch

from .optim import make_optimizer


def depth_prior_loss(model, images: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Per-image MSE between the un-clamped depth of ``images`` (K×3×S×S) and ``priors`` (K×S×S):
    a K vector."""
    depth = model.predict_depth(images, border=False)
    return (depth - priors).pow(2).flatten(1).mean(1)


def albedo_map_loss(model, images: torch.Tensor, albedo: torch.Tensor) -> torch.Tensor:
    """Per-image MSE between A(``images``) and ``albedo`` (K×3×S×S in [-1, 1]): a K vector."""
    return (model.nets["netA"](images) - albedo).pow(2).flatten(1).mean(1)


# The map each pre-fittable net predicts: its per-image MSE to given maps.
MAP_LOSSES = {"netD": depth_prior_loss, "netA": albedo_map_loss}


def fit_net_to_maps(model, net: str, images: torch.Tensor, maps: torch.Tensor, iters: int,
                    tol: float | None = None, batch_size: int | None = None,
                    optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Fit ``net`` (netD: depth, netA: albedo; :data:`MAP_LOSSES`) so that its maps of ``images``
    (N×3×S×S) match ``maps`` (N×S×S depth / N×3×S×S albedo): MSE over all pixels, a fresh Adam on
    that net only. With ``batch_size`` an iteration is an epoch over mini-batches in fixed order.
    Stops early when ``tol`` is given and the epoch's MSE drops below it. Returns the final ``mse``
    and the number of ``iters`` run."""
    if net not in MAP_LOSSES:
        raise ValueError(f"no map fit for {net!r}; choose one of {sorted(MAP_LOSSES)}")
    loss_fn = MAP_LOSSES[net]
    opt = optimizer or make_optimizer(model.nets[net].parameters(), model.cfg)
    n = images.shape[0]
    bs = batch_size or n
    mse = float("nan")
    it = 0
    for it in range(1, iters + 1):
        total = 0.0
        for s in range(0, n, bs):
            loss = loss_fn(model, images[s:s + bs], maps[s:s + bs]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * min(bs, n - s)
        mse = total / n
        if not math.isfinite(mse):
            raise FloatingPointError(f"{net} pre-fit diverged (MSE {mse}) at iteration {it}")
        if tol is not None and mse < tol:
            break
    return {"mse": mse, "iters": it}


def fit_depth_to_prior(model, images: torch.Tensor, priors: torch.Tensor, iters: int,
                       tol: float | None = None, batch_size: int | None = None,
                       optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Pre-fit D on a set of images at once (joint pre-training, the generalized trainer, the
    ``pretrain-depth`` stage); the instance trainer runs the same loss as its phase 0.
    :func:`fit_net_to_maps` of netD; returns ``prior_mse`` and ``prior_iters``."""
    r = fit_net_to_maps(model, "netD", images, priors, iters, tol, batch_size, optimizer)
    return {"prior_mse": r["mse"], "prior_iters": r["iters"]}
