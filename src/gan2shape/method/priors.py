"""Shape priors: depth targets used to pre-fit the depth net D before training.

Spec: ``METHOD.md`` §2.6 (ellipsoid) and ``EXTENSIONS.md`` §1 (masked box, smoothed box,
confidence, legacy box, ``none``). Every prior is a depth map ``B×H×W`` (float32, on the device of
its input, no gradient) in absolute depth units where *smaller = closer*: ``near`` (0.91) is the
most protruding point and ``far`` (1.02) the background. The depth head can only express
``1.0 + 0.1·tanh(·) ∈ (0.9, 1.1)`` (METHOD §2.4); :func:`prior_fits_depth_range` checks a prior
against that interval.

Inputs: soft object masks ``m ∈ [0, 1]`` and parser confidences ``c ∈ [0, 1]`` given as ``H×W``,
``B×H×W`` (a 3-D tensor is always read as a batch) or ``B×1×H×W``. All maps are computed batched,
with per-image bounding boxes and per-image min-max rescaling.

Deviations from the replication
-------------------------------
* ``masked_box`` (EXTENSIONS §1.3): the replication maps ``m̃ = (m − τ)/(1 − τ)`` (applied after
  zeroing ``m < τ``) through ``far − far·m̃``, which puts the object core at 0.0 and the background
  at 3.40 — outside the depth range, so an MSE fit saturates ``tanh``. By default we use the clean
  form ``far − (far − near)·clip(m̃, 0, 1)``: core = near, background = far, rim in between.
  ``compat=True`` reproduces the replication exactly and warns.
* ``confidence`` (EXTENSIONS §1.5): default ``far − (far − near)·clip(c, 0, 1) ∈ [near, far]``;
  ``compat=True`` gives the replication's ``far − far·c ∈ [0, far]`` (with a warning).
* Smoothed variants: the operator S min-max rescales every pass, so they are in range in both
  modes. ``smoothed_confidence`` is identical in both modes (both maps are decreasing affine
  functions of ``c``). ``smoothed_box`` is identical in both modes for hard masks (every pixel
  either ``< τ`` or ``= 1``); for soft masks the rim pixels (``τ ≤ m < 1``) sit relatively closer to
  the core in compat mode (background at m̃ = −7/3 instead of 0), so the two differ slightly
  near the outline.
* ``box`` (EXTENSIONS §1.6): the replication's legacy box is 1 inside / 0 outside (not depth
  units); ours is ``near`` inside and ``far`` outside.
* Guards the replication lacks: a constant map in S's min-max rescale gives the ``far``-filled
  map (no NaN); an empty thresholded mask in the ellipsoid uses the whole image as the box (with a
  warning, like the all-ones mask fallback of EXTENSIONS §1.1); a degenerate box has its width /
  height clamped to at least 1 px.
* Original-GAN2Shape per-category bounding-box adjustments of the ellipsoid (which the
  replication removed) are the default (``adjust="original"``); ``adjust="replication"`` drops
  them. Church's ``prior_far = 1.0`` is passed by the caller through ``far``
  (see :data:`ORIGINAL_PRIOR_FAR`).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

__all__ = [
    "PRIOR_NAMES",
    "ORIGINAL_PRIOR_FAR",
    "ellipsoid_prior",
    "masked_box_prior",
    "smooth_prior",
    "smoothed_box_prior",
    "confidence_prior",
    "box_prior",
    "make_prior",
    "prior_fits_depth_range",
]

PRIOR_NAMES = ("ellipsoid", "masked_box", "smoothed_box", "confidence", "smoothed_confidence", "box", "none")

# Per-category ``far`` of the original configs (METHOD §2.6); everything else uses 1.02.
ORIGINAL_PRIOR_FAR = {"church": 1.0}

_ADJUST_MODES = ("original", "replication")
_OUT_OF_RANGE_MSG = ("{name} prior (compat=True) has values in [{lo:.3f}, {hi:.3f}], outside the depth "
                     "net's range (0.9, 1.1): an MSE fit will saturate tanh (EXTENSIONS §1.3)")


def _as_batch(x: torch.Tensor, what: str) -> torch.Tensor:
    """H×W, B×H×W or B×1×H×W → float32 B×H×W (detached)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 2:
        x = x.unsqueeze(0)
    elif x.dim() == 4:
        if x.shape[1] != 1:
            raise ValueError(f"{what}: expected B×1×H×W, got shape {tuple(x.shape)}")
        x = x[:, 0]
    elif x.dim() != 3:
        raise ValueError(f"{what}: expected H×W, B×H×W or B×1×H×W, got shape {tuple(x.shape)}")
    return x.detach().to(torch.float32)


# --------------------------------------------------------------------------------------------
# Ellipsoid (METHOD §2.6, EXTENSIONS §1.2)
# --------------------------------------------------------------------------------------------

def _cap_t(radius: float = 0.4, near: float = 0.91, far: float = 1.02) -> float:
    """Half-chord t of the spherical cap: sqrt(R² − (R − (far − near))²) (0.27550 for defaults)."""
    return math.sqrt(radius ** 2 - (radius - (far - near)) ** 2)


def _bounding_boxes(mask: torch.Tensor, category: str = "car", threshold: float = 0.7,
                    adjust: str = "original") -> torch.Tensor:
    """Per-image box (y0, y1, x0, x1) as float64 B×4 of ``mask ≥ threshold``, with adjustments."""
    if adjust not in _ADJUST_MODES:
        raise ValueError(f"adjust must be one of {_ADJUST_MODES}, got {adjust!r}")
    m = _as_batch(mask, "mask")
    B, H, W = m.shape
    b = m >= threshold
    rows, cols = b.any(dim=2), b.any(dim=1)  # B×H, B×W
    empty = ~rows.any(dim=1)
    if bool(empty.any()):
        warnings.warn(f"ellipsoid prior: {int(empty.sum())} mask(s) have no pixel >= {threshold}; "
                      "using the whole image as the bounding box", stacklevel=4)
    ri = torch.arange(H, device=m.device)
    ci = torch.arange(W, device=m.device)
    y0 = torch.where(rows, ri, H).amin(dim=1)
    y1 = torch.where(rows, ri, -1).amax(dim=1)
    x0 = torch.where(cols, ci, W).amin(dim=1)
    x1 = torch.where(cols, ci, -1).amax(dim=1)
    box = torch.stack([y0, y1, x0, x1], dim=1).to(torch.float64)
    full = torch.tensor([0.0, H - 1.0, 0.0, W - 1.0], dtype=torch.float64, device=m.device)
    box = torch.where(empty[:, None], full, box)
    y0, y1, x0, x1 = box.unbind(1)
    if adjust == "original":
        cat = category.lower()
        if cat == "synface":  # grow upwards by 1/6 of the height
            y0 = y0 - (y1 - y0) / 6
        elif cat == "face":  # extend to the bottom row, narrow by w/12 per side
            y1 = torch.full_like(y1, H - 1.0)
            w = x1 - x0
            x0, x1 = x0 + w / 12, x1 - w / 12
        elif cat in ("car", "church"):  # grow downwards by 1/6 of the height
            y1 = y1 + (y1 - y0) / 6
        # cat, horse and any other name: unchanged
    return torch.stack([y0, y1, x0, x1], dim=1)


@torch.no_grad()
def ellipsoid_prior(mask: torch.Tensor, category: str = "car", near: float = 0.91, far: float = 1.02,
                    radius: float = 0.4, threshold: float = 0.7, adjust: str = "original") -> torch.Tensor:
    """Spherical-cap prior over the mask's bounding box: ``near`` at the centre, ``far`` at/after the rim.

    Reproduces the original's vertical-stretch quirk: rows are rescaled about the image centre, so
    the cap's centre row is ``H/2 + ratio·(c_y − H/2)``.
    """
    m = _as_batch(mask, "mask")
    B, H, W = m.shape
    y0, y1, x0, x1 = _bounding_boxes(m, category, threshold, adjust).unbind(1)  # float64, each B
    # Degenerate boxes (single row/column) are clamped to 1 px to avoid division by zero.
    bw = (x1 - x0).clamp_min(1.0)
    bh = (y1 - y0).clamp_min(1.0)
    r = (bw / 2)[:, None, None]
    ratio = (bh / bw)[:, None, None]
    cx = ((x0 + x1) / 2)[:, None, None]
    cy = ((y0 + y1) / 2)[:, None, None]
    t = _cap_t(radius, near, far)
    i = torch.arange(H, dtype=torch.float64, device=m.device)[None, :, None]
    j = torch.arange(W, dtype=torch.float64, device=m.device)[None, None, :]
    i_s = (i - H / 2) / ratio + H / 2  # vertical stretch about the image centre (quirk of [O])
    rho = torch.sqrt((i_s - cy) ** 2 + (j - cx) ** 2)
    cap = radius - torch.sqrt((radius ** 2 - (rho * t / r) ** 2).abs()) + near
    prior = torch.where(rho <= r, cap, torch.full_like(cap, far))
    return prior.to(torch.float32)


# --------------------------------------------------------------------------------------------
# Masked box, smoothing operator S, smoothed box (EXTENSIONS §1.3, §1.4)
# --------------------------------------------------------------------------------------------

def _masked_box(m: torch.Tensor, near: float, far: float, threshold: float, compat: bool) -> torch.Tensor:
    m = m.double()  # float64 so that the core (m = 1) maps exactly to near (compat: 0.0)
    m = torch.where(m < threshold, torch.zeros_like(m), m)  # zero everything below τ first
    mt = (m - threshold) / (1.0 - threshold)  # applied to all pixels: background → −τ/(1−τ)
    if compat:
        return (far - far * mt).float()  # IMPL: core 0.0, background far/(1−τ) = 3.40
    return (far - (far - near) * mt.clamp(0.0, 1.0)).float()


@torch.no_grad()
def masked_box_prior(mask: torch.Tensor, near: float = 0.91, far: float = 1.02, threshold: float = 0.7,
                     compat: bool = False) -> torch.Tensor:
    """Object core at ``near``, background at ``far``, soft rim in between (``compat``: 0.0 / 3.40)."""
    p = _masked_box(_as_batch(mask, "mask"), near, far, threshold, compat)
    if compat:
        warnings.warn(_OUT_OF_RANGE_MSG.format(name="masked_box", lo=float(p.min()), hi=float(p.max())),
                      stacklevel=3)
    return p


@torch.no_grad()
def smooth_prior(prior: torch.Tensor, near: float = 0.91, far: float = 1.02, kernel_size: int = 11,
                 passes: int = 3) -> torch.Tensor:
    """Operator S: ``passes`` × (k×k box correlation, no padding → per-image min-max to [near, far]
    → pad (k−1)/2 px with ``far``). A constant map after the box filter becomes ``far``."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if passes < 0:
        raise ValueError(f"passes must be >= 0, got {passes}")
    p = _as_batch(prior, "prior")
    B, H, W = p.shape
    if H < kernel_size or W < kernel_size:
        raise ValueError(f"prior of size {H}×{W} is smaller than the {kernel_size}×{kernel_size} kernel")
    pad = (kernel_size - 1) // 2
    x = p.unsqueeze(1)  # B×1×H×W
    for _ in range(passes):
        # Box correlation; the kernel's scale and the conv bias of IMPL vanish in the min-max below.
        x = F.avg_pool2d(x, kernel_size, stride=1)
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        span = hi - lo
        ok = span > 0
        scaled = near + (x - lo) * ((far - near) / torch.where(ok, span, torch.ones_like(span)))
        x = torch.where(ok, scaled.clamp(near, far), torch.full_like(x, far))
        x = F.pad(x, (pad, pad, pad, pad), mode="constant", value=far)
    return x[:, 0]


@torch.no_grad()
def smoothed_box_prior(mask: torch.Tensor, near: float = 0.91, far: float = 1.02, threshold: float = 0.7,
                       compat: bool = False, kernel_size: int = 11, passes: int = 3) -> torch.Tensor:
    """S(masked box): plateau at ``near`` inside the object, ~15 px ramp to ``far`` at the outline."""
    p = _masked_box(_as_batch(mask, "mask"), near, far, threshold, compat)
    return smooth_prior(p, near, far, kernel_size, passes)


# --------------------------------------------------------------------------------------------
# Confidence (EXTENSIONS §1.5), legacy box (§1.6)
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def confidence_prior(confidence: torch.Tensor, near: float = 0.91, far: float = 1.02, smoothed: bool = True,
                     compat: bool = False, kernel_size: int = 11, passes: int = 3) -> torch.Tensor:
    """Confidence prior: the most confident pixels are nearest. ``smoothed=True`` applies S."""
    c = _as_batch(confidence, "confidence")
    c = c.double()
    if compat:
        p = (far - far * c).float()  # IMPL: [0, far]
    else:
        p = (far - (far - near) * c.clamp(0.0, 1.0)).float()
    if smoothed:
        return smooth_prior(p, near, far, kernel_size, passes)
    if compat:
        warnings.warn(_OUT_OF_RANGE_MSG.format(name="confidence", lo=float(p.min()), hi=float(p.max())),
                      stacklevel=3)
    return p


@torch.no_grad()
def box_prior(shape, near: float = 0.91, far: float = 1.02, device=None) -> torch.Tensor:
    """Legacy centred box in depth units: ``near`` on rows ⌊0.1H⌋..⌊0.9H⌋−1 and columns
    ⌊0.25W⌋..⌊0.75W⌋−1 (±0.4·H, ±0.25·W), ``far`` elsewhere (IMPL used 1 / 0 instead).

    ``shape``: int S, (H, W), (B, H, W) or (B, 1, H, W).
    """
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if isinstance(shape, int):
        shape = (shape, shape)
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        B, H, W = 1, *shape
    elif len(shape) == 3:
        B, H, W = shape
    elif len(shape) == 4 and shape[1] == 1:
        B, _, H, W = shape
    else:
        raise ValueError(f"box_prior: expected S, (H, W), (B, H, W) or (B, 1, H, W), got {shape}")
    p = torch.full((B, H, W), far, dtype=torch.float32, device=device)
    p[:, int(0.1 * H):int(0.9 * H), int(0.25 * W):int(0.75 * W)] = near
    return p


# --------------------------------------------------------------------------------------------
# Factory and range check
# --------------------------------------------------------------------------------------------

def make_prior(name: str, mask: torch.Tensor | None = None, confidence: torch.Tensor | None = None, *,
               category: str = "car", near: float = 0.91, far: float = 1.02, compat: bool = False,
               adjust: str = "original", **kw) -> torch.Tensor | None:
    """Build the prior ``name`` (one of :data:`PRIOR_NAMES`); ``None`` for ``"none"`` (no pretraining).

    Extra keywords go to the specific builder (``radius``, ``threshold``, ``kernel_size``,
    ``passes``; ``shape``/``device`` for ``box``, whose shape otherwise comes from mask/confidence).
    """
    key = str(name).strip().lower()
    if key not in PRIOR_NAMES:
        raise ValueError(f"unknown prior name {name!r}; valid names: {', '.join(PRIOR_NAMES)}")
    if key == "none":
        return None
    if key == "box":
        shape = kw.pop("shape", None)
        ref = mask if mask is not None else confidence
        if shape is None and ref is None:
            raise ValueError("prior 'box' needs a shape: pass shape=... or a mask/confidence tensor")
        if shape is None:
            ref_b = _as_batch(ref, "mask" if mask is not None else "confidence")
            kw.setdefault("device", ref_b.device)
            shape = tuple(ref_b.shape)
        return box_prior(shape, near=near, far=far, **kw)
    if key in ("confidence", "smoothed_confidence"):
        if confidence is None:
            raise ValueError(f"prior {key!r} needs a parser confidence map (confidence=...)")
        return confidence_prior(confidence, near=near, far=far, smoothed=(key == "smoothed_confidence"),
                                compat=compat, **kw)
    if mask is None:
        raise ValueError(f"prior {key!r} needs an object mask (mask=...)")
    if key == "ellipsoid":
        return ellipsoid_prior(mask, category=category, near=near, far=far, adjust=adjust, **kw)
    if key == "masked_box":
        return masked_box_prior(mask, near=near, far=far, compat=compat, **kw)
    return smoothed_box_prior(mask, near=near, far=far, compat=compat, **kw)


def prior_fits_depth_range(prior: torch.Tensor | None, min_depth: float = 0.9, max_depth: float = 1.1) -> bool:
    """True if every value is finite and strictly inside (min_depth, max_depth), the open range of
    ``1 + 0.1·tanh`` (endpoints would need an infinite raw output). ``None`` (no prior) is True."""
    if prior is None:
        return True
    p = prior.detach()
    if p.numel() == 0:
        return True
    return bool(torch.isfinite(p).all()) and float(p.min()) > min_depth and float(p.max()) < max_depth
