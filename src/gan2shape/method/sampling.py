"""Pseudo samples and projected samples (METHOD §5).

* :class:`ViewLightDistribution` -- the view / light multivariate normals (``view_mvn.pth``,
  ``light_mvn.pth``: dicts with ``mean`` and ``cov``, in the networks' raw output units).
* :func:`sample_views`, :func:`sample_lights` -- random viewpoints (MVN, yaw × view_scale) and
  random lightings (uniform ``rand_light`` ranges).
* :func:`pseudo_lights` -- the raw light (L's units) in which a pseudo sample is lit.
* :func:`render_pseudo_samples` -- the current canonical depth and albedo, relit and seen from
  random views: the *pseudo samples* and their object masks.
* :class:`LatentOffsetMapper` -- encoder output e ↦ W-space offset Δw through the tail of the
  mapping network (F1_d semantics, including its off-by-one).
* :func:`generate_projected` -- the *projected samples* G(w + Δw), post-processed like the target.
* :class:`ProjectionPool` -- the pool of projected samples (with their pseudo samples' raw views and
  lights) collected after step 2 and read in step 3 (original: sequential shuffled chunks; joint
  mode: random subsets).

All sampling takes an explicit ``torch.Generator`` so that runs are reproducible and resumable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io import CheckpointError, safe_torch_load
from .renderer import Renderer, compose_texture, view_to_physical
from ..utils import center_crop, resize

# Original default `rand_light` = [x_min, x_max, y_min, y_max, r_min, r_max, alpha] (METHOD §5.1).
DEFAULT_RAND_LIGHT = (-1.0, 1.0, -0.2, 0.8, -0.1, 0.6, -0.6)


# --------------------------------------------------------------------------------------------
# View / light distributions
# --------------------------------------------------------------------------------------------

@dataclass
class MVN:
    """A multivariate normal in raw network units; sampled with an explicit generator."""

    mean: torch.Tensor
    cov: torch.Tensor

    def __post_init__(self):
        self.mean = self.mean.detach().float().cpu().reshape(-1)
        self.cov = self.cov.detach().float().cpu()
        d = self.mean.numel()
        if self.cov.shape != (d, d):
            raise ValueError(f"covariance of shape {tuple(self.cov.shape)} does not match mean of size {d}")
        # A tiny jitter keeps Cholesky stable for rank-deficient covariances (e.g. an unused tz).
        self._chol = torch.linalg.cholesky(self.cov.double() + 1e-9 * torch.eye(d, dtype=torch.float64)).float()

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(n, self.mean.numel(), generator=generator)
        return self.mean + eps @ self._chol.T

    def state(self) -> dict:
        return {"mean": self.mean.clone(), "cov": self.cov.clone()}


def load_mvn(path: str | Path, dim: int) -> MVN:
    """Load a ``{'mean', 'cov'}`` file (official ``*_mvn.pth``); errors name the file."""
    d = safe_torch_load(path)
    if not isinstance(d, dict) or "mean" not in d or "cov" not in d:
        raise CheckpointError(f"{path}: expected a dict with 'mean' and 'cov', got "
                              f"{sorted(d) if isinstance(d, dict) else type(d).__name__}")
    mean, cov = torch.as_tensor(d["mean"]), torch.as_tensor(d["cov"])
    if mean.numel() != dim or tuple(cov.shape) != (dim, dim):
        raise CheckpointError(f"{path}: expected mean of size {dim} and cov {dim}x{dim}, got "
                              f"{tuple(mean.shape)} and {tuple(cov.shape)}")
    if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()):
        raise CheckpointError(f"{path}: mean/cov contain NaN or Inf")
    c = cov.double()
    if not torch.allclose(c, c.T, rtol=1e-5, atol=1e-8):
        raise CheckpointError(f"{path}: covariance is not symmetric")
    try:
        return MVN(mean, cov)
    except torch.linalg.LinAlgError as e:
        low = float(torch.linalg.eigvalsh(c).min())
        raise CheckpointError(f"{path}: covariance is not positive semi-definite "
                              f"(smallest eigenvalue {low:.3g})") from e


@dataclass
class ViewLightDistribution:
    """View (6-d) and light (4-d) MVNs; their means are also the V/L output offsets (add_mean_V/L)."""

    view: MVN
    light: MVN

    @classmethod
    def from_files(cls, view_path: str | Path, light_path: str | Path) -> "ViewLightDistribution":
        return cls(load_mvn(view_path, 6), load_mvn(light_path, 4))

    @classmethod
    def from_moments(cls, view_mean, view_cov, light_mean, light_cov) -> "ViewLightDistribution":
        return cls(MVN(torch.as_tensor(view_mean, dtype=torch.float32), torch.as_tensor(view_cov, dtype=torch.float32)),
                   MVN(torch.as_tensor(light_mean, dtype=torch.float32), torch.as_tensor(light_cov, dtype=torch.float32)))

    def save(self, view_path: str | Path, light_path: str | Path) -> None:
        from ..io import atomic_torch_save

        atomic_torch_save(self.view.state(), view_path)
        atomic_torch_save(self.light.state(), light_path)


def sample_views(dist: ViewLightDistribution, n: int, view_scale: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Raw views ``n×6``: v ~ MVN, then the yaw entry scaled by ``view_scale`` (mean included)."""
    v = dist.view.sample(n, generator)
    v[:, 1] = v[:, 1] * view_scale
    return v


def sample_lights(n: int, rand_light=DEFAULT_RAND_LIGHT,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random light directions ``n×3`` (unit, z = 1 before normalising) and strengths ``r`` (n)."""
    x_min, x_max, y_min, y_max, r_min, r_max, _alpha = rand_light
    u = torch.rand(n, 3, generator=generator)
    dx = x_min + (x_max - x_min) * u[:, 0]
    dy = y_min + (y_max - y_min) * u[:, 1]
    r = r_min + (r_max - r_min) * u[:, 2]
    direction = F.normalize(torch.stack([dx, dy, torch.ones_like(dx)], dim=1), dim=1)
    return direction, r


def pseudo_lights(light_dir: torch.Tensor, light_r: torch.Tensor, k_a, k_d, alpha: float) -> torch.Tensor:
    """The raw lights ``N×4`` (network units of L, METHOD §2.4) in which pseudo samples are lit
    (§5.1): ambient k_a + α·r, diffuse k_d + r, direction ``light_dir``. ``k_a``, ``k_d`` are the
    canonical strengths of the image the samples are rendered from (floats, or one per sample), as
    :func:`render_pseudo_samples` uses them; the result is on their device (``light_dir``'s for floats)."""
    device = k_a.device if isinstance(k_a, torch.Tensor) else light_dir.device
    d, r = light_dir.to(device), light_r.to(device)
    return torch.stack([2 * (k_a + alpha * r) - 1, 2 * (k_d + r) - 1, d[:, 0] / d[:, 2], d[:, 1] / d[:, 2]], 1)


# --------------------------------------------------------------------------------------------
# Pseudo samples
# --------------------------------------------------------------------------------------------

@dataclass
class CanonicalState:
    """What a step-1 forward leaves for step 2: the target's canonical quantities (unflipped)."""

    depth: torch.Tensor      # 1×S×S, border-clamped canonical depth
    albedo: torch.Tensor     # 1×3×S×S in [-1, 1]
    normals: torch.Tensor    # 1×S×S×3
    k_a: torch.Tensor        # 1
    k_d: torch.Tensor        # 1
    canon_mask: torch.Tensor | None = None  # 1×1×S×S object mask in the canonical frame

    def detach(self) -> "CanonicalState":
        return CanonicalState(*(t.detach() if t is not None else None for t in
                                (self.depth, self.albedo, self.normals, self.k_a, self.k_d, self.canon_mask)))

    def to(self, device) -> "CanonicalState":
        return CanonicalState(*(t.to(device) if t is not None else None for t in
                                (self.depth, self.albedo, self.normals, self.k_a, self.k_d, self.canon_mask)))


@torch.no_grad()
def render_pseudo_samples(renderer: Renderer, state: CanonicalState, raw_views: torch.Tensor,
                          light_dir: torch.Tensor, light_r: torch.Tensor, alpha: float,
                          rot_range_deg: float = 60.0, xy_range: float = 0.1,
                          z_range: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Relight the canonical albedo and render it from random views (METHOD §5.1, §5.3).

    ``state`` may hold K stacked images; the N views/lights are then K-major, N/K per image, each
    image relit with its own ambient and diffuse strengths.
    Returns pseudo samples ``N×3×S×S`` (clamped to [-1, 1]) and their masks ``N×1×S×S``
    (nearest-warped canonical object mask; not multiplied by the depth validity mask).
    """
    n = raw_views.shape[0]
    k = state.depth.shape[0]
    if n % k:
        raise ValueError(f"{n} views do not split evenly over {k} canonical states")
    device = state.depth.device
    light_dir, light_r = light_dir.to(device).view(n, 1, 1, 3), light_r.to(device).view(n, 1, 1, 1)

    def per_sample(t: torch.Tensor) -> torch.Tensor:  # each image's canonical quantity, once per sample
        return t.expand(n, *t.shape[1:]) if k == 1 else t.repeat_interleave(n // k, 0)

    # 1. relit canonical texture: shading = (k_a + alpha·r) + (k_d + r)·max(0, n·dir)
    s_diff = (per_sample(state.normals) * light_dir).sum(-1).clamp(min=0).unsqueeze(1)
    shading = (per_sample(state.k_a).view(n, 1, 1, 1) + alpha * light_r) \
        + (per_sample(state.k_d).view(n, 1, 1, 1) + light_r) * s_diff
    texture = compose_texture(per_sample(state.albedo), shading)
    # 2. canonical object mask (all ones without use_mask)
    mask = per_sample(state.canon_mask) if state.canon_mask is not None else torch.ones_like(texture[:, :1])
    # 3. depth seen from each random view, inverse warp of texture (bilinear) and mask (nearest)
    views = view_to_physical(raw_views.to(device), rot_range_deg, xy_range, z_range)
    recon_depth = renderer.warp_canon_depth(per_sample(state.depth), views)
    grid = renderer.inverse_warp_grid(recon_depth, views)
    pseudo = F.grid_sample(texture, grid, mode="bilinear", padding_mode="zeros", align_corners=True).clamp(-1, 1)
    pseudo_mask = F.grid_sample(mask, grid, mode="nearest", padding_mode="zeros", align_corners=True)
    return pseudo, pseudo_mask


# --------------------------------------------------------------------------------------------
# Projected samples
# --------------------------------------------------------------------------------------------

class LatentOffsetMapper(nn.Module):
    """Encoder output e ↦ W-space offset Δw = F(e + center_h) − center_w (METHOD §5.4).

    With mapping modules [PixelNorm, FC1..FCn] (n = n_mlp), ``F`` applies modules with index
    ≥ n − F1_d, ``center_h`` = modules with index < n − F1_d applied to 0 and ``center_w`` = the
    full mapping of 0. For F1_d = 2 that is *three* FC layers (the off-by-one of the original).
    """

    def __init__(self, generator: nn.Module, f1_d: int = 2):
        super().__init__()
        n = generator.n_mlp
        if not 0 <= f1_d <= n:
            raise ValueError(f"F1_d must be in [0, {n}], got {f1_d}")
        self.generator = [generator]  # not a submodule: G is frozen and shared
        self.split = n - f1_d
        with torch.no_grad():
            p = next(generator.parameters())
            zero = torch.zeros(1, generator.style_dim, device=p.device, dtype=p.dtype)
            center_h = generator.style_forward(zero, 0, self.split)
            center_w = generator.style_forward(zero, 0, None)
        self.register_buffer("center_h", center_h)
        self.register_buffer("center_w", center_w)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        g = self.generator[0]
        return g.style_forward(e + self.center_h, self.split, None) - self.center_w


def postprocess_gan_image(img: torch.Tensor, image_size: int, crop: int | None = None,
                          origin_size: int | None = None) -> torch.Tensor:
    """Clamp a GAN output to [-1, 1]; with ``crop``: resize to ``origin_size`` and centre-crop; resize to S."""
    img = img.clamp(-1, 1)
    if crop is not None:
        if origin_size is not None:
            img = resize(img, origin_size)
        img = center_crop(img, crop)
    return resize(img, image_size)


def generate_projected(generator: nn.Module, w: torch.Tensor, dw: torch.Tensor, image_size: int,
                       crop: int | None = None, origin_size: int | None = None) -> torch.Tensor:
    """Projected samples Q = G(w + Δw) with fixed noise and no truncation (METHOD §5.5).

    ``w`` is ``1×C`` (one W for all layers) or ``1×n_latent×C`` (W+); ``dw`` is ``N×C`` and is
    added to every layer.
    """
    if w.dim() == 3:
        styles = w + dw.unsqueeze(1)
    else:
        styles = w + dw
    img, _ = generator(styles, input_is_w=True, randomize_noise=False)
    return postprocess_gan_image(img, image_size, crop, origin_size)


POOL_FIELDS = ("images", "masks", "views", "lights")


class ProjectionPool:
    """Projected samples collected after step 2 (METHOD §5.6): each sample's image, mask, and the
    raw view (6) and raw light (4) of the pseudo sample it was projected from (:func:`pseudo_lights`;
    read in step 3 only with ``MethodConfig.step3_viewlight = "pseudo"``). Reads return the tuple
    (images, masks, views, lights)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.images: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None
        self.views: torch.Tensor | None = None
        self.lights: torch.Tensor | None = None
        self._chunks: list[tuple[torch.Tensor, ...]] = []
        self.pos = 0  # read position; never reset between stages (as the original)

    def __len__(self) -> int:
        return 0 if self.images is None else self.images.shape[0]

    def start(self) -> None:
        """Begin a new collection; the previous stage's pool is replaced when it finishes."""
        self._chunks = []

    def add(self, images: torch.Tensor, masks: torch.Tensor, views: torch.Tensor, lights: torch.Tensor) -> None:
        if not images.shape[0] == masks.shape[0] == views.shape[0] == lights.shape[0]:
            raise ValueError(f"pool samples disagree in number: {images.shape[0]} images, {masks.shape[0]} masks, "
                             f"{views.shape[0]} views, {lights.shape[0]} lights")
        self._chunks.append(tuple(t.detach().to(self.device) for t in (images, masks, views, lights)))

    @property
    def collected(self) -> int:
        """Number of batches added since :meth:`start`."""
        return len(self._chunks)

    def finish(self) -> None:
        for name, parts in zip(POOL_FIELDS, zip(*self._chunks)):
            setattr(self, name, torch.cat(parts))
        self._chunks = []

    def _take(self, idx) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, name)[idx] for name in POOL_FIELDS)

    def all(self) -> tuple[torch.Tensor, ...]:
        """The whole pool (the replication's last-batch mode)."""
        return self._take(slice(None))

    def next_batch(self, batch: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Sequential chunks; reshuffle and restart when the next chunk would run past the end.

        The position is advanced *before* the read, as in the original.
        """
        if len(self) < batch:
            raise RuntimeError(f"projection pool holds {len(self)} samples, fewer than a batch of {batch}")
        self.pos += batch
        if self.pos + batch > len(self):
            perm = torch.randperm(len(self), generator=generator).to(self.device)
            for name, t in zip(POOL_FIELDS, self._take(perm)):
                setattr(self, name, t)
            self.pos = 0
        return self._take(slice(self.pos, self.pos + batch))

    def random_batch(self, batch: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """A random subset of ``batch`` samples (joint mode)."""
        idx = torch.randperm(len(self), generator=generator)[:batch].to(self.device)
        return self._take(idx)

    def state_dict(self) -> dict:
        return {**{name: getattr(self, name) for name in POOL_FIELDS}, "pos": self.pos}

    def load_state_dict(self, d: dict) -> None:
        missing = [name for name in POOL_FIELDS if name not in d]
        if missing:
            raise CheckpointError(f"projection pool state lacks {missing} (a checkpoint of an older version)")
        for name in POOL_FIELDS:
            setattr(self, name, None if d[name] is None else d[name].to(self.device))
        self.pos = int(d["pos"])


def rotation_sweep(n_yaw: int = 9, max_yaw_deg: float = 70.0, n_pitch: int = 5,
                   max_pitch_deg: float = 20.0) -> torch.Tensor:
    """Physical views of the original's rotation figure: yaws in [−Y, Y], then pitches in ±20°."""
    yaws = torch.linspace(-max_yaw_deg, max_yaw_deg, n_yaw)
    pitches = torch.linspace(-max_pitch_deg, max_pitch_deg, n_pitch)
    views = torch.zeros(n_yaw + n_pitch, 6)
    views[:n_yaw, 1] = yaws * math.pi / 180
    views[n_yaw:, 0] = pitches * math.pi / 180
    return views
