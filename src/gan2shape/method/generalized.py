"""The replication's generalized trainer: one model M* for a set of images (EXTENSIONS §2.3, §2.4)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from ..io import CheckpointError, atomic_torch_save, safe_torch_load
from .config import GeneralizedConfig
from .group import Group
from .model import Target
from .prefit import fit_depth_to_prior
from .trainer import FitResult, Phase, Trainer


def fit_generalized(trainer: Trainer, targets: Sequence[Target], gcfg: GeneralizedConfig,
                    checkpoint_dir: str | Path | None = None) -> FitResult:
    """Depth pre-fit on all priors, then epochs over mini-batches: ``n1`` step-1 iterations on the
    whole mini-batch, then per image ``rounds`` × (``n2`` step-2, collect, ``n3`` step-3).
    Initialisation epochs (``init_epochs`` × ``init_stage`` × ``init_rounds``) come first when
    asked for.

    The replication's batching bugs are fixed (EXTENSIONS §2.3): (1) step-1 losses are per image
    and averaged (the replication compared every render with image 0); (2) depth is centred per
    image, also in the pre-fit; (3) the final epoch is always checkpointed; (4) checkpoints are
    named ``epoch_XXXX.pth`` so the latest is the last in sorted order. With ``checkpoint_dir`` an
    interrupted run resumes from its latest epoch checkpoint.
    """
    m, c = trainer.model, trainer.cfg
    if c.vl_warmup:
        raise ValueError("vl_warmup is an option of the instance and joint trainers, not of the generalized one")
    whole = trainer.group(targets)
    gen = whole.gens[0]
    persistent = {} if c.optimizers == "persistent" else None
    epochs = [(gcfg.init_stage, gcfg.init_rounds)] * gcfg.init_epochs + [(gcfg.stage, 1)] * gcfg.epochs
    log, global_it, start, elapsed, t0 = [], 0, 0, 0.0, time.perf_counter()
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    existing = sorted(ckdir.glob("epoch_*.pth")) if ckdir is not None and ckdir.exists() else []
    if existing:
        saved = safe_torch_load(existing[-1])
        if saved.get("names") != whole.names:
            raise CheckpointError(f"{existing[-1]}: checkpoint belongs to other images")
        m.load_nets_state(saved, source=str(existing[-1]))
        start, global_it, log, elapsed = saved["epoch"], saved["iteration"], saved["log"], saved["elapsed"]
        gen.set_state(saved["rng"])
        torch.set_rng_state(saved["torch_rng"])
        if persistent is not None:
            for step, sd in saved["persistent"].items():
                trainer.optimizers(step, whole, persistent)["all"].load_state_dict(sd)
    elif not trainer.pretrained_depth and gcfg.prior_epochs > 0:
        if any(t.prior is None for t in whole.targets):
            raise ValueError("generalized training needs a prior for every image (or a pretrained depth net)")
        images = torch.cat([t.image for t in whole.targets])
        priors = torch.cat([t.prior for t in whole.targets])
        r = fit_depth_to_prior(m, images, priors, gcfg.prior_epochs, c.prior_tol, batch_size=gcfg.batch_size)
        log.append({"iteration": 0, "step": 0, **r})

    def run(phase: Phase, group: Group) -> None:
        nonlocal global_it
        opts = trainer.optimizers(phase.step, group, persistent)
        for _ in range(phase.n):
            (terms,) = trainer.iteration(phase, group, opts)
            global_it += 1
            if global_it % trainer.log_every == 0:
                entry = {"iteration": global_it, "epoch": phase.stage, "step": phase.step, **terms}
                log.append(entry)
                if trainer.on_log:
                    trainer.on_log(entry)

    for e in range(start, len(epochs)):
        (n1, n2, n3), rounds = epochs[e]
        for b in range(0, len(whole), gcfg.batch_size):
            batch = list(range(b, min(b + gcfg.batch_size, len(whole))))
            run(Phase(e, 0, 1, n1), whole.subgroup(batch))
            for i in batch:
                one = whole.subgroup([i])
                for r in range(rounds):
                    run(Phase(e, r, 2, n2), one)
                    trainer.collect(one)
                    run(Phase(e, r, 3, n3), one)
        if ckdir is not None and ((e + 1) % gcfg.save_every == 0 or e == len(epochs) - 1):
            atomic_torch_save({
                **m.nets_state(), "epoch": e + 1, "iteration": global_it, "names": whole.names,
                "persistent": None if persistent is None else {k: o.state_dict() for k, o in persistent.items()},
                "rng": gen.get_state(), "torch_rng": torch.get_rng_state(), "log": log,
                "elapsed": elapsed + time.perf_counter() - t0, "config": c.to_dict(), "generalized": asdict(gcfg),
            }, ckdir / f"epoch_{e + 1:04d}.pth")
    return trainer.result(whole, [log], elapsed + time.perf_counter() - t0, global_it)
