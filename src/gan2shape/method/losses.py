"""Loss primitives (METHOD §4); the trainer composes them into the step-1/2/3 losses.

* :func:`masked_l1` -- photometric L1 with a validity mask (§4.1);
* :func:`smoothness` -- second-difference smoothness (§4.3);
* :func:`discriminator_feature_loss` -- L_D of step 2 (§4.5);
* :func:`latent_regularization` -- mean(Δw²) of step 2 (§4.5);
* :class:`PerceptualLoss` -- LPIPS-VGG v0.1 (§4.2), or the alternatives ``discriminator``/``none``.

Weights (§4.7, applied by the trainer): λ_perc = 0.5, λ_smooth = 0.01, λ_reg = 0.01, all L1 and
discriminator-feature terms 1.

``reduction="mean"`` reproduces the original's batch-level value; ``reduction="none"`` gives a
``B`` vector of per-sample values.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io import CheckpointError, safe_torch_load

__all__ = [
    "masked_l1", "smoothness", "discriminator_feature_loss", "latent_regularization",
    "PerceptualLoss", "VGGWeightsMissing", "vgg16_feature_keys", "read_vgg16_features",
    "load_vgg16_features",
    "LAMBDA_PERC", "LAMBDA_SMOOTH", "LAMBDA_REG",
]

LAMBDA_PERC = 0.5
LAMBDA_SMOOTH = 0.01
LAMBDA_REG = 0.01

_EPS = 1e-10  # unit-normalisation epsilon (LPIPS)


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def masked_l1(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None,
              reduction: str = "mean", groups: int = 1) -> torch.Tensor:
    """``Σ|x−y|·M / ΣM`` with M broadcast over channels (the denominator counts channels).

    ``x, y``: ``B×C×H×W``; ``mask``: ``B×1×H×W`` (or ``B×H×W``), or None for a plain mean.
    ``"mean"``: one value over the whole batch (sums over the batch, then divide), or with
    ``groups`` = K one value per consecutive chunk of B/K samples (a K vector: K stacked images);
    ``"none"``: per sample, each sample's sum over its own ΣM. An all-zero mask gives 0.
    """
    _check_reduction(reduction)
    diff = (x - y).abs()
    if mask is None:
        if reduction == "mean" and groups == 1:
            return diff.mean()
        per_sample = diff.flatten(1).mean(1)
        return per_sample if reduction == "none" else per_sample.view(groups, -1).mean(1)
    if mask.dim() == diff.dim() - 1:
        mask = mask.unsqueeze(1)
    mask = mask.expand_as(diff)
    num, den = (diff * mask).flatten(1).sum(1), mask.flatten(1).sum(1)
    if reduction == "mean" and groups == 1:
        num, den = num.sum(), den.sum()
    elif reduction == "mean":
        num, den = num.view(groups, -1).sum(1), den.view(groups, -1).sum(1)
    return num / den.clamp_min(1e-12)


def smoothness(x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """mean|Dxx| + mean|Dxy| + mean|Dyx| + mean|Dyy| of a ``B×H×W`` (or ``B×1×H×W``) map (§4.3).

    Dx = X[:, :, 1:] − X[:, :, :−1], Dy = X[:, 1:, :] − X[:, :−1, :]; Dxx, Dxy are the x- and
    y-differences of Dx, Dyx, Dyy those of Dy.
    """
    _check_reduction(reduction)
    if x.dim() == 4:
        if x.size(1) != 1:
            raise ValueError(f"smoothness expects B×H×W or B×1×H×W, got {tuple(x.shape)}")
        x = x[:, 0]
    dx = x[:, :, 1:] - x[:, :, :-1]
    dy = x[:, 1:, :] - x[:, :-1, :]
    terms = [dx[:, :, 1:] - dx[:, :, :-1], dx[:, 1:, :] - dx[:, :-1, :],
             dy[:, :, 1:] - dy[:, :, :-1], dy[:, 1:, :] - dy[:, :-1, :]]
    per_sample = sum(t.abs().flatten(1).mean(1) for t in terms)
    return per_sample.mean() if reduction == "mean" else per_sample


def discriminator_feature_loss(feats_q: list[torch.Tensor], feats_p: list[torch.Tensor],
                               mask: torch.Tensor, reduction: str = "mean", groups: int = 1) -> torch.Tensor:
    """L_D of step 2 (METHOD §4.5): Σ over the feature list of masked L1 between features.

    For a feature of size h the mask (``B×1×S×S``) is average-pooled with kernel = stride = S/h
    and broadcast over the feature's channels; each term is ``Σ|fq−fp|·M / ΣM`` (denominator
    counting channels, as :func:`masked_l1`, whose ``reduction`` and ``groups`` apply). ``feats_p``
    (pseudo samples) are detached: no gradient flows through them.
    """
    _check_reduction(reduction)
    if len(feats_q) != len(feats_p) or not feats_q:
        raise ValueError(f"need two equally long, non-empty feature lists, got {len(feats_q)} and {len(feats_p)}")
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    size = mask.shape[-1]
    total = 0
    for fq, fp in zip(feats_q, feats_p):
        h = fq.shape[-1]
        if fq.shape != fp.shape or size % h:
            raise ValueError(f"feature shapes {tuple(fq.shape)} / {tuple(fp.shape)} do not fit a mask of size {size}")
        k = size // h
        m = F.avg_pool2d(mask, kernel_size=k, stride=k) if k > 1 else mask
        total = total + masked_l1(fq, fp.detach(), m, reduction=reduction, groups=groups)
    return total


def latent_regularization(dw: torch.Tensor) -> torch.Tensor:
    """``mean(Δw²)`` over all elements (batch × 512)."""
    return dw.pow(2).mean()


# ---------------------------------------------------------------------------------------------
# LPIPS-VGG with a locally supplied torchvision VGG16 backbone

# indices of the 13 convs in torchvision's vgg16().features and their (cin, cout)
_VGG16_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
                (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512),
                (26, 512, 512), (28, 512, 512)]
# lpips' vgg16 slices: features[0:4], [4:9], [9:16], [16:23], [23:30]
_VGG16_SLICE_ENDS = [4, 9, 16, 23, 30]

_DOWNLOAD_HINT = ("the download stage fetches torchvision's vgg16-397923af.pth "
                  "(SHA-256 397923af8e79cdbb...); alternatively use the perceptual loss kind "
                  "'discriminator' (StyleGAN2 discriminator features) or 'none'")


class VGGWeightsMissing(CheckpointError, FileNotFoundError):
    """The VGG16 backbone file for LPIPS is not there."""


def vgg16_feature_keys() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of ``features.*`` in torchvision's VGG16 state_dict (the part LPIPS uses)."""
    keys: dict[str, tuple[int, ...]] = {}
    for idx, cin, cout in _VGG16_CONVS:
        keys[f"features.{idx}.weight"] = (cout, cin, 3, 3)
        keys[f"features.{idx}.bias"] = (cout,)
    return keys


def _lpips_slice(idx: int) -> int:
    return next(k for k, end in enumerate(_VGG16_SLICE_ENDS, start=1) if idx < end)


def read_vgg16_features(vgg_path: str | os.PathLike | None) -> dict[str, torch.Tensor]:
    """Read and check the ``features.*`` tensors of a torchvision VGG16 state_dict file.

    Raises :class:`VGGWeightsMissing` when the file is not given or absent, and
    :class:`CheckpointError` naming the file when keys or shapes do not match. Other keys
    (``classifier.*``) are ignored.
    """
    if vgg_path is None:
        raise VGGWeightsMissing(f"LPIPS-VGG needs a local VGG16 file (vgg_path is None): {_DOWNLOAD_HINT}")
    path = Path(vgg_path)
    if not path.is_file():
        raise VGGWeightsMissing(f"{path}: VGG16 weights not found; {_DOWNLOAD_HINT}")
    sd = safe_torch_load(path)
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a torchvision VGG16 state_dict, got {type(sd).__name__}")
    expected = vgg16_feature_keys()
    missing = [k for k in expected if k not in sd]
    if missing:
        raise CheckpointError(f"{path}: not a torchvision VGG16 state_dict, missing {missing[:4]}"
                              f"{' ...' if len(missing) > 4 else ''}")
    bad = [f"{k} {tuple(sd[k].shape)} != {s}" for k, s in expected.items() if tuple(sd[k].shape) != s]
    if bad:
        raise CheckpointError(f"{path}: wrong VGG16 tensor shapes: {'; '.join(bad[:4])}")
    return {k: sd[k] for k in expected}


def load_vgg16_features(lpips_net: nn.Module, vgg_path: str | os.PathLike | None) -> None:
    """Copy the VGG16 ``features.*`` weights of ``vgg_path`` into the slices of an ``lpips.LPIPS`` net."""
    sd = read_vgg16_features(vgg_path)
    target = {}
    for idx, _, _ in _VGG16_CONVS:
        for p in ("weight", "bias"):
            target[f"slice{_lpips_slice(idx)}.{idx}.{p}"] = sd[f"features.{idx}.{p}"]
    own = lpips_net.net.state_dict()
    if set(own) != set(target):
        raise CheckpointError(f"{vgg_path}: the installed lpips VGG layout differs from torchvision's "
                              f"(lpips keys {sorted(own)[:3]} ...)")
    lpips_net.net.load_state_dict(target, strict=True)


def _build_lpips_vgg(vgg_path: str | os.PathLike | None) -> nn.Module:
    read_vgg16_features(vgg_path)  # check the file before building the net, so errors come first
    import lpips

    with warnings.catch_warnings():
        # lpips passes torchvision the deprecated `pretrained=False`; nothing is downloaded
        warnings.simplefilter("ignore", UserWarning)
        net = lpips.LPIPS(net="vgg", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    load_vgg16_features(net, vgg_path)
    return net


def _unit_normalize(f: torch.Tensor) -> torch.Tensor:
    """Unit-normalise over channels. The eps sits inside the square root (eps²), so an all-zero
    feature vector (common for masked-out regions) has a zero, not a NaN, gradient."""
    return f / (f.pow(2).sum(dim=1, keepdim=True) + _EPS * _EPS).sqrt()


class PerceptualLoss(nn.Module):
    """Perceptual distance between two image batches in [-1, 1] (METHOD §4.2).

    kind:
      * ``"lpips_vgg"`` -- LPIPS net-lin/vgg v0.1: linear heads from the lpips 0.1.4 wheel,
        VGG16 backbone from the local torchvision file ``vgg_path`` (``vgg16-397923af.pth``).
      * ``"discriminator"`` -- LPIPS without linear heads on a frozen StyleGAN2 discriminator:
        for each of ``discriminator.features(x, ftr_num)``, unit-normalise over channels (eps
        1e-10), squared difference summed over channels, spatial mean; summed over the features.
      * ``"none"`` -- zeros (no graph).

    Masking is by multiplication: the distance is taken between ``x·M`` and ``y·M``.
    Everything is frozen and kept in eval mode (``train()`` does not switch it back).
    """

    KINDS = ("lpips_vgg", "discriminator", "none")

    def __init__(self, kind: str = "lpips_vgg", vgg_path: str | os.PathLike | None = None,
                 discriminator: nn.Module | None = None, ftr_num: int = 4):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown perceptual loss kind {kind!r}; choose one of {self.KINDS}")
        self.kind = kind
        self.ftr_num = ftr_num
        self.net: nn.Module | None = None
        if kind == "lpips_vgg":
            self.net = _build_lpips_vgg(vgg_path)
        elif kind == "discriminator":
            if discriminator is None or not hasattr(discriminator, "features"):
                raise ValueError("kind='discriminator' needs a discriminator with a features(x, n) method")
            self.net = discriminator
        if self.net is not None:
            self.net.requires_grad_(False)
            self.net.eval()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        if self.net is not None:
            self.net.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
        _check_reduction(reduction)
        if self.kind == "none":
            z = torch.zeros(x.size(0), dtype=x.dtype, device=x.device)
            return z.sum() if reduction == "mean" else z
        if mask is not None:
            if mask.dim() == x.dim() - 1:
                mask = mask.unsqueeze(1)
            x, y = x * mask, y * mask
        if self.kind == "lpips_vgg":
            per = self.net(x, y).reshape(x.size(0))
        else:
            fx = self.net.features(x, self.ftr_num)
            fy = self.net.features(y, self.ftr_num)
            per = 0
            for a, b in zip(fx, fy):
                d = (_unit_normalize(a) - _unit_normalize(b)).pow(2).sum(dim=1)
                per = per + d.flatten(1).mean(1)
        return per.mean() if reduction == "mean" else per
