"""Small tensor helpers shared by several modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize ``B×C×H×W``: bilinear (align_corners=False) when enlarging, ``area`` when shrinking."""
    if isinstance(size, int):
        size = (size, size)
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if size[0] > h or size[1] > w:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return F.interpolate(x, size=size, mode="area")


def center_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """Centre crop of a ``...×H×W`` tensor to ``crop×crop`` (torchvision's rounding)."""
    h, w = x.shape[-2:]
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    return x[..., top:top + crop, left:left + crop]
