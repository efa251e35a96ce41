"""Diagnostic start from the ground truth (``gan2shape reconstruct --init-truth``, synthetic images).

Before the schedule, D is fitted to each image's true canonical depth and A to its true albedo
(:func:`gan2shape.diagnostics.canonical_truth`), with the pre-fit's MSE and ``prior_iters``
iterations each; the fitted nets become the run's starting point and the usual depth pre-fit to a
prior is skipped. V and L keep their initial weights. The depth metrics of this start are recorded
(``start_side``, ``start_mad``), so the drift of a run, final − start, shows how far the schedule
moves a depth that starts at the truth.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .diagnostics import canonical_truth
from .method.group import fingerprint
from .method.model import Target
from .method.prefit import fit_net_to_maps


def start_from_truth(trainer, targets: Sequence[Target], iters: int, tol: float | None = None) -> list[dict]:
    """Fit ``trainer.model``'s D and A to the targets' ground truth (all images at once), make the
    result the trainer's starting point (its reset snapshot, with the depth pre-fit skipped) and
    return each image's start metrics ``{"start_side", "start_mad"}`` (empty without ``gt_depth``)."""
    model = trainer.model
    missing = [t.name for t in targets if t.scene is None]
    if missing:
        raise ValueError(f"{', '.join(missing)}: the start from the ground truth needs the synthetic scene (--scene)")
    if iters < 1:
        raise ValueError(f"the start from the ground truth needs at least one fitting iteration, got {iters}")
    size, device = model.cfg.image_size, model.device
    # the checkpoint identity of this start: what the fit starts from and how long it runs, not its
    # result (cuDNN's backward is not deterministic: a resumed call would fit slightly other weights)
    identity = {"truth_fit": {"from": fingerprint([], trainer.initial_state), "iters": iters, "tol": tol,
                              "scenes": [repr(t.scene) for t in targets]}}
    truths = [canonical_truth(t.scene, size, device) for t in targets]
    images = torch.cat([t.image for t in targets]).to(device)
    for net, key in (("netD", "depth"), ("netA", "albedo")):
        fit_net_to_maps(model, net, images, torch.cat([tr[key] for tr in truths]), iters, tol)
    trainer.initial_state = model.nets_state()   # what Trainer.fit resets to
    trainer.pretrained_depth = True               # no pre-fit to a prior on top
    trainer.start_identity = identity
    starts = []
    with torch.no_grad():
        for t in targets:
            m = model.step1(t.to(device), per_image=True).image_metrics
            starts.append({"start_side": m[0]["side"], "start_mad": m[0]["mad"]} if m else {})
    return starts
