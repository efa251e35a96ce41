"""K images' instance-specific GAN2Shape runs trained in one process, as one batch (DESIGN
"Performance design").

Each image keeps its own networks D, A, V, L, E; their parameters are stacked along a leading
image axis (:class:`StackedNet`: ``torch.func.stack_module_state`` + ``vmap(functional_call)``),
while the frozen StyleGAN2, its discriminator, the perceptual net and the renderer are shared:
one generator call makes the K×N_p projected samples, one renderer call the K×N_p pseudo
samples. The step forwards are :class:`~gan2shape.method.trainer.GAN2Shape`'s own, with per-image
losses; the backward pass takes the *sum* of the K per-image losses, so image i's parameters get
exactly the gradient of image i's loss, and one Adam (elementwise, classic L2 weight decay) over
the stacked parameters is K independent Adams.

Random numbers: image i draws its pseudo-sample views/lights and its pool shuffles from its own
``torch.Generator`` seeded like :meth:`Trainer.fit` seeds it, so a batched run equals K
sequential :meth:`Trainer.fit` runs up to floating-point rounding.

``fast=True`` (throughput mode) allows TF32 matmuls/convolutions and runs the frozen GAN
(generator and discriminator features) under bf16 autocast; the default is exact fp32.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
import torch.nn as nn
from torch.func import functional_call, stack_module_state, vmap

from .sampling import CanonicalState, ProjectionPool
from .trainer import (NET_NAMES, STEP_NETS, FitResult, GAN2Shape, Phase, Target, Trainer,
                      phases_of)

__all__ = ["StackedNet", "StackedGAN2Shape", "BatchedTrainer", "BatchedFitResult", "stack_targets"]


# --------------------------------------------------------------------------------------------
# Per-image networks with stacked parameters
# --------------------------------------------------------------------------------------------

class StackedNet(nn.Module):
    """K copies of one network, parameters stacked on a leading image axis.

    ``forward`` takes a K-major batch ``(K·B)×...`` (image i's B inputs consecutive) and applies
    copy i to image i's chunk, with ``vmap`` over the image axis. Nets must not keep running
    statistics (no BatchNorm); the GAN2Shape nets use Conv/ConvTranspose/GroupNorm only.
    """

    def __init__(self, net: nn.Module, k: int):
        super().__init__()
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
            raise ValueError("StackedNet does not support BatchNorm (its batch statistics would mix images)")
        self.k = k
        params, buffers = stack_module_state([net] * k)
        self.param_names = list(params)
        self.buffer_names = list(buffers)
        self.stacked = nn.ParameterList([nn.Parameter(params[n].detach().clone()) for n in self.param_names])
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"buffer{i}", buffers[n].clone())
        self.base = [copy.deepcopy(net).to("meta")]  # structure only; not a submodule

    def _buffers_dict(self) -> dict:
        return {n: getattr(self, f"buffer{i}") for i, n in enumerate(self.buffer_names)}

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base[0], (params, buffers), (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.k:
            raise ValueError(f"a batch of {x.shape[0]} does not split into {self.k} images")
        params = dict(zip(self.param_names, self.stacked))
        out = vmap(self._call)(params, self._buffers_dict(), x.unflatten(0, (self.k, -1)))
        return out.flatten(0, 1)

    def image_state(self, i: int) -> dict[str, torch.Tensor]:
        """The state_dict of image ``i``'s copy (the plain network's keys)."""
        sd = {n: p[i].detach().clone() for n, p in zip(self.param_names, self.stacked)}
        sd.update({n: b[i].clone() for n, b in self._buffers_dict().items()})
        return sd


class _Autocast(nn.Module):
    """A frozen net whose ``forward`` and ``features`` run under bf16 autocast; outputs float32."""

    def __init__(self, net: nn.Module, device_type: str):
        super().__init__()
        self.net = [net]  # shared, not a submodule
        self.device_type = device_type

    @staticmethod
    def _float(x):
        if isinstance(x, torch.Tensor):
            return x.float()
        if isinstance(x, (list, tuple)):
            return type(x)(_Autocast._float(v) for v in x)
        return x

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self._float(self.net[0](*args, **kwargs))

    def features(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self._float(self.net[0].features(*args, **kwargs))


class StackedGAN2Shape(GAN2Shape):
    """A :class:`GAN2Shape` whose five nets are :class:`StackedNet` s of K images; the frozen
    components, the renderer, the latent-offset mapper and the view/light distributions are
    those of ``model`` (shared). Its step forwards take a K-image target (:func:`stack_targets`)."""

    def __init__(self, model: GAN2Shape, k: int, fast: bool = False):
        nn.Module.__init__(self)
        self.cfg = model.cfg
        self.k = k
        self.nets = nn.ModuleDict({n: StackedNet(model.nets[n], k) for n in NET_NAMES})
        self.renderer = model.renderer
        frozen = dict(model._frozen)
        if fast:
            dev = model.device.type
            frozen["G"] = _Autocast(frozen["G"], dev)
            frozen["Dgan"] = _Autocast(frozen["Dgan"], dev)
        self._frozen = frozen
        self.mapper = model.mapper
        self.viewlight = model.viewlight
        self.register_buffer("view_mean", model.view_mean.clone())
        self.register_buffer("light_mean", model.light_mean.clone())
        self.to(model.device)

    def image_state(self, i: int) -> dict:
        """Image ``i``'s networks in the official pretrain layout (netD, netA, netV, netL, netEnc)."""
        return {n: self.nets[n].image_state(i) for n in NET_NAMES}


def stack_targets(targets: Sequence[Target]) -> Target:
    """One :class:`Target` holding K images (tensors concatenated in list order; ``scene`` a list).

    Masks, priors, ground truths and GAN images must be given for all images or for none; with a
    crop all images must have the same original size (post-processing is shared)."""
    def cat(attr):
        vals = [getattr(t, attr) for t in targets]
        if all(v is None for v in vals):
            return None
        if any(v is None for v in vals):
            missing = [t.name for t, v in zip(targets, vals) if v is None]
            raise ValueError(f"{attr} is given for some images but not for {missing}; give it for all or none")
        return torch.cat(vals)

    latents = [t.latent for t in targets]
    if len({tuple(w.shape) for w in latents}) > 1:
        raise ValueError(f"latents of different shapes: {[tuple(w.shape) for w in latents]}")
    return Target(name=",".join(t.name for t in targets), image=cat("image"), latent=cat("latent"),
                  mask=cat("mask"), prior=cat("prior"), gt_depth=cat("gt_depth"),
                  origin_size=targets[0].origin_size, gan_image=cat("gan_image"),
                  scene=[t.scene for t in targets])


# --------------------------------------------------------------------------------------------
# The batched trainer
# --------------------------------------------------------------------------------------------

@dataclass
class BatchedFitResult(FitResult):
    """A :class:`FitResult` of K independent runs: ``logs[i]`` is image i's log (``log`` holds all
    entries with an ``image`` key); ``states[i]`` image i's trained nets (official layout)."""

    logs: list[list[dict]] = field(default_factory=list)
    states: list[dict] = field(default_factory=list)

    def image(self, i: int) -> FitResult:
        """Image ``i``'s result, as :meth:`Trainer.fit` on that image alone returns it (``seconds``:
        the run's time divided by K)."""
        sl = slice(i, i + 1)
        return FitResult(names=[self.names[i]], depth=self.depth[sl], recon_depth=self.recon_depth[sl],
                         albedo=self.albedo[sl], normals=self.normals[sl], recon=self.recon[sl], view=self.view[sl],
                         light=self.light[sl], metrics=[self.metrics[i]], log=self.logs[i],
                         seconds=self.seconds / len(self.names), iterations=self.iterations,
                         interrupted=self.interrupted)


@dataclass
class _BatchState:
    """The K images' training state: stacked canonical state and masks, one pool per image."""

    names: list[str]
    pools: list[ProjectionPool]
    canonical: CanonicalState | None = None
    canon_mask: torch.Tensor | None = None
    last_metrics: list | None = None


class BatchedTrainer(Trainer):
    """Runs :meth:`Trainer.fit`'s instance-specific schedule on K images at once, as K independent
    models (same initial weights, per-image depth pre-fit, same schedule, losses and optimisers).

    ``load_pretrain`` / ``reset`` / the reset snapshot are :class:`Trainer`'s. ``fast``: TF32 and
    bf16 autocast of the frozen GAN (throughput mode); the default is exact fp32.
    """

    def __init__(self, model: GAN2Shape, log_every: int = 50, progress: bool = False, on_log=None,
                 fast: bool = False):
        super().__init__(model, log_every=log_every, progress=progress, on_log=on_log)
        self.fast = fast
        self.stacked: StackedGAN2Shape | None = None

    @contextlib.contextmanager
    def _precision(self):
        if not self.fast:
            yield
            return
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    def prepare(self, targets: Sequence[Target]) -> tuple[Target, list[Target]]:
        """Reset the weights, build the K-image model and the stacked target (G(w) of each image)."""
        targets = list(targets)
        if not targets:
            raise ValueError("no targets")
        m, c = self.model, self.cfg
        dev = m.device
        self.reset()
        targets = [t.to(dev) for t in targets]
        if c.crop is not None and len({t.origin_size for t in targets}) > 1:
            raise ValueError(f"with crop={c.crop} all images need the same original size, got "
                             f"{sorted({t.origin_size for t in targets}, key=str)}")
        for t in targets:
            t.gan_image = m.gan_image(t)
        self.stacked = StackedGAN2Shape(m, len(targets), fast=self.fast)
        return stack_targets(targets), targets

    def fit(self, targets: Sequence[Target]) -> BatchedFitResult:
        """Train each image's own model through the schedule, all images in lockstep."""
        m, c = self.model, self.cfg
        target, targets = self.prepare(targets)
        k = len(targets)
        need_prior = not self.pretrained_depth and c.prior_iters > 0
        if need_prior and target.prior is None:
            raise ValueError(f"{target.name}: no pretrained depth net and no prior to pre-fit it to")
        gens = [torch.Generator().manual_seed(c.seed) for _ in targets]
        st = _BatchState(names=[t.name for t in targets], pools=[ProjectionPool(m.device) for _ in targets])
        persistent = {} if c.optimizers == "persistent" else None
        phases = phases_of(c.schedule, c.prior_iters if need_prior else 0)
        logs: list[list[dict]] = [[] for _ in targets]
        global_it, t0 = 0, time.perf_counter()
        pbar = None
        if self.progress:
            from tqdm import tqdm
            pbar = tqdm(total=sum(p.n for p in phases), desc=f"{k} images", unit="it")
        with self._precision():
            for phase in phases:
                opts = self._optimizers(phase.step, persistent, self.stacked)
                for it in range(phase.n):
                    per_image = self.iteration(phase, target, st, opts, gens)
                    global_it += 1
                    if pbar is not None:
                        pbar.update(1)
                    if global_it % self.log_every == 0 or it == phase.n - 1:
                        for t, lg, terms in zip(targets, logs, per_image):
                            entry = {"iteration": global_it, "stage": phase.stage, "step": phase.step, **terms}
                            lg.append(entry)
                            if self.on_log:
                                self.on_log({"image": t.name, **entry})
                if phase.step == 2:
                    self.collect(target, st, gens)
        if pbar is not None:
            pbar.close()
        return self._batched_result(target, targets, st, logs, time.perf_counter() - t0, global_it)

    # -- one iteration of a phase on all K images ---------------------------------------------------
    def iteration(self, phase: Phase, target: Target, st: _BatchState, opts: dict,
                  gens: list[torch.Generator]) -> list[dict]:
        """One gradient iteration of ``phase`` for the K images; returns each image's logged terms."""
        sm, c = self.stacked, self.cfg
        k, n = sm.k, c.batchsize
        if phase.step == 0:
            depth = sm.predict_depth(target.image, border=False)
            loss = (depth - target.prior).pow(2).flatten(1).mean(1)  # F.mse_loss of each image
            terms = {"prior_mse": loss.detach().tolist()}
        elif phase.step == 1:
            out = sm.step1(target, flip=phase.flip, grad_nets=STEP_NETS[1], per_image=True)
            loss, terms = out.loss, dict(out.losses)
            # canonical mask: from the first step-1 iteration, then refreshed by step 3 (METHOD §3.5)
            if c.use_mask and target.mask is not None and st.canon_mask is None:
                st.canon_mask = sm.canonical_mask(target, out.depth, out.view).detach()
            st.canonical = CanonicalState(out.depth[:k], out.albedo[:k], out.normals[:k], out.k_a[:k],
                                          out.k_d[:k]).detach()
            st.last_metrics = out.image_metrics
        elif phase.step == 2:
            state = replace(st.canonical, canon_mask=st.canon_mask if c.use_mask else None)
            loss, terms, proj, pmask = sm.step2(target, state, gens, per_image=True)
            if c.step3_pool == "last_batch":
                for i, pool in enumerate(st.pools):
                    pool.start()
                    pool.add(proj[i * n:(i + 1) * n], pmask[i * n:(i + 1) * n])
                    pool.finish()
        else:
            if c.step3_pool == "last_batch":
                batches = [(pool.images, pool.masks) for pool in st.pools]
            else:
                batches = [pool.next_batch(n, g) for pool, g in zip(st.pools, gens)]
            proj, pmask = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
            loss, terms, s1 = sm.step3(target, proj, pmask, flip=phase.flip, per_image=True)
            if c.use_mask and target.mask is not None:
                st.canon_mask = sm.canonical_mask(target, s1.depth, s1.view).detach()
            st.last_metrics = s1.image_metrics
        losses = loss.detach().tolist()
        bad = [name for name, v in zip(st.names, losses) if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"{', '.join(bad)}: loss is not finite in stage {phase.stage} step {phase.step}")
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        loss.sum().backward()  # image i's parameters get the gradient of image i's loss only
        for o in opts.values():
            o.step()
        logs = [{**{key: v[i] for key, v in terms.items()}, "loss": losses[i]} for i in range(k)]
        if phase.step in (1, 3) and st.last_metrics:  # ground-truth accuracy of this forward, as Trainer logs it
            for e, m in zip(logs, st.last_metrics):
                e.update(side=m["side"], mad=m["mad"])
        return logs

    @torch.no_grad()
    def collect(self, target: Target, st: _BatchState, gens: list[torch.Generator]) -> None:
        """After step 2: ``collect_iters`` no-grad step-2 forwards fill each image's pool (METHOD §5.6)."""
        c = self.cfg
        if c.step3_pool == "last_batch":
            return
        n = c.batchsize
        for pool in st.pools:
            pool.start()
        state = replace(st.canonical, canon_mask=st.canon_mask if c.use_mask else None)
        for _ in range(c.collect_iters):
            _, _, proj, pmask = self.stacked.step2(target, state, gens, per_image=True)
            for i, pool in enumerate(st.pools):
                pool.add(proj[i * n:(i + 1) * n], pmask[i * n:(i + 1) * n])
        for pool in st.pools:
            pool.finish()

    @torch.no_grad()
    def predict(self, target: Target) -> dict:
        """Final per-image predictions of the K-image model for the stacked ``target``."""
        out = self.stacked.step1(target, flip=False, per_image=True)
        k = self.stacked.k
        return {"depth": out.depth, "recon_depth": out.recon_depth, "albedo": out.albedo, "normals": out.normals,
                "recon": out.recon, "view": out.view, "light": out.light,
                "metrics": out.image_metrics or [None] * k}

    def _batched_result(self, target, targets, st, logs, seconds, iterations) -> BatchedFitResult:
        p = self.predict(target)
        metrics = []
        for i, final in enumerate(p["metrics"]):
            d = {}
            if st.last_metrics:
                d.update(st.last_metrics[i])
            if final:
                d.update({f"final_{key}": v for key, v in final.items()})
            metrics.append(d)
        merged = sorted(({"image": t.name, **e} for t, lg in zip(targets, logs) for e in lg),
                        key=lambda e: e["iteration"])
        return BatchedFitResult(names=[t.name for t in targets], depth=p["depth"].cpu(),
                                recon_depth=p["recon_depth"].cpu(), albedo=p["albedo"].cpu(),
                                normals=p["normals"].cpu(), recon=p["recon"].cpu(), view=p["view"].cpu(),
                                light=p["light"].cpu(), metrics=metrics, log=merged, seconds=seconds,
                                iterations=iterations, logs=logs,
                                states=[self.stacked.image_state(i) for i in range(len(targets))])
