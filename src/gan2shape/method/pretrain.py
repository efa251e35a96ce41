"""Joint pre-training: one model over many images, P image streams at a time (METHOD §1.5, §1.6, §8.1).

The original synface protocol starts every instance run from a model pre-trained this way; its
D comes with a frontal canonical frame and its V and L are trained.

The original ran P = 8 processes sharing the weights through DDP. Here a **stream** stands for one
process: it has its own random generator (seed + rank), walks its own random permutation of all
images (re-shuffled after each pass) and keeps its own step-3 pool of every image. Every
iteration trains the shared model on the group of the P streams' current images, their losses
averaged (DDP averages the gradients), then every stream moves to its next image. P = 1 is the
single-process run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from .config import NET_NAMES
from .group import Group, TargetState, fingerprint
from .model import Target
from .prefit import fit_depth_to_prior
from .trainer import Checkpoint, FitResult, Phase, Plan, Trainer, phases_of


@dataclass
class Stream:
    """One of the original's processes: its generator, its permutation of the images (what is left
    of the current pass), the image it is on, and its own state of every image (pool, masks)."""

    gen: torch.Generator
    states: list[TargetState]
    order: list[int] = field(default_factory=list)
    cur: int = -1

    def advance(self) -> None:
        """Move to the next image; a new random permutation after each full pass."""
        if not self.order:
            self.order.extend(torch.randperm(len(self.states), generator=self.gen).tolist())
        self.cur = self.order.pop(0)


class Streams(Plan):
    """The P streams of a joint run over one group of images, and what they share: the plan of the
    trainer's phase loop (:meth:`Trainer.run_phases`) for joint pre-training."""

    random_pool = True      # step 3 draws N_p random samples of the current image's pool

    def __init__(self, whole: Group, gens: Sequence[torch.Generator], prefit: bool = False):
        self.whole = whole
        self.prefit = prefit
        n, device = len(whole), whole.targets[0].image.device
        # the prior only seeds the pre-fit; the streams' groups stack images that have none
        self.train = [replace(t, prior=None) for t in whole.targets]
        self.streams = [Stream(g, whole.states if r == 0 else [TargetState.new(device) for _ in range(n)])
                        for r, g in enumerate(gens)]
        self.owner = [0] * n   # the stream whose step-1/3 forward of each image came last (its metrics are the image's)

    def start(self) -> list[dict]:
        """A fresh run: the depth pre-fit on the first image only (unless D is pretrained), then every
        stream moves to its first image."""
        log = []
        if self.prefit:
            c, first = self.whole.model.cfg, self.whole.targets[0]
            if first.prior is None:
                raise ValueError(f"{first.name}: no pretrained depth net and no prior to pre-fit it to")
            r = fit_depth_to_prior(self.whole.model, first.image, first.prior, c.prior_iters, c.prior_tol)
            log.append({"iteration": 0, "step": 0, **r})
        self.advance()
        return log

    def _group(self) -> Group:
        s = self.streams
        return Group(self.whole.model, [self.train[x.cur] for x in s], [x.states[x.cur] for x in s],
                     [x.gen for x in s], False)

    def current(self, phase: Phase) -> Group:
        """The streams' current images, each with its stream's state and generator."""
        group = self._group()
        if phase.step == 1:
            for st in group.states:
                st.canon_mask = None  # recomputed at every step-1 iteration of the image
        return group

    def advance(self) -> None:
        for s in self.streams:
            s.advance()

    def trained(self, phase: Phase) -> None:
        """Every stream has trained its current image: next image. After a step-1 or step-3 iteration
        (the forwards that measure the depth) the image's latest metrics are the stream's; a step-2
        iteration measures nothing and leaves the owner as it was."""
        if phase.step in (1, 3):
            for r, s in enumerate(self.streams):
                self.owner[s.cur] = r
        self.advance()

    def label(self, group: Group) -> dict:
        return {"image": ",".join(group.names)}

    def after_phase(self, phase: Phase) -> None:
        if phase.step == 1:
            self.refresh_canonical()
        elif phase.step == 2 and self.whole.model.cfg.step3_pool == "original":
            self.collect()

    @torch.no_grad()
    def refresh_canonical(self) -> None:
        """The step-1 collect: a no-grad step-1 forward of every image in list order; every stream gets
        the image's canonical depth, albedo, light, normals (and canonical mask)."""
        whole = self.whole
        m, c = whole.model, whole.model.cfg
        for i in range(len(whole)):
            one = whole.subgroup([i])
            out = m.step1(one.target, flip=False, per_image=True)
            if c.use_mask and one.target.mask is not None:
                one.set_canon_mask(m.canonical_mask(one.target, out.depth, out.view))
            one.set_canonical(out)
            for s in self.streams:
                s.states[i].canonical, s.states[i].canon_mask = one.states[0].canonical, one.states[0].canon_mask

    @torch.no_grad()
    def collect(self) -> None:
        """The step-2 collect: ``collect_iters`` no-grad step-2 forwards per stream, each on its current
        image (the P streams in one batch), into the stream's pool of that image, then the next image."""
        m = self.whole.model
        c, n_p = m.cfg, m.cfg.n_p
        for s in self.streams:
            for st in s.states:
                st.pool.start()
        for _ in range(c.collect_iters):
            group = self._group()
            _, _, *samples = m.step2(group.target, group.canonical(c.use_mask), group.gens, per_image=True,
                                     viewlight=True)   # projected samples, masks, raw views, raw lights
            for r, st in enumerate(group.states):
                st.pool.add(*(x[r * n_p:(r + 1) * n_p] for x in samples))
            self.advance()
        for s in self.streams:
            for st in s.states:
                st.pool.finish()

    def checkpoint_group(self) -> Group:
        """Every stream's state of every image, with the streams' generators."""
        n = len(self.whole)
        return Group(self.whole.model, self.train * len(self.streams), [st for s in self.streams for st in s.states],
                     [s.gen for s in self.streams for _ in range(n)], False)

    def position(self) -> dict:
        return {"streams": [{"order": list(s.order), "cur": s.cur} for s in self.streams], "owner": list(self.owner)}

    def load_position(self, d: dict | None) -> None:
        for s, pos in zip(self.streams, d["streams"]):
            s.order, s.cur = list(pos["order"]), int(pos["cur"])
        self.owner = list(d["owner"])

    def final(self) -> Group:
        """All images, each with the state of the stream that trained it last (for the result)."""
        w = self.whole
        return Group(w.model, w.targets, [self.streams[r].states[i] for i, r in enumerate(self.owner)], w.gens, False)


def check_collect_iters(collect_iters: int, n_images: int) -> None:
    """Each stream's collect pass must visit every image: at least two permutations' worth of forwards
    (the pass may start near the end of one). Otherwise an image would have no pool in step 3."""
    if collect_iters < 2 * n_images:
        raise ValueError(f"collect_iters {collect_iters} is below twice the number of images ({n_images}): "
                         f"some image would get no projected samples")


def fit_joint(trainer: Trainer, targets: Sequence[Target], checkpoint: str | Path | None = None,
              checkpoint_every: int = 200, stop_after: int | None = None,
              stop_after_seconds: float | None = None) -> FitResult:
    """Train ``trainer.model`` on ``targets`` with ``cfg.joint_streams`` = P streams (module doc).

    The depth pre-fit uses the first image only. After each step-1 phase every image's canonical
    state is refreshed by a no-grad step-1 forward, in list order. After each step-2 phase every
    stream runs ``collect_iters`` no-grad step-2 forwards, each on its current image (the P streams
    in one batch), then moves on; step 3 draws N_p random samples of the current image's pool of
    the stream.

    ``checkpoint``: a resumable file (written every ``checkpoint_every`` iterations, when stopped
    and at the end) holding the nets, the optimiser state, every stream's image states (the pools
    only while step 3 needs them), permutations and generators, the torch RNG, the log and the
    elapsed time; a file made by another configuration or other inputs is discarded (with a
    warning). ``stop_after`` iterations / ``stop_after_seconds`` of this call: stop (as if
    interrupted) at the next iteration and write the checkpoint; ``result.interrupted`` says so.

    Deviation (recommended by the method notes): the ambient/diffuse terms of each image's pseudo
    samples are that image's own, not those of the last image of the collect pass.
    """
    c = trainer.cfg
    if c.step3_pool != "original":
        # last_batch keeps a pool only for the images a stream visited in its latest step-2 iterations;
        # step 3 of any other image would read none
        raise ValueError(f"joint pre-training needs step3_pool 'original' (a pool of every image), "
                         f"got {c.step3_pool!r}")
    gens = [torch.Generator().manual_seed(c.seed + r) for r in range(c.joint_streams)]
    whole = trainer.group(targets, gens=[gens[0]] * len(targets))
    check_collect_iters(c.collect_iters, len(whole))
    streams = Streams(whole, gens, prefit=not trainer.pretrained_depth and c.prior_iters > 0)
    ckpt = Checkpoint(checkpoint, {"config": c.to_dict(), "joint": True, "mode": trainer.kernels,
                                   "pretrained_depth": trainer.pretrained_depth,
                                   "inputs": fingerprint(whole.targets, trainer.model.nets_state())})
    run = trainer.run_phases(phases_of(c.schedule, vl_warmup=c.vl_warmup), streams, ckpt,
                             checkpoint_every=checkpoint_every, stop_after=stop_after,
                             stop_after_seconds=stop_after_seconds, desc=f"joint x{c.joint_streams}")
    return trainer.result(streams.final(), run.logs, run.seconds, run.iterations, run.interrupted)


def pretrain_file(model, result: FitResult, nets: Sequence[str] = NET_NAMES, half: bool = False) -> dict:
    """The official pretrain layout (keys netD, netA, netV, netL, netEnc; a subset with ``nets``,
    float16 weights with ``half``) plus the iteration count, configuration, image names, time and
    ``complete`` (False for the networks of a run stopped early: a shortened pre-train)."""
    state = model.nets_state()
    out = {k: {name: (t.half() if half and t.is_floating_point() else t) for name, t in state[k].items()}
           for k in nets}
    return {**out, "iteration": result.iterations, "config": model.cfg.to_dict(), "names": result.names,
            "seconds": result.seconds, "complete": not result.interrupted}
