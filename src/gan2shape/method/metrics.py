"""BFM/synface depth metrics: SIDE and MAD with the eroded masks of METHOD §8 / ARTEFACTS §3.2.

All functions return per-image ``B`` vectors; averaging over images is the caller's job.
SIDE is returned raw (papers report it ×100, "×10⁻²"). An image with an empty mask gets NaN.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["erode_mask", "gt_mask", "side", "mad", "depth_metrics"]


def _as_bhw(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 4 and x.size(1) == 1:
        return x[:, 0]
    if x.dim() == 3:
        return x
    raise ValueError(f"{name} must be B×H×W or B×1×H×W, got {tuple(x.shape)}")


def erode_mask(mask: torch.Tensor) -> torch.Tensor:
    """Erode a binary mask by one pixel: 3×3 average pool (stride 1, zero padding 1), keep > 0.99.

    Accepts ``B×H×W`` or ``B×1×H×W`` and returns a float mask of the same rank. Pixels on the
    image border are always removed (the zero padding counts as background).
    """
    m = _as_bhw(mask, "mask").float().unsqueeze(1)
    m = (F.avg_pool2d(m, 3, stride=1, padding=1, count_include_pad=True) > 0.99).float()
    return m if mask.dim() == 4 else m[:, 0]


def gt_mask(depth_gt: torch.Tensor) -> torch.Tensor:
    """Foreground of a GT depth map: pixels nearer than the image's maximum (the background), eroded.

    The maximum is taken per image (the original takes it over the batch tensor; identical for
    synface, whose background is 1.1 in every image). Same rank as ``depth_gt``.
    """
    d = _as_bhw(depth_gt, "depth_gt")
    m = (d < d.flatten(1).amax(1).view(-1, 1, 1)).float()
    m = erode_mask(m)
    return m.unsqueeze(1) if depth_gt.dim() == 4 else m


def side(pred_depth: torch.Tensor, gt_depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale-invariant depth error per image: population std of ``log pred − log gt`` inside ``mask``."""
    p, g, m = _as_bhw(pred_depth, "pred_depth"), _as_bhw(gt_depth, "gt_depth"), _as_bhw(mask, "mask").to(pred_depth.dtype)
    delta = torch.log(p) - torch.log(g)
    n = m.flatten(1).sum(1)
    mu = (delta * m).flatten(1).sum(1) / n
    var = ((delta - mu.view(-1, 1, 1)) ** 2 * m).flatten(1).sum(1) / n
    return var.clamp_min(0).sqrt()


def mad(pred_normals: torch.Tensor, gt_normals: torch.Tensor, mask: torch.Tensor,
        renormalize: bool = False) -> torch.Tensor:
    """Mean angle (degrees) between ``B×H×W×3`` normals inside ``mask``, per image.

    ``renormalize=False`` takes the dot product of the normals as given (the original protocol).
    Normals from §3.6 are n/(‖n‖ + 1e−7) with ‖n‖ ≈ (2z/f)² (3e−5 at 64 px), so they are ~0.3 %
    short of unit length and even identical depth maps score a few degrees; ``renormalize=True``
    measures the true angle.
    """
    m = _as_bhw(mask, "mask").to(pred_normals.dtype)
    if renormalize:
        pred_normals = torch.nn.functional.normalize(pred_normals, dim=-1)
        gt_normals = torch.nn.functional.normalize(gt_normals, dim=-1)
    cos = (pred_normals * gt_normals).sum(-1).clamp(-1, 1)
    ang = torch.acos(cos) * (180.0 / math.pi)
    return (ang * m).flatten(1).sum(1) / m.flatten(1).sum(1)


def depth_metrics(recon_depth: torch.Tensor, gt_depth: torch.Tensor,
                  normals_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  max_valid_depth: float = 1.2) -> dict[str, torch.Tensor]:
    """Per-image ``side``, ``mad`` (original protocol), ``mad_unit`` (true angle), ``mae``, ``mse`` of a reconstruction in the input view (§8).

    ``recon_depth``, ``gt_depth``: ``B×S×S``. Mask M = gt_mask(gt) · erode(recon < max_valid_depth)
    (1.2 = max_depth + (max−min)/2). ``normals_fn`` maps ``B×S×S`` depth to ``B×S×S×3`` normals;
    None uses ``gan2shape.method.renderer.Renderer(S).normals``. ``mae``/``mse`` are masked means of the
    raw depth difference. Also returns ``mask`` (``B×S×S``). Computed without gradient.
    """
    recon, gt = _as_bhw(recon_depth, "recon_depth"), _as_bhw(gt_depth, "gt_depth")
    with torch.no_grad():
        m = gt_mask(gt) * erode_mask((recon < max_valid_depth).float())
        m = m.to(recon.dtype)
        if normals_fn is None:
            from ..method.renderer import Renderer  # lazy: the renderer pulls in pytorch3d

            normals_fn = Renderer(recon.shape[-1]).normals
        n_pred, n_gt = normals_fn(recon), normals_fn(gt)
        n = m.flatten(1).sum(1)
        diff = recon - gt
        return {
            "side": side(recon, gt, m),
            "mad": mad(n_pred, n_gt, m),
            "mad_unit": mad(n_pred, n_gt, m, renormalize=True),
            "mae": (diff.abs() * m).flatten(1).sum(1) / n,
            "mse": (diff ** 2 * m).flatten(1).sum(1) / n,
            "mask": m,
        }
