"""StyleGAN2 generator and discriminator in the rosinality ``stylegan2-pytorch`` layout.

Pure PyTorch (no custom CUDA ops), CPU and GPU. State-dict keys and shapes are those of the
official rosinality checkpoints (``g_ema`` / ``d``), so released files load with ``strict=True``.

Generation API (GAN2Shape fork semantics, numerics of rosinality's model):

``image, latents = G(styles, input_is_w=False, truncation=1.0, truncation_latent=None,
noise=None, randomize_noise=False, return_latents=False, inject_index=None)``

* ``styles``: a list of tensors (as rosinality) or a single tensor. A ``B×style_dim`` tensor is
  one code per image, broadcast to all ``n_latent`` style inputs; a ``B×n_latent×style_dim``
  tensor is a W+ code (only with ``input_is_w=True``). Two list entries = style mixing at
  ``inject_index`` (random in ``[1, n_latent-1]`` when None, as rosinality).
* ``input_is_w=False``: the codes are Z and go through the mapping network ``G.style`` first.
* truncation: ``w = truncation_latent + truncation * (w - truncation_latent)`` (skipped when
  ``truncation == 1``).
* noise: default (``noise=None, randomize_noise=False``) uses the stored buffers
  ``G.noises.noise_i`` (fixed noise: same W -> same image); ``randomize_noise=True`` draws fresh
  N(0, 1) noise; an explicit list of ``num_layers`` tensors (or None entries) overrides both.
* returns ``(image B×3×size×size, latent B×n_latent×style_dim or None)``.

Mapping-network partial forward: ``G.style_forward(x, skip, depth)`` applies module i of
``G.style = [PixelNorm, EqualLinear × n_mlp]`` iff ``skip <= i < depth``.

Discriminator: ``D(x)`` -> logits ``B×1`` (x must be ``size×size``); ``D.features(x, n)`` -> the
outputs of the first ``n`` residual blocks (any input resolution divisible by ``2**n``).

Checkpoint I/O: :func:`load_stylegan2`, :func:`save_stylegan2` (official dict format), and
:func:`load_latent` / :func:`save_latent` for per-image W codes.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..io import CheckpointError, atomic_torch_save, safe_torch_load

__all__ = [
    "upfirdn2d", "upfirdn2d_ref", "efficient_ops", "fused_leaky_relu", "make_kernel", "channel_table",
    "PixelNorm", "EqualLinear", "EqualConv2d", "FusedLeakyReLU", "Blur", "Upsample",
    "ModulatedConv2d", "NoiseInjection", "ConstantInput", "StyledConv", "ToRGB", "Generator",
    "ConvLayer", "ResBlock", "Discriminator",
    "StyleGAN2Checkpoint", "load_stylegan2", "save_stylegan2", "load_latent", "save_latent",
]

SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------------------------
# Pure-PyTorch ops
# ----------------------------------------------------------------------------------------------

def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2,
                     scale: float = SQRT2) -> torch.Tensor:
    """``scale * leaky_relu(x + bias)``; ``bias`` (C,) broadcasts over dim 1 of ``x``."""
    shape = [1, bias.shape[0]] + [1] * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), negative_slope=negative_slope) * scale


_EFFICIENT = [False]  # efficient_ops() switch (a list: a module-level mutable flag)


@contextlib.contextmanager
def efficient_ops(enabled: bool = True):
    """Within the block, :func:`upfirdn2d` and :class:`ModulatedConv2d` use their efficient
    formulations (depthwise/transposed FIR convolutions; modulation of the activations instead of
    per-sample grouped weights, channels-last on CUDA). Same results as the reference up to
    floating-point rounding (tests/test_fast.py); the fast mode turns it on."""
    saved = _EFFICIENT[0]
    _EFFICIENT[0] = enabled
    try:
        yield
    finally:
        _EFFICIENT[0] = saved


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: Sequence[int] = (0, 0)) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter (true convolution, i.e. flipped kernel), downsample.

    ``x``: B×C×H×W; ``kernel``: kh×kw; ``pad``: (p0, p1) for both axes or (x0, x1, y0, y1);
    negative pads crop. Output side: ``(H*up + p0 + p1 - kh) // down + 1``.
    :func:`upfirdn2d_ref` is the reference; under :func:`efficient_ops` one depthwise convolution
    (a stride-``up`` transposed convolution when upsampling) replaces zero insertion and the
    (B·C)×1-channel convolution.
    """
    if not _EFFICIENT[0]:
        return upfirdn2d_ref(x, kernel, up, down, pad)
    return upfirdn2d_depthwise(x, kernel, up, down, pad)


def _pads(pad: Sequence[int]) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from (p0, p1) for both axes or (x0, x1, y0, y1)."""
    if len(pad) == 2:
        return pad[0], pad[1], pad[0], pad[1]
    if len(pad) == 4:
        return tuple(pad)
    raise ValueError(f"pad must have 2 or 4 entries, got {pad}")


def upfirdn2d_depthwise(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
                        pad: Sequence[int] = (0, 0)) -> torch.Tensor:
    """:func:`upfirdn2d` as one depthwise (transposed) convolution with ``groups = C``."""
    px0, px1, py0, py1 = _pads(pad)
    c = x.shape[1]
    kh, kw = kernel.shape
    dtype = x.dtype if not torch.is_autocast_enabled(x.device.type) else torch.get_autocast_dtype(x.device.type)
    if up > 1:
        # zero insertion + pad + FIR = a stride-up transposed convolution with the (unflipped) kernel,
        # its full output cropped/padded: out[o] = full[o + kh - 1 - p0]
        w = kernel.to(dtype).view(1, 1, kh, kw).expand(c, 1, kh, kw)
        out = F.conv_transpose2d(x.to(dtype), w, stride=up, groups=c)
        out = F.pad(out, (px0 - kw + 1, up + px1 - kw, py0 - kh + 1, up + py1 - kh))
    else:
        w = torch.flip(kernel, [0, 1]).to(dtype).view(1, 1, kh, kw).expand(c, 1, kh, kw)
        out = F.conv2d(F.pad(x.to(dtype), (px0, px1, py0, py1)), w, groups=c)
    if down > 1:
        out = out[:, :, ::down, ::down]
    return out


def upfirdn2d_ref(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: Sequence[int] = (0, 0)) -> torch.Tensor:
    """The reference: upsample (zero insertion), pad, FIR-filter (true convolution, i.e. flipped kernel), downsample.

    ``x``: B×C×H×W; ``kernel``: kh×kw; ``pad``: (p0, p1) for both axes or (x0, x1, y0, y1);
    negative pads crop. Output side: ``(H*up + p0 + p1 - kh) // down + 1``.
    """
    px0, px1, py0, py1 = _pads(pad)
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    out = x.reshape(b * c, 1, h, w)
    if up > 1:
        # zero insertion: sample i lands at i*up, followed by up-1 zeros
        z = out.new_zeros(b * c, 1, h * up, w * up)
        z[:, :, ::up, ::up] = out
        out = z
    # positive pads add zeros, negative pads crop
    out = F.pad(out, (max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)))
    hh, ww = out.shape[-2:]
    out = out[:, :, max(-py0, 0): hh - max(-py1, 0), max(-px0, 0): ww - max(-px1, 0)]
    weight = torch.flip(kernel, [0, 1]).view(1, 1, kh, kw).to(out.dtype)
    out = F.conv2d(out, weight)
    if down > 1:
        out = out[:, :, ::down, ::down]
    return out.reshape(b, c, out.shape[-2], out.shape[-1])


def make_kernel(k: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Separable 1D taps -> normalised 2D kernel (outer product / sum); 2D input is normalised."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def channel_table(channel_multiplier: int = 2, channel_max: int = 512) -> dict[int, int]:
    """Feature channels per resolution (official table, capped at ``channel_max``)."""
    cm = channel_multiplier
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm,
            512: 32 * cm, 1024: 16 * cm}
    return {r: int(min(channel_max, c)) for r, c in base.items()}


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------

class PixelNorm(nn.Module):
    """x / sqrt(mean(x², last dim) + 1e-8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x ** 2, dim=-1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Equalised-lr linear layer: runtime weight = w·lr_mul/√in, bias = b·lr_mul."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: Any = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = (1.0 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            if self.bias is not None:
                out = out + self.bias * self.lr_mul
            return F.leaky_relu(out, negative_slope=0.2) * SQRT2
        bias = self.bias * self.lr_mul if self.bias is not None else None
        return F.linear(x, self.weight * self.scale, bias=bias)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, "
                f"activation={self.activation}")


class EqualConv2d(nn.Module):
    """Equalised-lr conv: runtime weight = w/√(in·k·k)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride,
                        padding=self.padding)


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU(0.2) × √2 (parameter ``bias``)."""

    def __init__(self, channel: int, bias: bool = True, negative_slope: float = 0.2,
                 scale: float = SQRT2):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return F.leaky_relu(x, negative_slope=self.negative_slope) * self.scale
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


class Blur(nn.Module):
    """FIR filter with padding (buffer ``kernel``, multiplied by factor² after an upsampling)."""

    def __init__(self, kernel: Sequence[float], pad: Sequence[int], upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * (upsample_factor ** 2)
        self.register_buffer("kernel", k)
        self.pad = tuple(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """×factor upsampling by zero insertion + FIR (buffer ``kernel`` × factor²)."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * (factor ** 2))
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, down=1, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated conv, weight [1,out,in,k,k]; optional demodulation, ×2 up or down."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.eps = 1e-8
        self.kernel_size = kernel_size
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.upsample = upsample
        self.downsample = downsample
        factor = 2
        if upsample:
            # transposed conv (stride 2) then blur
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1),
                             upsample_factor=factor)
        if downsample:
            # blur then stride-2 conv
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
        self.demodulate = demodulate

    def extra_repr(self) -> str:
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, "
                f"upsample={self.upsample}, downsample={self.downsample}, demodulate={self.demodulate}")

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if _EFFICIENT[0]:
            return self.forward_activations(x, style)
        return self.forward_ref(x, style)

    def forward_activations(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Efficient form (StyleGAN2-ADA's non-fused modulation): scale the input channels by the
        style, convolve the whole batch with the shared weight, scale the output channels by the
        demodulation coefficients. Equal to :meth:`forward_ref` up to rounding; one dense
        convolution instead of a B-group one (tensor cores, channels-last on CUDA)."""
        b = x.shape[0]
        s = self.modulation(style)                                   # B×Cin
        weight = self.scale * self.weight[0]                         # Cout×Cin×k×k
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        x = x * s.view(b, -1, 1, 1).to(x.dtype)
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), padding=0, stride=2)
        elif self.downsample:
            out = F.conv2d(self.blur(x), weight, padding=0, stride=2)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # d[b, o] = rsqrt(Σ_{i,kh,kw} (scale·W[o,i]·s[b,i])² + eps), in fp32
            wsq = weight.float().pow(2).sum([2, 3])                  # Cout×Cin
            d = torch.rsqrt(s.float().pow(2) @ wsq.t() + self.eps)   # B×Cout
            out = out * d.view(b, -1, 1, 1).to(out.dtype)
        return self.blur(out) if self.upsample else out

    def forward_ref(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The reference (rosinality's fused modulation): per-sample weights, grouped convolution."""
        b, cin, h, w = x.shape
        k = self.kernel_size
        # modulate the weight per sample, then demodulate (unit norm per output channel)
        s = self.modulation(style).view(b, 1, cin, 1, 1)
        weight = self.scale * self.weight * s
        if self.demodulate:
            d = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + self.eps)
            weight = weight * d.view(b, self.out_channel, 1, 1, 1)
        if self.upsample:
            x = x.view(1, b * cin, h, w)
            weight = weight.transpose(1, 2).reshape(b * cin, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=b)
            out = out.view(b, self.out_channel, out.shape[-2], out.shape[-1])
            return self.blur(out)
        weight = weight.view(b * self.out_channel, cin, k, k)
        if self.downsample:
            x = self.blur(x)
            x = x.view(1, b * cin, x.shape[-2], x.shape[-1])
            out = F.conv2d(x, weight, padding=0, stride=2, groups=b)
        else:
            x = x.view(1, b * cin, h, w)
            out = F.conv2d(x, weight, padding=self.padding, groups=b)
        return out.view(b, self.out_channel, out.shape[-2], out.shape[-1])


class NoiseInjection(nn.Module):
    """image + weight · noise (fresh N(0,1) when noise is None)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = image.shape
            noise = image.new_empty(b, 1, h, w).normal_()
        return image + self.weight * noise


class ConstantInput(nn.Module):
    """Learned 4×4 input tensor (``input``), repeated over the batch."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.input.repeat(x.shape[0], 1, 1, 1)


class StyledConv(nn.Module):
    """ModulatedConv2d -> NoiseInjection -> FusedLeakyReLU."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim,
                                    demodulate=demodulate, upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style)
        out = self.noise(out, noise=noise)
        return self.activate(out)


class ToRGB(nn.Module):
    """1×1 modulated conv (no demodulation) + bias, added to the upsampled skip image."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor,
                skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style)
        out = out + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# ----------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------

class Generator(nn.Module):
    """rosinality-layout StyleGAN2 generator with fixed-noise default and partial mapping forward."""

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), lr_mlp: float = 0.01,
                 channel_max: int = 512):
        super().__init__()
        log_size = int(math.log2(size))
        if size < 4 or 2 ** log_size != size:
            raise ValueError(f"Generator size must be a power of two >= 4, got {size}")
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channel_multiplier = channel_multiplier
        self.channel_max = channel_max
        self.blur_kernel = tuple(blur_kernel)
        self.lr_mlp = lr_mlp
        self.log_size = log_size
        self.num_layers = (log_size - 2) * 2 + 1
        self.n_latent = log_size * 2 - 2
        self.channels = channel_table(channel_multiplier, channel_max)

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu")
            for _ in range(n_mlp)])

        c4 = self.channels[4]
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False)

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = (i + 5) // 2
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, 2 ** r, 2 ** r))
        in_ch = c4
        for i in range(3, log_size + 1):
            out_ch = self.channels[2 ** i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, blur_kernel=blur_kernel))
            in_ch = out_ch

    # -- mapping network ---------------------------------------------------------------------
    def style_forward(self, x: torch.Tensor, skip: int = 0, depth: int | None = None) -> torch.Tensor:
        """Apply mapping module i (0 = PixelNorm, 1..n_mlp = FC) iff ``skip <= i < depth``."""
        depth = len(self.style) if depth is None else depth
        for i, layer in enumerate(self.style):
            if skip <= i < depth:
                x = layer(x)
        return x

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Z -> W through the whole mapping network."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n_latent_samples: int = 4096,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean (1×style_dim) of the mapping of ``n_latent_samples`` N(0, I) codes."""
        dev = self.input.input.device
        z = torch.randn(n_latent_samples, self.style_dim, generator=generator,
                        device=generator.device if generator is not None else dev)
        return self.style(z.to(dev)).mean(0, keepdim=True)

    def make_noise(self) -> list[torch.Tensor]:
        """Fresh per-layer noise maps: 4×4, then two per resolution 8..size."""
        dev = self.input.input.device
        noises = [torch.randn(1, 1, 4, 4, device=dev)]
        for i in range(3, self.log_size + 1):
            for _ in range(2):
                noises.append(torch.randn(1, 1, 2 ** i, 2 ** i, device=dev))
        return noises

    def stored_noise(self) -> list[torch.Tensor]:
        """The fixed noise buffers ``noises.noise_0 .. noise_{num_layers-1}``."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    # -- synthesis ---------------------------------------------------------------------------
    def forward(self, styles: torch.Tensor | Sequence[torch.Tensor], input_is_w: bool = False,
                truncation: float = 1.0, truncation_latent: torch.Tensor | None = None,
                noise: Sequence[torch.Tensor | None] | None = None, randomize_noise: bool = False,
                return_latents: bool = False, inject_index: int | None = None,
                input_is_latent: bool | None = None):
        """Generate images; see the module docstring. Returns ``(image, latent or None)``."""
        if input_is_latent is not None:  # rosinality's name
            input_is_w = input_is_latent
        if isinstance(styles, torch.Tensor):
            styles = [styles]
        styles = list(styles)
        if not 1 <= len(styles) <= 2:
            raise ValueError(f"expected 1 or 2 style tensors, got {len(styles)}")
        for s in styles:
            if s.ndim == 3 and not input_is_w:
                raise ValueError("B×n_latent×style_dim (W+) codes need input_is_w=True")
            if s.ndim not in (2, 3) or s.shape[-1] != self.style_dim:
                raise ValueError(f"style of shape {tuple(s.shape)}: expected B×{self.style_dim} "
                                 f"or B×{self.n_latent}×{self.style_dim}")
            if s.ndim == 3 and s.shape[1] != self.n_latent:
                raise ValueError(f"W+ code has {s.shape[1]} layers, generator needs {self.n_latent}")
        if not input_is_w:
            styles = [self.style(s) for s in styles]

        if noise is None:
            noise = [None] * self.num_layers if randomize_noise else self.stored_noise()
        elif len(noise) != self.num_layers:
            raise ValueError(f"noise list has {len(noise)} entries, expected {self.num_layers}")

        if truncation != 1:
            if truncation_latent is None:
                raise ValueError("truncation != 1 needs truncation_latent")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]

        if len(styles) == 1:
            s = styles[0]
            latent = s if s.ndim == 3 else s.unsqueeze(1).repeat(1, self.n_latent, 1)
        else:
            if any(s.ndim != 2 for s in styles):
                raise ValueError("style mixing takes two B×style_dim codes")
            if inject_index is None:
                inject_index = random.randint(1, self.n_latent - 1)
            latent = torch.cat([styles[0].unsqueeze(1).repeat(1, inject_index, 1),
                                styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)], 1)

        out = self.input(latent)
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for j, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * j](out, latent[:, i], noise=noise[2 * j + 1])
            out = self.convs[2 * j + 1](out, latent[:, i + 1], noise=noise[2 * j + 2])
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip, (latent if return_latents else None)


# ----------------------------------------------------------------------------------------------
# Discriminator
# ----------------------------------------------------------------------------------------------

class ConvLayer(nn.Sequential):
    """[Blur] + EqualConv2d + [FusedLeakyReLU]; indices match the official keys."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            factor = 2
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, padding=padding, stride=stride,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Two 3×3 convs (second one downsamples) plus 1×1 downsampled skip; (out + skip)/√2."""

    def __init__(self, in_channel: int, out_channel: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, activate=False, bias=False,
                              blur_kernel=blur_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return (out + self.skip(x)) / SQRT2


class Discriminator(nn.Module):
    """rosinality-layout residual discriminator with minibatch stddev and a feature trunk."""

    def __init__(self, size: int, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), channel_max: int = 512):
        super().__init__()
        log_size = int(math.log2(size))
        if size < 8 or 2 ** log_size != size:
            raise ValueError(f"Discriminator size must be a power of two >= 8, got {size}")
        self.size = size
        self.log_size = log_size
        self.channel_multiplier = channel_multiplier
        self.channel_max = channel_max
        self.channels = ch = channel_table(channel_multiplier, channel_max)
        convs: list[nn.Module] = [ConvLayer(3, ch[size], 1)]
        in_ch = ch[size]
        for i in range(log_size, 2, -1):
            out_ch = ch[2 ** (i - 1)]
            convs.append(ResBlock(in_ch, out_ch, blur_kernel))
            in_ch = out_ch
        self.convs = nn.Sequential(*convs)
        self.n_blocks = log_size - 2
        self.stddev_group = 4
        self.stddev_feat = 1
        self.final_conv = ConvLayer(in_ch + 1, ch[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch[4] * 4 * 4, ch[4], activation="fused_lrelu"),
            EqualLinear(ch[4], 1))

    def features(self, x: torch.Tensor, n: int = 4) -> list[torch.Tensor]:
        """Outputs of ResBlocks 1..n (from-RGB output excluded); stops after block n."""
        if not 1 <= n <= self.n_blocks:
            raise ValueError(f"features(n={n}): this discriminator has {self.n_blocks} ResBlocks")
        out = self.convs[0](x)
        feats = []
        for k in range(1, n + 1):
            out = self.convs[k](out)
            feats.append(out)
        return feats

    def forward(self, x: torch.Tensor, ftr_num: int | None = None):
        """Logits B×1; with ``ftr_num`` return ``features(x, ftr_num)`` instead (GAN2Shape API)."""
        if ftr_num is not None:
            return self.features(x, ftr_num)
        out = self.convs(x)
        b, c, h, w = out.shape
        # minibatch stddev over groups of min(B, 4) samples; group size must divide B
        group = min(b, self.stddev_group)
        while b % group:
            group -= 1
        f = self.stddev_feat
        sd = out.view(group, -1, f, c // f, h, w)
        sd = torch.sqrt(sd.var(0, unbiased=False) + 1e-8)
        sd = sd.mean([2, 3, 4], keepdim=True).squeeze(2)
        sd = sd.repeat(group, 1, h, w)
        out = torch.cat([out, sd], 1)
        out = self.final_conv(out)
        return self.final_linear(out.view(b, -1))


# ----------------------------------------------------------------------------------------------
# Checkpoint I/O
# ----------------------------------------------------------------------------------------------

@dataclass
class StyleGAN2Checkpoint:
    """A loaded official-format checkpoint (models in eval mode, frozen)."""
    generator: Generator
    discriminator: Discriminator | None
    latent_avg: torch.Tensor | None
    args: argparse.Namespace | None
    path: Path
    config: dict = field(default_factory=dict)


def _fmt_shape(s) -> str:
    return "[" + ",".join(str(int(v)) for v in s) + "]"


def _infer_arch(sd: dict, path: Path) -> dict:
    """Architecture (size, channel_multiplier, style_dim, n_mlp, channel_max) from a G state_dict."""
    arch: dict = {}
    mlp_idx = [int(m.group(1)) for k in sd if (m := re.fullmatch(r"style\.(\d+)\.weight", k))]
    if mlp_idx:
        arch["n_mlp"] = max(mlp_idx)
        arch["style_dim"] = int(sd[f"style.{min(mlp_idx)}.weight"].shape[1])
    elif "conv1.conv.modulation.weight" in sd:
        arch["style_dim"] = int(sd["conv1.conv.modulation.weight"].shape[1])
    rgb = {int(m.group(1)): sd[k].shape[2] for k in sd
           if (m := re.fullmatch(r"to_rgbs\.(\d+)\.conv\.weight", k))}
    if rgb:
        arch["size"] = 2 ** (max(rgb) + 3)
    else:
        noise = [sd[k].shape[-1] for k in sd if k.startswith("noises.noise_")]
        if noise:
            arch["size"] = int(max(noise))
    if "input.input" in sd:
        arch["channel_max"] = int(sd["input.input"].shape[1])
    if rgb and "channel_max" in arch:
        # smallest multiplier whose table reproduces every ToRGB width
        for cm in (1, 2, 4, 8, 16):
            table = channel_table(cm, arch["channel_max"])
            if all(table[2 ** (j + 3)] == c for j, c in rgb.items()):
                arch["channel_multiplier"] = cm
                break
    return arch


def _check_state(model: nn.Module, sd: Any, what: str, path: Path, arch: dict,
                 allow_missing_noise: bool) -> dict:
    """Compare ``sd`` to ``model``'s keys and shapes; fill missing noises or raise CheckpointError."""
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: '{what}' is a {type(sd).__name__}, expected a state_dict")
    ref = model.state_dict()
    bad_type = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    missing = [k for k in ref if k not in sd]
    unexpected = [k for k in sd if k not in ref]
    wrong = [f"{k}: checkpoint {_fmt_shape(sd[k].shape)}, model {_fmt_shape(ref[k].shape)}"
             for k in ref if k in sd and isinstance(sd[k], torch.Tensor) and sd[k].shape != ref[k].shape]
    noise_only = missing and all(k.startswith("noises.") for k in missing)
    if allow_missing_noise and noise_only and not (unexpected or wrong or bad_type):
        warnings.warn(f"{path}: '{what}' has no noises.* buffers; using fresh random noise, so "
                      f"generated images will not match the stored latents", stacklevel=3)
        sd = dict(sd)
        for k in missing:
            sd[k] = ref[k]
        return sd
    if missing or unexpected or wrong or bad_type:
        arch_s = ", ".join(f"{k}={v}" for k, v in arch.items())
        parts = [f"{path}: '{what}' does not match the expected architecture ({arch_s})"]
        for name, lst in (("missing keys", missing), ("unexpected keys", unexpected),
                          ("wrong shapes", wrong), ("non-tensor entries", bad_type)):
            if lst:
                more = f" (+{len(lst) - 5} more)" if len(lst) > 5 else ""
                parts.append(f"{name} ({len(lst)}): " + "; ".join(lst[:5]) + more)
        raise CheckpointError("\n  ".join(parts))
    return sd


def load_stylegan2(path: str | os.PathLike, size: int | None = None,
                   channel_multiplier: int | None = None, style_dim: int | None = None,
                   n_mlp: int | None = None, channel_max: int | None = None,
                   device: str | torch.device = "cpu",
                   load_discriminator: bool = True) -> StyleGAN2Checkpoint:
    """Load an official rosinality checkpoint (dict with 'g_ema', 'd', optional 'args', 'latent_avg').

    Architecture: explicit arguments, else ``args`` (size, channel_multiplier, latent, n_mlp,
    channel_max), else inferred from the ``g_ema`` state_dict. Loading is strict; only missing
    ``noises.*`` buffers are tolerated (with a warning).
    """
    path = Path(path)
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict with 'g_ema' (and 'd'), got {type(ckpt).__name__}")
    if "g_ema" not in ckpt:
        raise CheckpointError(f"{path}: no 'g_ema' entry; keys found: {sorted(map(str, ckpt))[:20]}")
    if load_discriminator and "d" not in ckpt:
        raise CheckpointError(f"{path}: no 'd' (discriminator) entry, which the step-2 loss needs; "
                              f"keys found: {sorted(map(str, ckpt))[:20]} "
                              f"(pass load_discriminator=False to load the generator only)")
    g_sd = ckpt["g_ema"]
    if not isinstance(g_sd, dict):
        raise CheckpointError(f"{path}: 'g_ema' is a {type(g_sd).__name__}, expected a state_dict")
    args = ckpt.get("args")
    if args is not None and not isinstance(args, argparse.Namespace):
        args = None

    inferred = _infer_arch({k: v for k, v in g_sd.items() if isinstance(v, torch.Tensor)}, path)
    from_args = {}
    if args is not None:
        for key, attr in (("size", "size"), ("channel_multiplier", "channel_multiplier"),
                          ("style_dim", "latent"), ("n_mlp", "n_mlp"), ("channel_max", "channel_max")):
            v = getattr(args, attr, None)
            if isinstance(v, int) and not isinstance(v, bool):
                from_args[key] = v
    given = dict(size=size, channel_multiplier=channel_multiplier, style_dim=style_dim,
                 n_mlp=n_mlp, channel_max=channel_max)
    defaults = dict(channel_multiplier=2, style_dim=512, n_mlp=8, channel_max=512)
    arch = {}
    for key in ("size", "channel_multiplier", "style_dim", "n_mlp", "channel_max"):
        for src in (given, from_args, inferred, defaults):
            if src.get(key) is not None:
                arch[key] = src[key]
                break
    if "size" not in arch:
        raise CheckpointError(f"{path}: cannot infer the generator size from 'g_ema'; pass size=")

    try:
        gen = Generator(arch["size"], style_dim=arch["style_dim"], n_mlp=arch["n_mlp"],
                        channel_multiplier=arch["channel_multiplier"], channel_max=arch["channel_max"])
    except ValueError as e:
        raise CheckpointError(f"{path}: invalid architecture {arch}: {e}") from e
    g_sd = _check_state(gen, g_sd, "g_ema", path, arch, allow_missing_noise=True)
    gen.load_state_dict(g_sd, strict=True)
    gen.to(device).eval().requires_grad_(False)

    disc = None
    if load_discriminator:
        d_arch = {k: arch[k] for k in ("size", "channel_multiplier", "channel_max")}
        disc = Discriminator(arch["size"], channel_multiplier=arch["channel_multiplier"],
                             channel_max=arch["channel_max"])
        d_sd = _check_state(disc, ckpt["d"], "d", path, d_arch, allow_missing_noise=False)
        disc.load_state_dict(d_sd, strict=True)
        disc.to(device).eval().requires_grad_(False)

    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None:
        if not isinstance(latent_avg, torch.Tensor) or latent_avg.numel() != arch["style_dim"]:
            raise CheckpointError(f"{path}: 'latent_avg' must be a tensor of {arch['style_dim']} values")
        latent_avg = latent_avg.reshape(1, -1).float().to(device)
    return StyleGAN2Checkpoint(gen, disc, latent_avg, args, path, arch)


def save_stylegan2(path: str | os.PathLike, generator: Generator,
                   discriminator: Discriminator | None = None, *,
                   args: argparse.Namespace | None = None, latent_avg: torch.Tensor | None = None,
                   g: Generator | None = None, extra: dict | None = None) -> None:
    """Write an official-format checkpoint atomically.

    Keys: 'g_ema' (``generator``), 'd', 'g' (non-EMA generator) when given, 'args' (an
    ``argparse.Namespace``; when None one is made with size, channel_multiplier, latent, n_mlp,
    channel_max), 'latent_avg' when given, plus ``extra`` entries.
    """
    def cpu_sd(m: nn.Module) -> dict:
        return {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}

    if args is None:
        args = argparse.Namespace(size=generator.size, channel_multiplier=generator.channel_multiplier,
                                  latent=generator.style_dim, n_mlp=generator.n_mlp,
                                  channel_max=generator.channel_max)
    ckpt: dict = {"g_ema": cpu_sd(generator)}
    if discriminator is not None:
        ckpt["d"] = cpu_sd(discriminator)
    if g is not None:
        ckpt["g"] = cpu_sd(g)
    ckpt["args"] = args
    if latent_avg is not None:
        ckpt["latent_avg"] = latent_avg.detach().cpu().reshape(-1).clone()
    if extra:
        ckpt.update(extra)
    atomic_torch_save(ckpt, path)


def load_latent(path: str | os.PathLike, style_dim: int = 512, n_latent: int | None = None) -> torch.Tensor:
    """Read a per-image latent file -> float tensor ``1×style_dim`` (W) or ``1×n×style_dim`` (W+);
    with ``n_latent`` (the generator's W+ layer count) a W+ latent must have that many layers.

    Accepted contents: Tensor (D,), (1, D), (n, D) with n > 1 (W+), (1, n, D); or a dict holding
    one of these under 'latent' (synface files also carry 'img'); or a rosinality ``projector.py``
    result dict ``{name: {'latent': ...}}`` with a single entry.
    """
    path = Path(path)
    obj = safe_torch_load(path)
    if isinstance(obj, dict):
        if "latent" not in obj:
            inner = list(obj.values())
            if len(inner) == 1 and isinstance(inner[0], dict) and "latent" in inner[0]:
                obj = inner[0]
            else:
                raise CheckpointError(f"{path}: latent dict has no 'latent' entry; keys found: "
                                      f"{sorted(map(str, obj))[:20]}")
        obj = obj["latent"]
    if not isinstance(obj, torch.Tensor):
        raise CheckpointError(f"{path}: latent is a {type(obj).__name__}, expected a tensor")
    w = obj.detach().float()
    shape = tuple(w.shape)
    if w.ndim == 0 or shape[-1] != style_dim or w.ndim > 3 or (w.ndim == 3 and shape[0] != 1):
        raise CheckpointError(f"{path}: latent of shape {list(shape)}; expected ({style_dim},), "
                              f"(1,{style_dim}), (n,{style_dim}) or (1,n,{style_dim})")
    if w.ndim == 1:
        w = w.unsqueeze(0)
    elif w.ndim == 2 and shape[0] > 1:
        w = w.unsqueeze(0)
    if n_latent is not None and w.ndim == 3 and w.shape[1] != n_latent:
        raise CheckpointError(f"{path}: W+ latent has {w.shape[1]} layers, the GAN needs {n_latent} "
                              f"(inverted with another GAN?)")
    if not torch.isfinite(w).all():
        raise CheckpointError(f"{path}: latent contains non-finite values")
    return w


def save_latent(path: str | os.PathLike, w: torch.Tensor) -> None:
    """Write a latent atomically in generate.py's format: a plain Tensor (D,) for W
    (given as (D,) or (1, D)); W+ (1, n, D) or (n, D) is written as a Tensor (1, n, D)."""
    w = w.detach().float().cpu()
    if w.ndim == 2 and w.shape[0] == 1:
        w = w[0]
    elif w.ndim == 2:
        w = w.unsqueeze(0)
    if w.ndim not in (1, 3) or (w.ndim == 3 and w.shape[0] != 1):
        raise ValueError(f"{path}: cannot save a latent of shape {list(w.shape)}")
    atomic_torch_save(w.clone(), path)
