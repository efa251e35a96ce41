"""Ground-truth rendering of synthetic scenes, and the endless training stream of renders.

Geometry and camera follow METHOD §3: pinhole camera at the origin looking along +z, OpenCV axes,
fx = fy = ((S−1)/2)/tan(5°), cx = cy = (S−1)/2, output pixel (r, c) centred at (u, v) = (c, r). The
object frame (:mod:`.geometry`) is centred at the rotation centre C = (0, 0, 1); a view places it as
described in :mod:`.scenes`. Normals are the interpolated (area-weighted) vertex normals, i.e. smooth
shading, in the method's sign convention (a surface facing the camera has n = (0, 0, +1): n = −outward
normal).

Rendering: pytorch3d ``MeshRasterizer`` (cameras from ``cameras_from_opencv_projection``) at
``supersample``·S with K scaled so that the s×s sub-samples of output pixel (r, c) lie at
(c − ½ + (i + ½)/s, r − ½ + (j + ½)/s). By default (``raster="tiled"``) the screen is cut into
16×16-sample tiles; the front-facing faces overlapping a tile, in chunks of ≤ 128, become small
meshes seen by cameras whose principal point is moved to the tile, all rasterised in one call and
merged by a z-test. pytorch3d's CPU rasteriser is O(pixels × faces) per mesh (~10 s for one 256²
image of 20k faces); tiled, 64 images at 64 px take ~15 s on 2 CPU cores. ``raster="native"``
rasterises whole meshes (identical result; on CUDA with coarse-to-fine binning). Every step is
deterministic, on CUDA too (no atomic adds: vertex normals are segment sums of a cumulative sum).
Per sub-sample: camera z (``zbuf``), perspective-correct interpolated normal and albedo, the method's
Lambertian shading k_a + k_d·max(0, n·d), d = normalize([lx, ly, 1]), and
image = ((albedo + 1)/2·shading)·2 − 1; then the s×s sub-samples are averaged:

* ``image``: mean over all sub-samples, uncovered ones carrying the plain grey background
  (``SceneParams.background``, uniform in [−0.5, 0.5]) — ordinary anti-aliasing.
* ``mask``: the covered fraction of the sub-samples.
* ``depth``: boundary rule — a pixel is object iff at least half of its sub-samples are covered;
  its depth is then the mean camera z of the covered sub-samples (capped at 1.099 so that
  ``depth < 1.1`` always identifies the object); otherwise the background value 1.1 (FAR).
* ``normals``: same rule, normalised mean of the covered sub-samples' unit normals; background
  (0, 0, 1). ``albedo``: same rule, mean albedo; background 0.

Albedo reflectance (a + 1)/2 stays in [0.02, 0.66] and k_a + k_d ≤ 1.5, so the shaded image never
reaches the clamp at +1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..method.exact import no_tf32
from ..method.raster import rasterize_native, rasterize_tiled
from ..method.renderer import compose_texture, rotation_matrix
from .geometry import build_meshes
from .scenes import ALL_FAMILIES, FAMILIES, V2_FAMILIES, SceneParams, sample_params, stream_params, world_of

__all__ = ["FAR_DEPTH", "intrinsics", "render_batch", "TrainingStream", "render_dataset"]

FOV = 10.0
ROT_CENTER = 1.0
FAR_DEPTH = 1.1             # depth of the background (METHOD §8.2: GT mask = depth < max)
MAX_OBJECT_DEPTH = 1.099    # object depths are capped here so that depth < FAR always holds
_TILE = 16  # tiled rasterisation: tile size (sub-samples) and faces per chunk
_CAP = 128


def intrinsics(size: int, supersample: int = 1, device="cpu") -> Tensor:
    """K (3×3 float32) of the S-pixel camera, scaled for ``supersample`` so that pytorch3d's screen
    pixel j (centred at j + ½) samples u = (j + ½)/s − ½ in output-pixel units."""
    fx = (size - 1) / 2 / math.tan(math.radians(FOV) / 2)
    cx = (size - 1) / 2
    s = supersample
    return torch.tensor([[s * fx, 0.0, s * (cx + 0.5)], [0.0, s * fx, s * (cx + 0.5)], [0.0, 0.0, 1.0]],
                        dtype=torch.float32, device=device)


def _vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted outward vertex normals ``B×V×3`` (unit).

    The per-vertex sums of face normals are segment sums over the (vertex-sorted) face corners, taken
    as differences of a float64 cumulative sum: unlike ``index_add_`` this is deterministic on CUDA.
    """
    B, V = verts.shape[:2]
    tri = verts[:, faces]
    fn = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    corner_vertex = faces.reshape(-1)
    order = torch.argsort(corner_vertex, stable=True)
    cs = torch.cumsum(fn[:, order // 3].double(), 1)
    cs = torch.cat([cs.new_zeros(B, 1, 3), cs], 1)
    ends = torch.cumsum(torch.bincount(corner_vertex, minlength=V), 0)
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    vn = (cs[:, ends] - cs[:, starts]).to(verts.dtype)
    return vn / vn.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def _render_family(params: list[SceneParams], size: int, device, supersample: int, raster: str,
                   warp: Tensor | None = None) -> dict:
    B, s = len(params), int(supersample)
    H = size * s
    verts_obj, faces, albedo_v = build_meshes(params, size, device)
    # place the objects: P = R(pitch, yaw, roll)·p + C + T
    view = torch.tensor([p.view for p in params], dtype=torch.float32, device=device)
    R = rotation_matrix(view[:, 0], view[:, 1], view[:, 2])
    centre = verts_obj.new_tensor([0.0, 0.0, ROT_CENTER])
    verts = verts_obj @ R.transpose(1, 2) + view[:, None, 3:6] + centre
    normals_v = -_vertex_normals(verts, faces)  # method convention: facing the camera → +z
    if warp is not None:
        # re-view the placed object like the method's canonical→view warp, P' = Rw(P − C) + C + Tw;
        # shading (below) stays in the placed frame, normals are reported in the new camera frame
        Rw = rotation_matrix(warp[:, 0], warp[:, 1], warp[:, 2])
        verts = (verts - centre) @ Rw.transpose(1, 2) + centre + warp[:, None, 3:6]
    K = intrinsics(size, s, device)
    if raster == "tiled":
        p2f, zbuf, bary = rasterize_tiled(verts, faces, K, H, tile=_TILE, cap=_CAP, cull_backfaces=True)
    elif raster == "native":
        p2f, zbuf, bary = rasterize_native(verts, faces, K, H)
    else:
        raise ValueError(f"raster must be 'tiled' or 'native', got {raster!r}")
    cov = p2f >= 0
    V = verts.shape[1]
    # interpolate (normal, albedo) at the covered sub-samples with perspective-correct barycentrics
    b_of = torch.arange(B, device=device).view(B, 1, 1).expand_as(p2f)[cov]
    vid = faces[p2f[cov]] + (b_of * V)[:, None]
    attrs = torch.cat([normals_v, albedo_v], -1).reshape(B * V, 6)
    vals = (attrs[vid] * bary[cov][..., None]).sum(1)
    n = vals[:, :3] / vals[:, :3].norm(dim=-1, keepdim=True).clamp(min=1e-12)
    alb = vals[:, 3:]
    # Lambertian shading of the method (METHOD §3.6)
    ka = torch.tensor([p.k_a for p in params], dtype=torch.float32, device=device)
    kd = torch.tensor([p.k_d for p in params], dtype=torch.float32, device=device)
    ld = torch.tensor([p.light_direction for p in params], dtype=torch.float32, device=device)
    shading = ka[b_of] + kd[b_of] * (n * ld[b_of]).sum(-1).clamp(min=0)
    col = compose_texture(alb, shading[:, None]).clamp(-1, 1)
    bg = torch.tensor([p.background for p in params], dtype=torch.float32, device=device)
    # scatter the sub-samples: channels = colour(3), coverage, z, normal(3), albedo(3)
    full = torch.zeros(B, H, H, 11, device=device)
    full[..., 0:3] = bg.view(B, 1, 1, 1)
    full[cov] = torch.cat([col, torch.ones_like(shading)[:, None], zbuf[cov][:, None], n, alb], -1)
    pooled = F.avg_pool2d(full.permute(0, 3, 1, 2), s)  # B×11×S×S
    image, mask = pooled[:, 0:3], pooled[:, 3:4]
    fg = mask[:, 0] >= 0.5 - 1e-6
    m = mask[:, 0].clamp(min=1e-12)
    depth = torch.where(fg, (pooled[:, 4] / m).clamp(max=MAX_OBJECT_DEPTH), torch.full_like(m, FAR_DEPTH))
    nrm = pooled[:, 5:8].permute(0, 2, 3, 1)
    if warp is not None:
        nrm = (nrm.reshape(B, -1, 3) @ Rw.transpose(1, 2)).reshape(nrm.shape)
    nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    nrm = torch.where(fg[..., None], nrm, nrm.new_tensor([0.0, 0.0, 1.0]))
    albedo = torch.where(fg[:, None], pooled[:, 8:11] / m[:, None], torch.zeros_like(pooled[:, 8:11]))
    light = torch.stack([ka, kd, torch.tensor([p.lx for p in params], device=device),
                         torch.tensor([p.ly for p in params], device=device)], 1)
    return dict(image=image.contiguous(), depth=depth, normals=nrm.contiguous(), mask=mask.contiguous(),
                albedo=albedo.contiguous(), view=view, light=light)


@torch.no_grad()
@no_tf32()  # exact geometry on CUDA whatever the caller's TF32 settings (method/exact.py)
def render_batch(params: list[SceneParams], size: int = 64, device="cpu", supersample: int = 4,
                 raster: str = "tiled", chunk: int = 32, warp: Tensor | None = None) -> dict[str, Tensor]:
    """Render scenes (any mix of families) on ``device``.

    ``warp`` (B×6 physical views, optional) re-views each placed object as the method's renderer
    warps a depth map of it (METHOD §3.2), the light staying attached to the placed object's frame:
    the ground truth of a pseudo sample whose canonical frame is this image's view. ``view`` stays
    the scene's own placement; ``depth``, ``normals`` and ``mask`` are those of the re-viewed object.

    Returns float32 tensors: ``image`` B×3×S×S in [−1, 1], ``depth`` B×S×S (background 1.1),
    ``normals`` B×S×S×3 (background (0, 0, 1)), ``mask`` B×1×S×S (coverage), ``albedo`` B×3×S×S
    (background 0), ``view`` B×6 (physical, METHOD units) and ``light`` B×4 (k_a, k_d, lx, ly).

    World v2 scenes (one world per call) are rendered by :func:`.v2.render_v2` with the method's
    renderer (``supersample``/``raster`` do not apply; ``warp`` is not supported): ``mask`` is then
    binary, ``albedo`` canonical, plus ``canon_depth``, ``canon_mask``, ``valid``, ``recon_depth``.
    """
    if not params:
        raise ValueError("render_batch: no scenes given")
    if size < 4 or supersample < 1:
        raise ValueError(f"render_batch: bad size {size} / supersample {supersample}")
    unknown = {p.family for p in params} - set(ALL_FAMILIES)
    if unknown:
        raise ValueError(f"unknown family {sorted(unknown)} (expected one of {ALL_FAMILIES})")
    v2 = world_of(p.family for p in params) == "v2"
    if v2 and warp is not None:
        raise ValueError("render_batch: warp is a world-v1 option (v2: gan2shape.world.v2.render_v2(views=...))")
    device = torch.device(device)
    if warp is not None:
        if tuple(warp.shape) != (len(params), 6):
            raise ValueError(f"render_batch: warp must be {len(params)}×6 physical views, got {tuple(warp.shape)}")
        warp = warp.to(device=device, dtype=torch.float32)
    parts: list[tuple[list[int], dict]] = []
    for fam in (V2_FAMILIES if v2 else FAMILIES):
        idx = [i for i, p in enumerate(params) if p.family == fam]
        for j in range(0, len(idx), chunk):
            sub = idx[j:j + chunk]
            if v2:
                from .v2 import render_v2

                parts.append((sub, render_v2([params[i] for i in sub], size, device)))
                continue
            w = None if warp is None else warp[sub]
            parts.append((sub, _render_family([params[i] for i in sub], size, device, supersample, raster, w)))
    if len(parts) == 1 and parts[0][0] == list(range(len(params))):
        return parts[0][1]
    out = {}
    for k, v in parts[0][1].items():
        out[k] = v.new_empty((len(params),) + v.shape[1:])
    for idx, r in parts:
        ii = torch.tensor(idx, device=device)
        for k in out:
            out[k][ii] = r[k]
    return out


class TrainingStream:
    """Endless, seeded batches of rendered images ``B×3×S×S`` for GAN training.

    Batch k holds stream scenes k·B … k·B + B − 1 (:func:`stream_params`), so the stream is
    deterministic and resumable: ``state_dict()`` / ``load_state_dict()`` keep the batch counter.
    """

    def __init__(self, families=FAMILIES, size: int = 64, batch: int = 64, seed: int = 0, device="cuda",
                 supersample: int = 4):
        families = tuple(families)
        bad = set(families) - set(ALL_FAMILIES)
        if not families or bad:
            raise ValueError(f"TrainingStream: bad families {families} (expected a subset of {FAMILIES} or {V2_FAMILIES})")
        world_of(families)
        self.families, self.size, self.batch, self.seed = families, int(size), int(batch), int(seed)
        self.device, self.supersample = device, int(supersample)
        self.position = 0  # index of the next batch

    def __iter__(self):
        return self

    def __next__(self) -> Tensor:
        return self.next()

    def next(self) -> Tensor:
        params = stream_params(self.families, self.batch, self.seed, self.position * self.batch)
        self.position += 1
        return render_batch(params, self.size, self.device, self.supersample)["image"]

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, "seed": self.seed, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed", self.seed) != self.seed or state.get("batch", self.batch) != self.batch:
            raise ValueError("TrainingStream.load_state_dict: seed/batch differ from this stream's")
        self.position = int(state["position"])


def render_dataset(family: str, n: int, seed: int, size: int = 64, device="cpu", batch: int = 64,
                   supersample: int = 4) -> dict[str, Any]:
    """Render ``sample_params(family, n, seed)`` in batches; tensors stacked on the CPU, plus
    ``params`` (the list of :class:`SceneParams`)."""
    params = sample_params(family, n, seed)
    chunks = [render_batch(params[i:i + batch], size, device, supersample) for i in range(0, n, batch)]
    out: dict[str, Any] = {k: torch.cat([c[k].cpu() for c in chunks]) for k in chunks[0]}
    out["params"] = params
    return out

