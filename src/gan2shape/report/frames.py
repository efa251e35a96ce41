"""Images and frame sequences of a reconstruction (METHOD §1.8, §3.8): colour-mapped depth,
normals, the original's "shape" image, relit renders in the input view, rotations of the canonical
shape, and their PNG/GIF files.

Conventions: images are ``3×H×W`` (or ``N×3×H×W`` frame stacks) in [−1, 1] unless a function says
[0, 1]; depth ``S×S`` (or ``1×S×S`` where a renderer is called); normals ``S×S×3`` (pointing away
from the camera, §3.6). Every file is written through :mod:`gan2shape.io`'s atomic helpers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..io import atomic_path

# §1.8: 20 relighting conditions (dx, dy, strength r); direction = normalize([dx, dy, 1]).
# Order: r outermost, then dy, then dx (dx varies fastest, so a GIF sweeps left → right).
ORIGINAL_RELIGHT: tuple[tuple[float, float, float], ...] = tuple(
    (dx, dy, r) for r in (0.3, 0.6) for dy in (0.0, 0.6) for dx in (-1.5, -0.7, 0.0, 0.7, 1.5))



def mpl():
    """matplotlib with the non-interactive Agg backend."""
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    return matplotlib


def colorize(values: Tensor, lo: float, hi: float, cmap: str = "magma") -> Tensor:
    """Colour-mapped ``S×S`` values ``3×S×S`` in [0, 1]: ``lo`` → the start of ``cmap``, ``hi`` → its
    end (``lo > hi`` reverses the map)."""
    v = values.detach().float().cpu().reshape(values.shape[-2:])
    t = ((v - lo) / (hi - lo if hi != lo else 1e-8)).clamp(0, 1)
    lut = mpl().colormaps[cmap](np.linspace(0, 1, 256))[:, :3]  # 256×3
    return torch.from_numpy(lut).float()[(t * 255).round().long()].permute(2, 0, 1).contiguous()


def depth_to_color(depth: Tensor, lo: float | None = None, hi: float | None = None,
                   cmap: str = "magma") -> Tensor:
    """Colour-mapped depth ``3×S×S`` in [0, 1]; near (small depth) = bright end of ``cmap``.
    ``lo``/``hi`` default to the map's min/max."""
    d = depth.detach().float().cpu().reshape(depth.shape[-2:])
    lo = float(d.min()) if lo is None else float(lo)
    hi = float(d.max()) if hi is None else float(hi)
    return colorize(d, hi, lo if hi - lo > 1e-8 else hi - 1e-8, cmap)


def normals_to_image(normals: Tensor) -> Tensor:
    """Normals ``S×S×3`` (or ``1×S×S×3``) → ``3×S×S`` in [0, 1] as (n + 1)/2."""
    n = normals.detach().float().cpu().reshape(*normals.shape[-3:])
    return ((n + 1) / 2).clamp(0, 1).permute(2, 0, 1).contiguous()


def shading_image(normals: Tensor, light_dir: Sequence[float] | Tensor = (0.0, 0.0, 1.0)) -> Tensor:
    """The original's "shape" image (§1.8): 0.7·max(0, n·l) replicated to ``3×S×S`` (in [0, 1])."""
    n = normals.detach().float().cpu().reshape(*normals.shape[-3:])
    l = torch.as_tensor(light_dir, dtype=torch.float32).reshape(3)
    l = l / l.norm().clamp(min=1e-8)
    s = 0.7 * (n * l).sum(-1).clamp(min=0)
    return s.unsqueeze(0).expand(3, -1, -1).contiguous()


def _as_batch(x, ref: Tensor) -> Tensor:
    return torch.as_tensor(x, dtype=ref.dtype, device=ref.device).reshape(-1)


def canonical_texture(renderer, depth: Tensor, albedo: Tensor, k_a, k_d, light_dir) -> Tensor:
    """Canonical texture ``1×3×S×S`` = albedo shaded by the recovered light (§3.6)."""
    from ..method.renderer import compose_texture, shade

    depth = depth.reshape(1, *depth.shape[-2:])
    albedo = albedo.reshape(1, 3, *albedo.shape[-2:]).to(depth)
    d = torch.as_tensor(light_dir, dtype=depth.dtype, device=depth.device).reshape(1, 3)
    d = d / d.norm(dim=1, keepdim=True).clamp(min=1e-8)
    shading, _ = shade(renderer.normals(depth), _as_batch(k_a, depth), _as_batch(k_d, depth), d)
    return compose_texture(albedo, shading)


def circular_lights(n: int = 24, radius: float = 1.0, strength: float = 0.3) -> list[tuple[float, float, float]]:
    """A smooth relighting sweep: (dx, dy) on a circle of ``radius``, constant strength r."""
    return [(radius * math.cos(2 * math.pi * i / n), radius * math.sin(2 * math.pi * i / n), strength)
            for i in range(n)]


@torch.no_grad()
def relight_frames(renderer, depth: Tensor, albedo: Tensor, view: Tensor, k_a, k_d,
                   lights: str | Iterable[Sequence[float]] = "original", n_frames: int = 24) -> Tensor:
    """Relit renders in the input ``view`` (§1.8): for each light (dx, dy, r), direction
    normalize([dx, dy, 1]) and shading = k_a − 0.6·r + (k_d + r)·max(0, n·dir), the texture
    inverse-warped into the view like the reconstruction. ``lights``: "original" (the 20 of
    :data:`ORIGINAL_RELIGHT`), "circle" (:func:`circular_lights` with ``n_frames``) or a list of
    (dx, dy, r). Returns ``N×3×S×S`` in [−1, 1]."""
    from ..method.renderer import compose_texture

    if isinstance(lights, str):
        if lights == "original":
            lights = ORIGINAL_RELIGHT
        elif lights == "circle":
            lights = circular_lights(n_frames)
        else:
            raise ValueError(f"lights must be 'original', 'circle' or a list of (dx, dy, r), got {lights!r}")
    L = torch.as_tensor([list(x) for x in lights], dtype=depth.dtype, device=depth.device)
    if L.dim() != 2 or L.shape[1] != 3:
        raise ValueError(f"lights must be (dx, dy, r) triples, got shape {tuple(L.shape)}")
    depth = depth.reshape(1, *depth.shape[-2:])
    albedo = albedo.reshape(1, 3, *albedo.shape[-2:]).to(depth)
    view = view.reshape(1, 6).to(depth)
    k_a, k_d = _as_batch(k_a, depth)[:1], _as_batch(k_d, depth)[:1]
    dirs = torch.cat([L[:, :2], torch.ones_like(L[:, :1])], 1)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    n = renderer.normals(depth)  # 1×S×S×3
    s_diff = torch.einsum("bhwk,nk->nhw", n, dirs).clamp(min=0).unsqueeze(1)  # N×1×S×S
    r = L[:, 2].view(-1, 1, 1, 1)
    shading = k_a - 0.6 * r + (k_d + r) * s_diff
    textures = compose_texture(albedo, shading)
    # one view for all lights: the warp grid is computed once
    recon_depth = renderer.warp_canon_depth(depth, view)
    grid = renderer.inverse_warp_grid(recon_depth, view).to(textures.dtype)
    out = F.grid_sample(textures, grid.expand(len(L), -1, -1, -1), mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    return out.clamp(-1, 1)


@torch.no_grad()
def rotate_frames(renderer, depth: Tensor, albedo: Tensor, k_a, k_d, light_dir, views: Tensor,
                  colors: Tensor | None = None, batch: int = 8) -> Tensor:
    """The canonical shape seen from physical ``views`` (``N×6``, rotation about the rotation
    centre), rasterised as a vertex-coloured mesh with a white background (§3.8). Colours: the
    canonical texture (albedo shaded by the recovered light) unless ``colors`` (``1×3×S×S`` in
    [−1, 1], e.g. a normal or shape image) is given. Returns ``N×3×S×S`` in [−1, 1]."""
    depth = depth.reshape(1, *depth.shape[-2:])
    if colors is None:
        colors = canonical_texture(renderer, depth, albedo, k_a, k_d, light_dir)
    colors = colors.reshape(1, 3, *depth.shape[-2:]).to(depth)
    views = views.reshape(-1, 6).to(depth)
    out = []
    for i in range(0, len(views), batch):
        v = views[i:i + batch]
        out.append(renderer.render_mesh_colors(depth.expand(len(v), -1, -1),
                                               colors.expand(len(v), -1, -1, -1), v, background=1.0))
    return torch.cat(out, 0)

def rotation_loop(view: Tensor, n_yaw: int = 9, max_yaw_deg: float = 70.0, n_pitch: int = 5,
                  max_pitch_deg: float = 20.0) -> Tensor:
    """Physical views ``(n_yaw + n_pitch)×6`` for a looping rotation GIF that starts in ``view``
    (the recovered input view, ``1×6``): yaw offsets Y·sin(2πk/n_yaw), then pitch offsets
    P·sin(2πk/n_pitch), added to the input view's angles. Frame 0 is the input view itself."""
    base = view.reshape(1, 6).float()
    yaw = max_yaw_deg * torch.sin(2 * math.pi * torch.arange(n_yaw) / n_yaw)
    pitch = max_pitch_deg * torch.sin(2 * math.pi * torch.arange(n_pitch) / n_pitch)
    views = base.repeat(n_yaw + n_pitch, 1)
    views[:n_yaw, 1] += torch.deg2rad(yaw)
    views[n_yaw:, 0] += torch.deg2rad(pitch)
    return views


# --------------------------------------------------------------------------------------------
# PNG and GIF files
# --------------------------------------------------------------------------------------------

def to_uint8(img: Tensor, value_range=(-1.0, 1.0)) -> np.ndarray:
    """``3×H×W`` / ``1×H×W`` / ``H×W`` → ``H×W×3`` uint8."""
    x = img.detach().float().cpu()
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    lo, hi = value_range
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    return x.mul(255).round().byte().permute(1, 2, 0).numpy()


def save_rgb(img: Tensor, path: str | Path, value_range=(0.0, 1.0)) -> Path:
    """Write one image (``value_range`` mapped to 0..255) as a PNG, atomically."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(to_uint8(img, value_range)).save(tmp, format="PNG")
    return path


def save_gif(frames: Tensor, path: str | Path, fps: float = 10, upscale: int = 4, mode: str = "bilinear",
             value_range=(-1.0, 1.0)) -> Path:
    """Write ``N×3×H×W`` frames as a looping GIF (atomic), enlarged ``upscale`` times
    (``mode`` "bilinear" or "nearest") so that small renders are viewable."""
    from PIL import Image

    x = frames.detach().float().cpu()
    if x.dim() != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise ValueError(f"{path}: expected N×3×H×W frames, got shape {tuple(x.shape)}")
    if upscale and upscale != 1:
        kw = {"align_corners": False} if mode == "bilinear" else {}
        x = F.interpolate(x, scale_factor=upscale, mode=mode, **kw)
    images = [Image.fromarray(to_uint8(f, value_range)) for f in x]
    path = Path(path)
    with atomic_path(path, suffix=".gif") as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(int(round(1000 / fps)), 10), loop=0, optimize=False)
    return path

