"""The photo-geometric networks D, A, V, L and the latent-offset encoder E (METHOD §2).

* :class:`EDDeconv` -- encoder-decoder for depth D (``cout=1``, no activation) and albedo A
  (``cout=3``, Tanh), METHOD §2.1.
* :class:`Encoder` -- plain conv encoder for view V (``cout=6``) and light L (``cout=4``), §2.2.
* :class:`ResEncoder` -- residual encoder E of the W-space offset (``cout=512``), §2.3.
* :func:`depth_head`, :func:`clamp_border` -- the depth scalings of §2.4.

Widths follow the spec: ``nf = max(4096 // S, 16)``, ``gn_base = 8 if S >= 128 else 16`` and
``log2(S) - 6`` extra levels, i.e. the encoders have ``log2(S) - 2`` stride-2 levels with
channels ``nf·2^k`` and GroupNorm ``GN(gn_base·2^k, nf·2^k)`` (k = 0, 1, ...), and end at 4×4.
S = 64 and S = 128 reproduce the spec's layer lists exactly.

Generalisation below 64 (not in the original, used by tests): S = 32 gets ``nf = 128`` and
``gn_base = nf // 4 = 32`` (4 channels per group, as at S = 64 and 128), i.e. the S = 64 net
without its highest-resolution level (encoder 3→128→256→512 at 16², 8², 4²). Sizes must be
powers of two ≥ 32.

``width`` (our option, the method config's ``net_width``; 1 = the original) multiplies every channel
count: nf, the GroupNorm groups, zdim and E's base width (not E's output, the GAN's latent size). The
CPU demo's joint pre-train is made at 0.25 (1/16 of the parameters, DESIGN "The demo").

All layers of D, A, V and L live in one ``nn.Sequential`` named ``network`` in the order of the
spec's layer list (every conv, norm, activation and upsample its own entry), so the state-dict
keys are ``network.<index>.weight``. Convs have no bias unless stated; PyTorch default init.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "EDDeconv", "Encoder", "ResEncoder", "ResBlockDown", "build_networks", "depth_head",
    "clamp_border", "widths",
]


def widths(size: int, width: float = 1.0) -> tuple[int, int, int]:
    """``(nf, gn_base, n_levels)`` for image size ``size`` and channel multiplier ``width`` (see the
    module docstring)."""
    if size < 32 or size & (size - 1):
        raise ValueError(f"image size must be a power of two >= 32, got {size}")
    nf = max(4096 // size, 16)
    if size >= 64:
        gn_base = 8 if size >= 128 else 16
    else:
        gn_base = nf // 4
    n_levels = int(math.log2(size)) - 2  # stride-2 convs from S down to 4
    return scaled(nf, width, "nf"), scaled(gn_base, width, "GroupNorm groups"), n_levels


def scaled(channels: int, width: float, what: str = "channels") -> int:
    """``channels · width``, which must be a whole number >= 1 (a network width multiplier)."""
    c = channels * width
    if not (width > 0 and c >= 1 and abs(c - round(c)) < 1e-9):
        raise ValueError(f"net width {width}: {what} {channels} x {width} = {c:g} is not a whole number >= 1")
    return int(round(c))


def _activation(name: str | None) -> nn.Module | None:
    if name is None or name == "none":
        return None
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown output activation {name!r} (use None, 'tanh' or 'sigmoid')")


class EDDeconv(nn.Module):
    """Encoder-decoder D/A: ``B×cin×S×S`` image -> ``B×cout×S×S`` map (METHOD §2.1)."""

    def __init__(self, cin: int = 3, cout: int = 1, size: int = 64, zdim: int = 256,
                 activation: str | nn.Module | None = None, width: float = 1.0):
        super().__init__()
        nf, gn, n_levels = widths(size, width)
        zdim = scaled(zdim, width, "zdim")
        ch = [nf * 2 ** k for k in range(n_levels)]
        groups = [gn * 2 ** k for k in range(n_levels)]
        layers: list[nn.Module] = []
        # encoder: stride-2 4×4 convs; GN + LReLU between them, none after the last
        prev = cin
        for k in range(n_levels):
            if k > 0:
                layers += [nn.GroupNorm(groups[k - 1], ch[k - 1]), nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(prev, ch[k], 4, stride=2, padding=1, bias=False))
            prev = ch[k]
        # bottleneck 4² -> 1²
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(prev, zdim, 4, stride=1, padding=0, bias=False),
                   nn.ReLU()]
        # decoder: 1² -> 4², then ConvT blocks that halve the width and double the size
        layers += [nn.ConvTranspose2d(zdim, prev, 4, stride=1, padding=0, bias=False), nn.ReLU(),
                   nn.Conv2d(prev, prev, 3, stride=1, padding=1, bias=False), nn.ReLU()]
        for k in range(n_levels - 1, 0, -1):
            c, g = ch[k - 1], groups[k - 1]
            layers += [nn.ConvTranspose2d(ch[k], c, 4, stride=2, padding=1, bias=False),
                       nn.GroupNorm(g, c), nn.ReLU(),
                       nn.Conv2d(c, c, 3, stride=1, padding=1, bias=False),
                       nn.GroupNorm(g, c), nn.ReLU()]
        c, g = ch[0], groups[0]
        layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                   nn.Conv2d(c, c, 3, stride=1, padding=1, bias=False), nn.GroupNorm(g, c), nn.ReLU(),
                   nn.Conv2d(c, c, 5, stride=1, padding=2, bias=False), nn.GroupNorm(g, c), nn.ReLU(),
                   nn.Conv2d(c, cout, 5, stride=1, padding=2, bias=False)]
        act = activation if isinstance(activation, nn.Module) else _activation(activation)
        if act is not None:
            layers.append(act)
        self.network = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class Encoder(nn.Module):
    """Plain encoder V/L: ``B×cin×S×S`` -> ``B×cout`` in [-1, 1] (METHOD §2.2)."""

    def __init__(self, cin: int = 3, cout: int = 6, size: int = 64, width: float = 1.0):
        super().__init__()
        nf, _, n_levels = widths(size, width)
        layers: list[nn.Module] = []
        prev = cin
        for k in range(n_levels):
            layers += [nn.Conv2d(prev, nf * 2 ** k, 4, stride=2, padding=1, bias=False), nn.ReLU()]
            prev = nf * 2 ** k
        layers += [nn.Conv2d(prev, prev, 4, stride=1, padding=0, bias=False), nn.ReLU(),
                   nn.Conv2d(prev, cout, 1, stride=1, padding=0, bias=False), nn.Tanh()]
        self.network = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x).reshape(x.size(0), -1)


class ResBlockDown(nn.Module):
    """Residual down-sampling block of E (METHOD §2.3), with the in-place-ReLU quirk.

    ``x = relu(x); out = conv2(relu(conv1(x))) + shortcut(avgpool2(x))``: the shortcut sees
    ReLU(x), as in the original where the branch's first ReLU was in-place. ``shortcut`` is a 1×1
    conv *with bias* when ``cin != cout``, otherwise the identity.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.conv_sc = nn.Conv2d(cin, cout, 1, stride=1, padding=0, bias=True) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        out = self.conv2(F.relu(self.conv1(x)))
        sc = F.avg_pool2d(x, 2)
        if self.conv_sc is not None:
            sc = self.conv_sc(sc)
        return out + sc


class ResEncoder(nn.Module):
    """Latent-offset encoder E: ``B×cin×S×S`` -> ``B×cout``, no output activation (METHOD §2.3).

    Conv 4×4 s2 (cin→nf), then ``log2(S) - 3`` ResBlockDowns doubling the width down to 4²
    (3 for S=64, 4 for S=128, 2 for S=32), ReLU, Conv 4×4 p0 (C→2C), ReLU, Conv 1×1 (2C→cout).
    """

    def __init__(self, cin: int = 3, cout: int = 512, size: int = 64, nf: int = 32, width: float = 1.0):
        super().__init__()
        widths(size)  # validates size
        nf = scaled(nf, width, "E's nf")
        n_blocks = int(math.log2(size)) - 3
        layers: list[nn.Module] = [nn.Conv2d(cin, nf, 4, stride=2, padding=1, bias=False)]
        c = nf
        for _ in range(n_blocks):
            layers.append(ResBlockDown(c, 2 * c))
            c *= 2
        layers += [nn.ReLU(), nn.Conv2d(c, 2 * c, 4, stride=1, padding=0, bias=False), nn.ReLU(),
                   nn.Conv2d(2 * c, cout, 1, stride=1, padding=0, bias=False)]
        self.network = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x).reshape(x.size(0), -1)


def build_networks(image_size: int, zdim: int = 256, latent_dim: int = 512, width: float = 1.0) -> nn.ModuleDict:
    """The five nets under their official checkpoint names ``netD, netA, netV, netL, netEnc``
    (``width``: channel multiplier, 1 = the original)."""
    return nn.ModuleDict({
        "netD": EDDeconv(cin=3, cout=1, size=image_size, zdim=zdim, activation=None, width=width),
        "netA": EDDeconv(cin=3, cout=3, size=image_size, zdim=zdim, activation="tanh", width=width),
        "netV": Encoder(cin=3, cout=6, size=image_size, width=width),
        "netL": Encoder(cin=3, cout=4, size=image_size, width=width),
        "netEnc": ResEncoder(cin=3, cout=latent_dim, size=image_size, width=width),
    })


def depth_head(raw: torch.Tensor, min_depth: float = 0.9, max_depth: float = 1.1) -> torch.Tensor:
    """Raw D output ``B×1×S×S`` or ``B×S×S`` -> depth ``B×S×S`` in [min_depth, max_depth] (§2.4).

    Each image is centred by its own pixel mean (never the batch mean), squashed by tanh and
    mapped linearly: ``(1+d)/2·max + (1-d)/2·min``.
    """
    if raw.dim() == 4:
        if raw.size(1) != 1:
            raise ValueError(f"depth_head expects B×1×S×S or B×S×S, got {tuple(raw.shape)}")
        raw = raw[:, 0]
    elif raw.dim() != 3:
        raise ValueError(f"depth_head expects B×1×S×S or B×S×S, got {tuple(raw.shape)}")
    raw = raw - raw.mean(dim=(1, 2), keepdim=True)
    d = torch.tanh(raw)
    return (1 + d) / 2 * max_depth + (1 - d) / 2 * min_depth


def clamp_border(depth: torch.Tensor, border_depth: float | None = None, width: int = 2,
                 factor: float = 1.02, min_depth: float = 0.9, max_depth: float = 1.1) -> torch.Tensor:
    """Blend the ``width`` left-most and right-most columns of ``depth`` (``...×S×S``) to the border depth.

    ``depth·(1-m) + m·border_depth`` with ``m = factor`` (1.02, the original's quirk) on those
    columns and 0 elsewhere; ``border_depth`` defaults to ``0.7·max + 0.3·min`` (1.04), so border
    pixels become ``1.0608 - 0.02·depth``. Top and bottom rows are left alone (METHOD §2.4).
    """
    if border_depth is None:
        border_depth = 0.7 * max_depth + 0.3 * min_depth
    m = torch.zeros(depth.shape[-1], dtype=depth.dtype, device=depth.device)
    m[:width] = factor
    m[-width:] = factor
    return depth * (1 - m) + m * border_depth
