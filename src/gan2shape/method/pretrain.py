"""Joint pre-training: one model over many images, one image per iteration (METHOD §1.5, §8.1).

The original synface protocol starts every instance run from a model pre-trained this way; its
D comes with a frontal canonical frame and its V and L are trained.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

from ..io import atomic_torch_save
from .model import Target
from .prefit import fit_depth_to_prior
from .trainer import FitResult, Trainer, phases_of


def fit_joint(trainer: Trainer, targets: Sequence[Target], checkpoint: str | Path | None = None) -> FitResult:
    """Train ``trainer.model`` on ``targets``: a random permutation of the images, re-shuffled after
    each pass, one image per iteration. The depth pre-fit uses the first image only; after each
    step-1 phase every image's canonical state is refreshed; each image keeps its own projection
    pool, filled by a collect pass that moves to the next image after every forward, and step 3
    draws random subsets of it. With ``checkpoint`` writes an official-format pretrain file.

    Deviation (recommended by the method notes): the ambient/diffuse terms of each image's pseudo
    samples are that image's own, not those of the last image of the collect pass.
    """
    m, c = trainer.model, trainer.cfg
    whole = trainer.group(targets)          # one shared model and one random generator
    gen = whole.gens[0]
    persistent = {} if c.optimizers == "persistent" else None
    order: list[int] = []

    def next_index() -> int:
        if not order:
            order.extend(torch.randperm(len(whole), generator=gen).tolist())
        return order.pop(0)

    log, global_it, t0 = [], 0, time.perf_counter()
    if not trainer.pretrained_depth and c.prior_iters > 0:
        first = whole.targets[0]
        if first.prior is None:
            raise ValueError(f"{first.name}: no pretrained depth net and no prior to pre-fit it to")
        r = fit_depth_to_prior(m, first.image, first.prior, c.prior_iters, c.prior_tol)
        log.append({"iteration": 0, "step": 0, **r})
    cur = next_index()
    for phase in phases_of(c.schedule, vl_warmup=c.vl_warmup):
        opts = trainer.optimizers(phase.step, whole, persistent, phase.nets)
        for it in range(phase.n):
            one = whole.subgroup([cur])
            if phase.step == 1:
                one.states[0].canon_mask = None  # recomputed at every step-1 iteration of the image
            (terms,) = trainer.iteration(phase, one, opts, random_pool=True)
            global_it += 1
            if global_it % trainer.log_every == 0 or it == phase.n - 1:
                entry = {"iteration": global_it, "stage": phase.stage, "step": phase.step, "image": one.names[0],
                         **terms}
                log.append(entry)
                if trainer.on_log:
                    trainer.on_log(entry)
            cur = next_index()
        with torch.no_grad():
            if phase.step == 1:  # every image's canonical state, in list order
                for i in range(len(whole)):
                    one = whole.subgroup([i])
                    out = m.step1(one.target, flip=False, per_image=True)
                    if c.use_mask and one.target.mask is not None:
                        one.set_canon_mask(m.canonical_mask(one.target, out.depth, out.view))
                    one.set_canonical(out)
            elif phase.step == 2 and c.step3_pool == "original":
                for st in whole.states:
                    st.pool.start()
                for _ in range(c.collect_iters):  # each forward on the current image, then the next
                    one = whole.subgroup([cur])
                    _, _, *samples = m.step2(one.target, one.canonical(c.use_mask), one.gens, per_image=True,
                                             viewlight=True)
                    one.states[0].pool.add(*samples)
                    cur = next_index()
                for name, st in zip(whole.names, whole.states):
                    if st.pool.collected:
                        st.pool.finish()
                    elif len(st.pool) == 0:  # an image missed by this pass keeps its previous pool
                        raise RuntimeError(f"{name}: no projected samples collected; raise collect_iters "
                                           f"(at least twice the number of images, {len(whole)})")
    if checkpoint is not None:
        atomic_torch_save({**m.nets_state(), "iteration": global_it, "config": c.to_dict(),
                           "names": whole.names}, checkpoint)
    return trainer.result(whole, [log], time.perf_counter() - t0, global_it)
