"""The training loop: one schedule of phases for one image or K images at once (METHOD §1.3).

A **group** is K ≥ 1 images trained together, either

* sharing one model, their losses averaged (the original's ``independent + share_weight`` runs;
  K = 1 is the ordinary single-image run), or
* as K **independent** models in one batch (:mod:`.stacked`): per-image networks with stacked
  parameters, the backward pass on the sum of the K losses, so image i's nets get exactly image i's
  gradient and the run equals K single-image runs.

:meth:`Trainer.run_phases` is the one phase loop: optimiser re-creation at every step switch,
checkpoint/resume, logging and progress; a :class:`Plan` says which group each iteration trains and
what runs between phases (:meth:`Trainer.fit`: the same group, the pool collected after step 2;
joint pre-training, :mod:`.pretrain`: P streams moving over many images). The per-step work
(:meth:`Trainer.iteration`, :meth:`Trainer.collect`, :meth:`Trainer.predict`) is written once; the
generalized trainer (:mod:`.generalized`) is a thin loop over it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..io import CheckpointError, atomic_torch_save, safe_torch_load
from .config import NET_NAMES, STEP_NETS, WARMUP_NETS, Stage
from .group import Group, TargetState, fingerprint
from .model import GAN2Shape, Target
from .optim import step_optimizers
from .prefit import depth_prior_loss
from .stacked import StackedGAN2Shape, fast_view

log = logging.getLogger("gan2shape")


@dataclass(frozen=True)
class Phase:
    """A run of ``n`` iterations of one step (0 = depth pre-fit) training ``nets`` (default: the
    step's, ``STEP_NETS[step]``; the V/L warm-up is a step-3 phase of netV, netL)."""

    stage: int
    round: int
    step: int
    n: int
    flip: bool = False
    nets: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.nets is None:
            object.__setattr__(self, "nets", STEP_NETS[self.step])


def phases_of(schedule: Sequence[Stage], prior_iters: int = 0, vl_warmup: int = 0) -> list[Phase]:
    """Flatten a schedule into phases (the pre-fit first, when it runs). ``vl_warmup`` > 0 puts a
    warm-up phase of that many step-3 iterations training only V and L right before the first
    step-3 phase (same stage, round and flip; nothing when the schedule has no step 3)."""
    out = [Phase(-1, 0, 0, prior_iters)] if prior_iters > 0 else []
    for k, st in enumerate(schedule):
        if st.n1 > 0:
            out.append(Phase(k, 0, 1, st.n1, st.flip1))
        for r in range(st.rounds):
            if st.n2 > 0:
                out.append(Phase(k, r, 2, st.n2))
            if st.n3 > 0:
                out.append(Phase(k, r, 3, st.n3, st.flip3))
    first3 = next((i for i, p in enumerate(out) if p.step == 3), None)
    if vl_warmup > 0 and first3 is not None:
        out.insert(first3, replace(out[first3], n=vl_warmup, nets=WARMUP_NETS))
    return out


@dataclass
class FitResult:
    """What a fit leaves: per-image final predictions, metrics and the loss log."""

    names: list[str]
    depth: torch.Tensor           # N×S×S canonical depth
    recon_depth: torch.Tensor     # N×S×S depth in the input view
    albedo: torch.Tensor          # N×3×S×S
    normals: torch.Tensor         # N×S×S×3 canonical normals
    recon: torch.Tensor           # N×3×S×S reconstruction of the input
    view: torch.Tensor            # N×6 raw (network units, with mean)
    light: torch.Tensor           # N×4 raw
    metrics: list[dict]           # per image: protocol metrics (last step-3 forward) and final ones
    log: list[dict]               # independent models: every image's entries, with an "image" key
    seconds: float
    iterations: int
    interrupted: bool = False
    logs: list[list[dict]] = field(default_factory=list)   # independent models: image i's own log
    states: list[dict] = field(default_factory=list)       # independent models: image i's nets

    def image(self, i: int) -> "FitResult":
        """Image ``i``'s result of an independent run, as a run on that image alone returns it
        (``seconds``: the run's time divided by K)."""
        sl = slice(i, i + 1)
        return FitResult(names=[self.names[i]], depth=self.depth[sl], recon_depth=self.recon_depth[sl],
                         albedo=self.albedo[sl], normals=self.normals[sl], recon=self.recon[sl], view=self.view[sl],
                         light=self.light[sl], metrics=[self.metrics[i]], log=self.logs[i],
                         seconds=self.seconds / len(self.names), iterations=self.iterations,
                         interrupted=self.interrupted)


class Trainer:
    """Runs the instance-specific schedule on a group of images; owns the reset snapshot."""

    def __init__(self, model: GAN2Shape, log_every: int = 50, progress: bool = False,
                 on_log: Callable[[dict], None] | None = None, fast: bool = False, bf16: bool = True):
        self.model = model
        self.cfg = model.cfg
        self.log_every = log_every
        self.progress = progress
        self.on_log = on_log
        self.fast = fast              # the fast mode (stacked.fast_view): bf16/TF32 kernels, host syncs only when logging
        self.bf16 = bf16              # False: the fast mode without its bf16 autocast (a diagnostic)
        self.initial_state = model.nets_state()   # the reset snapshot (random init or pretrain)
        # what a checkpoint records of the starting point: the snapshot itself, or (set by a start
        # computed before every call, e.g. the truth fit) a description that does not depend on
        # non-deterministic kernels, so that the run resumes on CUDA too
        self.start_identity: dict | None = None
        self.pretrained_depth = False

    # -- initial weights --------------------------------------------------------------------------
    def load_pretrain(self, path: str | Path) -> list[str]:
        """Load an official-format pretrain file (keys netD/netA/netV/netL/netEnc, subset allowed)
        and make it the reset snapshot; a present netD skips the depth pre-fit."""
        state = safe_torch_load(path)
        if not isinstance(state, dict) or not any(k in state for k in NET_NAMES):
            raise CheckpointError(f"{path}: expected a dict with some of {NET_NAMES}, got "
                                  f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
        loaded = self.model.load_nets_state(state, source=str(path))
        self.initial_state = self.model.nets_state()
        self.pretrained_depth = "netD" in loaded
        return loaded

    @property
    def kernels(self) -> str:
        """The mode a checkpoint records, so that a run resumes only in the mode it started in."""
        return ("fast" if self.bf16 else "fast_nobf16") if self.fast else "faithful"

    def reset(self) -> None:
        self.model.load_nets_state(self.initial_state)

    # -- set-up -----------------------------------------------------------------------------------
    def group(self, targets: Sequence[Target], independent: bool = False,
              states: Sequence[TargetState] | None = None, gens: Sequence[torch.Generator] | None = None) -> Group:
        """The group of ``targets`` (on the model's device, G(w) computed): one shared model, or with
        ``independent`` a K-image stacked copy of the current weights. Every image draws from its own
        generator seeded with ``cfg.seed`` (independent), or all from one (shared)."""
        m, c = self.model, self.cfg
        targets = [t.to(m.device) for t in targets]
        if not targets:
            raise ValueError("no targets")
        if c.crop is not None and len({t.origin_size for t in targets}) > 1:
            raise ValueError(f"with crop={c.crop} all images need the same original size, got "
                             f"{sorted({t.origin_size for t in targets}, key=str)}")
        for t in targets:
            if t.gan_image is None:
                t.gan_image = m.gan_image(t)
        if gens is None:
            gens = ([torch.Generator().manual_seed(c.seed) for _ in targets] if independent
                    else [torch.Generator().manual_seed(c.seed)] * len(targets))
        if independent:
            model = StackedGAN2Shape(m, len(targets), fast=self.fast, bf16=self.bf16)
        else:
            model = fast_view(m, self.bf16) if self.fast else m
        states = list(states) if states is not None else [TargetState.new(m.device) for _ in targets]
        return Group(model, targets, states, list(gens), independent)

    def optimizers(self, step: int, group: Group, persistent: dict | None,
                   nets: Sequence[str] | None = None) -> dict:
        return step_optimizers(group.model.nets, step, self.cfg, persistent, nets)

    @contextlib.contextmanager
    def precision(self):
        """``fast``: TF32 matmuls/convolutions and cuDNN autotuning (the step shapes are fixed) for
        the duration of a fit; otherwise exact fp32."""
        if not self.fast:
            yield
            return
        b = torch.backends
        saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark)
        b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = b.cudnn.benchmark = True
        try:
            yield
        finally:
            b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark = saved

    # -- one iteration of a phase on a group ------------------------------------------------------
    def iteration(self, phase: Phase, group: Group, opts: dict, random_pool: bool = False,
                  sync: bool = True) -> list[dict]:
        """One gradient iteration of ``phase``; returns the logged terms: one dict per image
        (independent models) or one dict of means over the group (shared model).

        ``sync=False`` (the fast mode between log iterations): no finite-loss check and nothing read
        back to the host; returns []. A non-finite loss then surfaces at the next log iteration
        (the nets stay non-finite once a step has made them so)."""
        m, c, t = group.model, self.cfg, group.target
        n = c.n_p
        if phase.step == 0:
            loss = depth_prior_loss(m, t.image, t.prior)
            terms = {"prior_mse": loss.detach()}
        elif phase.step == 1:
            out = m.step1(t, flip=phase.flip, grad_nets=phase.nets, per_image=True)
            loss, terms = out.loss, dict(out.losses)
            # the canonical object mask: from an image's first step-1 iteration, then refreshed by
            # every step-3 iteration (METHOD §3.5)
            if c.use_mask and t.mask is not None and group.needs_canon_mask():
                group.set_canon_mask(m.canonical_mask(t, out.depth, out.view).detach(), only_missing=True)
            group.set_canonical(out)          # what the most recent step-1 forward leaves for step 2
            group.set_metrics(out.image_metrics)
        elif phase.step == 2:
            loss, terms, *samples = m.step2(t, group.canonical(c.use_mask), group.gens, per_image=True,
                                            viewlight=True)
            if c.step3_pool == "last_batch":  # replication: step 3 reads the last step-2 batch
                for i, st in enumerate(group.states):
                    st.pool.start()
                    st.pool.add(*(x[i * n:(i + 1) * n] for x in samples))
                    st.pool.finish()
        else:
            pools = [st.pool for st in group.states]
            if c.step3_pool == "last_batch":
                batches = [p.all() for p in pools]
            elif random_pool:
                batches = [p.random_batch(n, g) for p, g in zip(pools, group.gens)]
            else:
                batches = [p.next_batch(n, g) for p, g in zip(pools, group.gens)]
            proj, pmask, views, lights = (torch.cat(x) for x in zip(*batches))
            if c.step3_viewlight == "predicted":
                views = lights = None
            loss, terms, s1 = m.step3(t, proj, pmask, flip=phase.flip, per_image=True, grad_nets=phase.nets,
                                      proj_view=views, proj_light=lights)
            if c.use_mask and t.mask is not None:
                group.set_canon_mask(m.canonical_mask(t, s1.depth, s1.view).detach())
            group.set_metrics(s1.image_metrics)
        if sync:
            read = host_values({**terms, "loss": loss.detach()})   # one device sync
            losses = read.pop("loss")
            terms = read
            bad = [name for name, v in zip(group.names, losses) if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(f"{', '.join(bad)}: loss is not finite in stage {phase.stage} step {phase.step}")
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        # independent: image i's nets get the gradient of image i's loss only; shared: the mean
        (loss.sum() if group.independent else loss.mean()).backward()
        for o in opts.values():
            o.step()
        if not sync:
            return []
        logs = [{**{key: v[i] for key, v in terms.items()}, "loss": losses[i]} for i in range(len(group))]
        if phase.step in (1, 3) and group.has_metrics():  # ground-truth accuracy of this forward
            for e, st in zip(logs, group.states):
                gt = host_values({"side": st.last_metrics["side"], "mad": st.last_metrics["mad"]})
                e.update(side=gt["side"], mad=gt["mad"])
        if group.independent:
            return logs
        return [{key: sum(e[key] for e in logs) / len(logs) for key in logs[0]}]

    @torch.no_grad()
    def collect(self, group: Group) -> None:
        """After step 2: ``collect_iters`` no-grad step-2 forwards fill each image's pool (METHOD §5.6).
        Independent models draw all K at once; images sharing one generator draw image by image."""
        c, n = self.cfg, self.cfg.n_p
        if c.step3_pool == "last_batch":
            return
        for st in group.states:
            st.pool.start()
        parts = [group] if group.independent or len(group) == 1 else [group.subgroup([i]) for i in range(len(group))]
        for part in parts:
            state = part.canonical(c.use_mask)
            for _ in range(c.collect_iters):
                _, _, *samples = part.model.step2(part.target, state, part.gens, per_image=True, viewlight=True)
                for i, st in enumerate(part.states):
                    st.pool.add(*(x[i * n:(i + 1) * n] for x in samples))
        for st in group.states:
            st.pool.finish()

    @torch.no_grad()
    def predict(self, group: Group) -> dict:
        """Final per-image predictions (step-1 forward without flip)."""
        out = group.model.step1(group.prediction_target(), flip=False, per_image=True)
        return {"depth": out.depth, "recon_depth": out.recon_depth, "albedo": out.albedo, "normals": out.normals,
                "recon": out.recon, "view": out.view, "light": out.light,
                "metrics": out.image_metrics or [None] * len(group)}

    def result(self, group: Group, logs: list[list[dict]], seconds: float, iterations: int,
               interrupted: bool = False) -> FitResult:
        p = self.predict(group)
        metrics = []
        for st, final in zip(group.states, p["metrics"]):
            d = host_values(st.last_metrics or {})
            if final:
                d.update({f"final_{key}": v for key, v in host_values(final).items()})
            metrics.append(d)
        if group.independent:
            log_all = sorted(({"image": name, **e} for name, lg in zip(group.names, logs) for e in lg),
                             key=lambda e: e["iteration"])
            extra = dict(logs=logs, states=[group.model.image_state(i) for i in range(len(group))])
        else:
            log_all, extra = logs[0], {}
        return FitResult(names=group.names, depth=p["depth"].cpu(), recon_depth=p["recon_depth"].cpu(),
                         albedo=p["albedo"].cpu(), normals=p["normals"].cpu(), recon=p["recon"].cpu(),
                         view=p["view"].cpu(), light=p["light"].cpu(), metrics=metrics, log=log_all,
                         seconds=seconds, iterations=iterations, interrupted=interrupted, **extra)

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self, targets: Target | Sequence[Target], independent: bool = False,
            checkpoint: str | Path | None = None, checkpoint_every: int = 200, stop_after: int | None = None,
            reset: bool = True) -> FitResult:
        """Train a group through the schedule: the depth pre-fit (unless a pretrained D was loaded),
        then every stage's phases, the pool collected after each step-2 phase.

        ``checkpoint``: file written every ``checkpoint_every`` iterations and at the end; a run
        resumes from it exactly when it was made by the same configuration on the same inputs,
        otherwise the run starts afresh (and says why). ``stop_after``: stop after this many
        iterations of this call (as if interrupted) and write the checkpoint.
        """
        targets = [targets] if isinstance(targets, Target) else list(targets)
        c = self.cfg
        if reset:
            self.reset()
        need_prior = not self.pretrained_depth and c.prior_iters > 0
        if need_prior:
            missing = [t.name for t in targets if t.prior is None]
            if missing:
                raise ValueError(f"{', '.join(missing)}: no pretrained depth net and no prior to pre-fit it to")
        group = self.group(targets, independent)
        phases = phases_of(c.schedule, c.prior_iters if need_prior else 0, c.vl_warmup)
        ckpt = Checkpoint(checkpoint, {"config": c.to_dict(), "independent": independent, "mode": self.kernels,
                                       "pretrained_depth": self.pretrained_depth,
                                       "inputs": fingerprint(group.targets, self.start_identity or self.initial_state)})
        run = self.run_phases(phases, SameGroup(self, group), ckpt, n_logs=len(group) if independent else 1,
                              checkpoint_every=checkpoint_every, stop_after=stop_after, desc=",".join(group.names))
        return self.result(group, run.logs, run.seconds, run.iterations, run.interrupted)

    def run_phases(self, phases: Sequence[Phase], plan: "Plan", ckpt: "Checkpoint", n_logs: int = 1,
                   checkpoint_every: int = 200, stop_after: int | None = None,
                   stop_after_seconds: float | None = None, desc: str = "") -> "Run":
        """The phase loop every fit runs: resume from ``ckpt`` (or start with ``plan.start()``), then
        for every phase re-create the optimisers of its nets and run its iterations on the group
        ``plan.current()``, logging every ``log_every`` iterations and at a phase's end, checkpointing
        every ``checkpoint_every`` iterations; ``plan.after_phase`` runs between phases (pool
        collection). Stops early (checkpoint written, ``interrupted``) after ``stop_after``
        iterations or ``stop_after_seconds`` of this call."""
        c = self.cfg
        persistent = {} if c.optimizers == "persistent" else None
        cursor, logs, elapsed, global_it, opt_state = (0, 0), [[] for _ in range(n_logs)], 0.0, 0, None
        t0 = time.perf_counter()
        saved = ckpt.load()
        if saved is not None:
            cursor, global_it, logs, elapsed, opt_state = ckpt.restore(saved, self, plan.checkpoint_group(),
                                                                       persistent)
            plan.load_position(saved.get("extra"))
        else:
            logs[0].extend(plan.start())
        done, interrupted, pbar = 0, False, None
        if self.progress:
            from tqdm import tqdm
            pbar = tqdm(total=sum(p.n for p in phases), initial=global_it, desc=desc, unit="it")

        def stop_now() -> bool:
            return ((stop_after is not None and done >= stop_after)
                    or (stop_after_seconds is not None and time.perf_counter() - t0 >= stop_after_seconds))

        def save(cur, opts):
            ckpt.save(cur, self, plan.checkpoint_group(), opts, persistent, logs, elapsed + time.perf_counter() - t0,
                      global_it, keep_pools=cur[0] < len(phases) and phases[cur[0]].step == 3, extra=plan.position())

        with self.precision():
            for pi in range(cursor[0], len(phases)):
                phase = phases[pi]
                opts = self.optimizers(phase.step, plan.checkpoint_group(), persistent, phase.nets)
                start = cursor[1] if pi == cursor[0] else 0
                if start > 0 and opt_state is not None and persistent is None:
                    for name, o in opts.items():
                        o.load_state_dict(opt_state[name])
                for it in range(start, phase.n):
                    group = plan.current(phase)
                    log_now = (global_it + 1) % self.log_every == 0 or it == phase.n - 1
                    # the fast mode reads losses back (and checks them) only when it logs
                    entries = self.iteration(phase, group, opts, random_pool=plan.random_pool,
                                             sync=log_now or not self.fast)
                    plan.trained(phase)
                    global_it += 1
                    done += 1
                    if pbar is not None:
                        pbar.update(1)
                    if log_now:
                        for i, (lg, terms) in enumerate(zip(logs, entries)):
                            entry = {"iteration": global_it, "stage": phase.stage, "step": phase.step,
                                     **plan.label(group), **terms}
                            lg.append(entry)
                            if self.on_log:
                                self.on_log({"image": group.names[i], **entry} if group.independent else entry)
                    last, stop = it == phase.n - 1, stop_now()
                    if ckpt.path is not None and not last and (global_it % checkpoint_every == 0 or stop):
                        save((pi, it + 1), opts)
                    if stop and not last:
                        interrupted = True
                        break
                if interrupted:
                    break
                plan.after_phase(phase)
                stop = stop_now()
                if ckpt.path is not None and (stop or pi == len(phases) - 1):
                    save((pi + 1, 0), {})
                if stop and pi < len(phases) - 1:
                    interrupted = True
                    break
            if pbar is not None:
                pbar.close()
        return Run(logs, elapsed + time.perf_counter() - t0, global_it, interrupted)


@dataclass
class Run:
    """What :meth:`Trainer.run_phases` leaves: the logs, seconds (resumed calls included), iterations."""

    logs: list[list[dict]]
    seconds: float
    iterations: int
    interrupted: bool


class Plan:
    """Which images each iteration of :meth:`Trainer.run_phases` trains and what happens between
    phases. This base trains one fixed group (:class:`SameGroup`); joint pre-training's streams
    (:class:`gan2shape.method.pretrain.Streams`) move to other images after every iteration."""

    random_pool = False     # step 3 reads its pool sequentially (instance runs) or at random (joint)

    def start(self) -> list[dict]:
        """Work before the first phase of a fresh (not resumed) run; its log entries."""
        return []

    def current(self, phase: Phase) -> Group:
        raise NotImplementedError

    def trained(self, phase: Phase) -> None:
        """After every iteration of ``phase``."""

    def label(self, group: Group) -> dict:
        """Extra keys of a log entry."""
        return {}

    def after_phase(self, phase: Phase) -> None:
        """Between phases."""

    def checkpoint_group(self) -> Group:
        """The group whose model, states and generators the checkpoint holds."""
        raise NotImplementedError

    def position(self) -> dict | None:
        """What else a resume needs (saved as the checkpoint's ``extra``)."""
        return None

    def load_position(self, d: dict | None) -> None:
        pass


class SameGroup(Plan):
    """An instance run: every iteration trains the same group; the pool is collected after step 2."""

    def __init__(self, trainer: Trainer, group: Group):
        self.trainer, self.group = trainer, group

    def current(self, phase: Phase) -> Group:
        return self.group

    def after_phase(self, phase: Phase) -> None:
        if phase.step == 2:  # the step-3 pool (METHOD §1.3)
            self.trainer.collect(self.group)

    def checkpoint_group(self) -> Group:
        return self.group


def host_values(values: dict) -> dict:
    """A log entry with its tensor values read back to the host in one device sync (0-d -> float,
    vectors -> lists of floats); other values unchanged."""
    keys = [k for k, v in values.items() if isinstance(v, torch.Tensor)]
    if not keys:
        return dict(values)
    flat = torch.cat([values[k].detach().reshape(-1).double() for k in keys]).tolist()  # exact for fp32/fp64
    out, i = dict(values), 0
    for k in keys:
        n = values[k].numel()
        out[k] = flat[i:i + n] if values[k].dim() > 0 else flat[i]
        i += n
    return out


class Checkpoint:
    """A resumable run's file: the trainable nets (not the frozen GAN), optimiser states, each
    image's state (its pool only while step 3 still needs it), random generators, the log, and
    the identity of the run (resolved configuration and input fingerprint)."""

    def __init__(self, path: str | Path | None, identity: dict):
        self.path = Path(path) if path is not None else None
        self.identity = identity

    def load(self) -> dict | None:
        """The saved run, or None when there is none or it belongs to another run (then it is removed)."""
        if self.path is None or not self.path.exists():
            return None
        saved = safe_torch_load(self.path)
        if not isinstance(saved, dict) or "cursor" not in saved:
            raise CheckpointError(f"{self.path}: not a training checkpoint")
        differs = [key for key, v in self.identity.items() if saved.get("identity", {}).get(key) != v]
        if differs:
            log.warning("%s: made by another run (different %s); starting afresh", self.path, ", ".join(differs))
            self.path.unlink()
            return None
        return saved

    def restore(self, saved: dict, trainer: Trainer, group: Group, persistent: dict | None):
        group.model.load_state_dict(saved["model"])
        for st, d in zip(group.states, saved["targets"]):
            st.load_state_dict(d)
        for g, s in zip(group.unique_gens(), saved["rng"]):
            g.set_state(s)
        torch.set_rng_state(saved["torch_rng"])
        if persistent is not None and saved["persistent"]:
            for step, sd in saved["persistent"].items():
                trainer.optimizers(step, group, persistent)["all"].load_state_dict(sd)
        log.info("%s: resuming at iteration %d", self.path, saved["iteration"])
        return tuple(saved["cursor"]), saved["iteration"], saved["log"], saved["elapsed"], saved["optimizers"]

    def save(self, cursor, trainer: Trainer, group: Group, opts: dict, persistent: dict | None, logs,
             elapsed: float, global_it: int, keep_pools: bool, extra: dict | None = None) -> None:
        """Write the run atomically; ``extra``: what else the loop needs to resume (joint streams)."""
        atomic_torch_save({
            "identity": self.identity, "cursor": list(cursor), "iteration": global_it, "names": group.names,
            "model": group.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in opts.items()},
            "persistent": None if persistent is None else {k: o.state_dict() for k, o in persistent.items()},
            "targets": [s.state_dict(keep_pool=keep_pools) for s in group.states],
            "rng": [g.get_state() for g in group.unique_gens()], "torch_rng": torch.get_rng_state(),
            "log": logs, "elapsed": elapsed, **({} if extra is None else {"extra": extra}),
        }, self.path)
