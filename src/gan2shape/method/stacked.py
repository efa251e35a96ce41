"""K independent models in one batch: per-image networks with stacked parameters (docs/design.md
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

``fast=True`` (the fast mode, :func:`fast_view` for a shared model): the frozen GAN (generator,
discriminator features, perceptual net) runs under bf16 autocast with the efficient StyleGAN2 ops
(:func:`~gan2shape.gan.stylegan2.efficient_ops`) and channels-last inputs, the encoders netEnc,
netV, netL under bf16 autocast, everything else (depth and albedo nets, normals, rasterisation,
losses, optimiser) in fp32; the steps make no host syncs (``sync_free``). The trainer adds TF32
and cuDNN autotuning. The default is exact fp32.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
from torch.func import functional_call, stack_module_state, vmap

from ..gan.stylegan2 import efficient_ops
from .config import NET_NAMES
from .model import GAN2Shape, Target

__all__ = ["StackedNet", "StackedGAN2Shape", "stack_targets", "fast_view", "fast_frozen"]


# --------------------------------------------------------------------------------------------
# Per-image networks with stacked parameters
# --------------------------------------------------------------------------------------------

class StackedNet(nn.Module):
    """K copies of one network, parameters stacked on a leading image axis.

    ``forward`` takes a K-major batch ``(K·B)×...`` (image i's B inputs consecutive) and applies
    copy i to image i's chunk, with ``vmap`` over the image axis. Nets must not keep running
    statistics (no BatchNorm); the GAN2Shape nets use Conv/ConvTranspose/GroupNorm only.
    """

    vmapped = True  # applied through vmap (see GAN2Shape.encode)

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
    """A frozen net whose ``forward`` and ``features`` run under bf16 autocast (unless ``bf16`` is
    False: the diagnostic fast mode without bf16) with the efficient StyleGAN2 ops (image inputs
    channels-last on CUDA); outputs float32."""

    def __init__(self, net: nn.Module, device_type: str, bf16: bool = True):
        super().__init__()
        self.net = [net]  # shared, not a submodule
        self.device_type = device_type
        self.bf16 = bf16

    @staticmethod
    def _float(x):
        if isinstance(x, torch.Tensor):
            return x.float()
        if isinstance(x, (list, tuple)):
            return type(x)(_Autocast._float(v) for v in x)
        return x

    def _args(self, args):
        if self.device_type != "cuda":
            return args
        return tuple(a.contiguous(memory_format=torch.channels_last)
                     if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in args)

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16), efficient_ops():
            return self._float(self.net[0](*self._args(args), **kwargs))

    def features(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16), efficient_ops():
            return self._float(self.net[0].features(*self._args(args), **kwargs))

    def __getattr__(self, name):  # the wrapped net's attributes (style_dim, n_latent, ...)
        try:
            return super().__getattr__(name)
        except AttributeError:
            if "net" not in self.__dict__:
                raise
            return getattr(self.__dict__["net"][0], name)


def fast_frozen(model: GAN2Shape, bf16: bool = True) -> dict:
    """``model``'s frozen components wrapped for the fast mode (bf16 autocast, efficient ops)."""
    dev = model.device.type
    return {key: (None if m is None else _Autocast(m, dev, bf16)) for key, m in model._frozen.items()}


def fast_view(model: GAN2Shape, bf16: bool = True) -> GAN2Shape:
    """The fast mode of a shared model: a shallow copy sharing its networks, buffers, renderer and
    frozen nets, with the frozen nets wrapped (:func:`fast_frozen`), bf16 encoders and no host syncs
    (``bf16=False``: the diagnostic fast mode without bf16, everything else kept)."""
    view = copy.copy(model)  # the module dicts are shared: training the view trains ``model``
    view._frozen = fast_frozen(model, bf16)
    view.amp = model.device.type if bf16 else None
    view.sync_free = True
    return view


class StackedGAN2Shape(GAN2Shape):
    """A :class:`GAN2Shape` whose five nets are :class:`StackedNet` s of K images; the frozen
    components, the renderer, the latent-offset mapper and the view/light distributions are
    those of ``model`` (shared). Its step forwards take a K-image target (:func:`stack_targets`)."""

    def __init__(self, model: GAN2Shape, k: int, fast: bool = False, bf16: bool = True):
        nn.Module.__init__(self)
        self.cfg = model.cfg
        self.k = k
        self.nets = nn.ModuleDict({n: StackedNet(model.nets[n], k) for n in NET_NAMES})
        self.renderer = model.renderer
        self._frozen = fast_frozen(model, bf16) if fast else dict(model._frozen)
        self.amp = model.device.type if fast and bf16 else None
        self.sync_free = fast
        self.mapper = model.mapper
        self.viewlight = model.viewlight
        self.projection_hook = model.projection_hook
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
