"""Meshes and albedo of the synthetic world's objects (object frame, one family per call).

Meshes: a UV sphere with a fixed topology per (family, resolution) (so a batch stacks as B×V×3 with
shared faces), deformed by the family's shape function; ~1 output pixel per triangle edge
(``_mesh_res``). The object frame is centred at the rotation centre with the object facing the camera
(the face looks along −z). Albedo reflectance (a + 1)/2 stays in [0.02, 0.66] (``RHO_RANGE``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from .scenes import FAMILIES, SceneParams

__all__ = ["build_meshes"]

RHO_RANGE = (0.02, 0.66)                               # albedo reflectance (a + 1)/2


def _mesh_res(size: int) -> tuple[int, int]:
    """(rings, segments) of the UV sphere: triangle edges of about one output pixel."""
    n_lat = max(16, int(round(1.5 * size)))
    return n_lat, 2 * n_lat


@lru_cache(maxsize=16)
def _uv_sphere_cpu(n_lat: int, n_lon: int) -> tuple[Tensor, Tensor]:
    """Unit directions ``V×3`` and outward-oriented faces ``F×3`` of a UV sphere with poles on ±y.

    d(θ, φ) = (sin θ sin φ, −cos θ, −sin θ cos φ): θ from the top (−y, OpenCV y is down), φ = 0 at
    the front (−z, facing the camera); vertex 0 is the top pole, then n_lat rings, then the bottom pole.
    """
    theta = torch.arange(1, n_lat + 1, dtype=torch.float64) * math.pi / (n_lat + 1)
    phi = torch.arange(n_lon, dtype=torch.float64) * 2 * math.pi / n_lon
    th, ph = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([th.sin() * ph.sin(), -th.cos(), -th.sin() * ph.cos()], -1).reshape(-1, 3)
    dirs = torch.cat([ring.new_tensor([[0.0, -1.0, 0.0]]), ring, ring.new_tensor([[0.0, 1.0, 0.0]])])
    bottom = 1 + n_lat * n_lon
    idx = 1 + torch.arange(n_lat * n_lon).view(n_lat, n_lon)
    nxt = idx.roll(-1, dims=1)
    a, b, c, d = idx[:-1], nxt[:-1], idx[1:], nxt[1:]
    quads = torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3), torch.stack([b, c, d], -1).reshape(-1, 3)])
    top_fan = torch.stack([torch.zeros(n_lon, dtype=torch.long), idx[0], nxt[0]], -1)
    bot_fan = torch.stack([torch.full((n_lon,), bottom), nxt[-1], idx[-1]], -1)
    faces = torch.cat([top_fan, quads, bot_fan])
    # orient every face outward (its normal along its centroid)
    tri = dirs[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    flip = (n * tri.mean(1)).sum(-1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return dirs.float(), faces


def _uv_sphere(n_lat: int, n_lon: int, device) -> tuple[Tensor, Tensor]:
    d, f = _uv_sphere_cpu(n_lat, n_lon)
    return d.to(device), f.to(device)


def _smoothstep(e0: float | Tensor, e1: float | Tensor, x: Tensor) -> Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _gauss(x: Tensor, s: float | Tensor) -> Tensor:
    return torch.exp(-(x / s) ** 2)


def _stack(params: list[SceneParams], group: str, key: str, device) -> Tensor:
    """Parameter ``key`` of ``shape``/``albedo`` for the batch, float32 ``B×...``."""
    return torch.tensor([getattr(p, group)[key] for p in params], dtype=torch.float32, device=device)


def _face_geometry(params: list[SceneParams], size: int, device):
    """Face vertices ``B×V×3`` (object frame), faces, and (u, v, front weight) for the albedo."""
    n_lat, n_lon = _mesh_res(size)
    d, faces = _uv_sphere(n_lat, n_lon, device)
    s = {k: _stack(params, "shape", k, device)[:, None] for k in params[0].shape}
    u, v, w = d[None, :, 0], d[None, :, 1], d[None, :, 2]
    front = _smoothstep(0.1, 0.5, -w)
    # ellipsoidal head: jaw taper in the lower half, flattened front
    x = s["a"] * u * (1 - s["taper"] * v.clamp(min=0) ** 2)
    y = s["b"] * v
    z = s["c"] * w * (1 - s["flat"] * front)
    # relief toward the camera (−z) as a height field over the front (u, v)
    top = s["brow_v"] + 0.08
    t = _smoothstep(top, s["nose_v"], v)
    ridge = torch.where(v <= s["nose_v"], t, _gauss(v - s["nose_v"], 0.07))
    sig = s["nose_w"] * (0.55 + 0.45 * t)
    h = s["nose_h"] * ridge * torch.exp(-u ** 2 / (2 * sig ** 2))
    wings = sum(_gauss(u - sgn * 1.3 * s["nose_w"], 0.07) for sgn in (-1, 1)) * _gauss(v - s["nose_v"] + 0.02, 0.06)
    h = h + 0.25 * s["nose_h"] * wings
    h = h + s["brow_h"] * _gauss(v - s["brow_v"], 0.07) * torch.exp(-(u / 0.6) ** 4)
    eyes = sum(torch.exp(-(u - sgn * s["eye_u"]) ** 2 / (2 * 0.12 ** 2) - (v - s["eye_v"]) ** 2 / (2 * 0.085 ** 2))
               for sgn in (-1, 1))
    h = h - s["eye_d"] * eyes
    h = h - s["mouth_d"] * _gauss(v - s["mouth_v"], 0.025) * torch.exp(-(u / s["mouth_w"]) ** 4)
    h = h + s["lip_h"] * _gauss(v - s["mouth_v"], 0.07) * torch.exp(-(u / (s["mouth_w"] + 0.06)) ** 4)
    h = h + s["chin_h"] * _gauss(v - 0.85, 0.12) * _gauss(u, 0.35)
    cheeks = sum(torch.exp(-(u - sgn * 0.55) ** 2 / (2 * 0.15 ** 2) - (v - 0.1) ** 2 / (2 * 0.15 ** 2))
                 for sgn in (-1, 1))
    h = h + s["cheek_h"] * cheeks
    z = z - front * h
    verts = torch.stack([x, y, z], -1)
    q = d[None].expand(len(params), -1, -1)
    return verts, faces, dict(u=u, v=v, w=w, front=front, q=q)


def _superellipsoid(d: Tensor, a: Tensor, b: Tensor, c: Tensor, p: Tensor) -> Tensor:
    """Points ``B×V×3`` of |x/a|^p + |y/b|^p + |z/c|^p = 1 along the unit directions ``d`` (radial map)."""
    # r = (Σ |d_i / s_i|^p)^(−1/p), computed as exp(−logsumexp(p·log|d_i/s_i|)/p) to stay finite
    axes = torch.stack([a, b, c], -1)  # B×1×3
    lg = torch.log((d[None] / axes).abs().clamp(min=1e-12)) * p[..., None]
    r = torch.exp(-torch.logsumexp(lg, -1) / p)
    return d[None] * r[..., None]


def _box_geometry(params: list[SceneParams], size: int, device):
    """Box body + cabin vertices ``B×V×3`` (object frame), faces, and albedo inputs."""
    n_lat, n_lon = _mesh_res(size)
    d1, f1 = _uv_sphere(n_lat, n_lon, device)
    d2, f2 = _uv_sphere(max(8, n_lat // 2), max(16, n_lon // 2), device)
    s = {k: _stack(params, "shape", k, device)[:, None] for k in params[0].shape}
    body = _superellipsoid(d1, s["a"], s["b"], s["c"], s["p"])
    cab = _superellipsoid(d2, s["cab_a"], s["cab_b"], s["cab_c"], s["cab_p"])
    cab = cab + torch.stack([s["cab_x"], s["cab_y"], torch.zeros_like(s["cab_x"])], -1)
    verts = torch.cat([body, cab], 1)
    verts = verts - torch.stack([torch.zeros_like(s["a"]), s["y_shift"], torch.zeros_like(s["a"])], -1)
    faces = torch.cat([f1, f2 + d1.shape[0]])
    q_body = body / torch.stack([s["a"], s["b"], s["c"]], -1)
    q_cab = (cab - torch.stack([s["cab_x"], s["cab_y"], torch.zeros_like(s["a"])], -1)) / torch.stack(
        [s["cab_a"], s["cab_b"], s["cab_c"]], -1)
    q = verts / torch.stack([s["a"], s["b"], s["c"]], -1)
    return verts, faces, dict(q=q, q_body=q_body, q_cab=q_cab, n_body=d1.shape[0])


# ------------------------------------------------------------------------------------------------
# albedo
# ------------------------------------------------------------------------------------------------

def _lerp(rho: Tensor, col: Tensor, alpha: Tensor) -> Tensor:
    """Blend colour ``col`` (B×3 or B×V×3) into ``rho`` (B×V×3) with weight ``alpha`` (B×V)."""
    if col.dim() == 2:
        col = col[:, None]
    return rho + alpha[..., None] * (col - rho)


def _patterns(rho: Tensor, q: Tensor, A: dict[str, Tensor]) -> Tensor:
    """Patches, stripes and blobs on the normalised object coordinates ``q`` (B×V×3)."""
    # Voronoi-like patches: soft nearest of 5 centres
    dist2 = ((q[:, :, None] - A["patch_center"][:, None]) ** 2).sum(-1)  # B×V×5
    wts = torch.softmax(-dist2 / 0.02, -1)
    patch = (wts[..., None] * A["patch_col"][:, None]).sum(2)
    rho = _lerp(rho, patch, (A["patch_on"] * A["patch_strength"])[:, None].expand_as(rho[..., 0]))
    # stripes: thresholded sinusoid along a random direction
    ph = A["stripe_freq"][:, None] * (q * A["stripe_dir"][:, None]).sum(-1) + A["stripe_phase"][:, None]
    alpha = torch.sigmoid((torch.sin(ph) - A["stripe_thresh"][:, None]) / 0.08) * A["stripe_on"][:, None]
    rho = _lerp(rho, A["stripe_col"], alpha)
    # blobs: soft balls around random centres
    for m in range(A["blob_center"].shape[1]):
        dist = (q - A["blob_center"][:, None, m]).norm(dim=-1)
        alpha = torch.sigmoid((A["blob_radius"][:, m, None] - dist) / 0.04) * A["blob_on"][:, m, None]
        rho = _lerp(rho, A["blob_col"][:, m], alpha)
    return rho


def _noise(rho: Tensor, q: Tensor, A: dict[str, Tensor]) -> Tensor:
    """Low-amplitude 3-D sinusoid noise (3 random directions, coloured amplitudes)."""
    ph = A["sin_freq"][:, None] * torch.einsum("bvk,bjk->bvj", q, A["sin_dir"]) + A["sin_phase"][:, None]
    return rho + torch.einsum("bvj,bjc->bvc", torch.sin(ph), A["sin_amp"])


def _albedo_tensors(params: list[SceneParams], device) -> dict[str, Tensor]:
    return {k: _stack(params, "albedo", k, device) for k in params[0].albedo}


def _face_albedo(params, geo, device) -> Tensor:
    A = _albedo_tensors(params, device)
    u, v, w, front, q = geo["u"], geo["v"], geo["w"], geo["front"], geo["q"]
    rho = A["base"][:, None].expand(len(params), u.shape[1], 3)
    rho = _patterns(rho, q, A)
    au = u.abs()
    s = {k: _stack(params, "shape", k, device)[:, None] for k in ("brow_v", "eye_u", "eye_v", "mouth_v", "mouth_w")}
    # hair: above the hairline on the front, down to the nape at the back
    back = 1 - _smoothstep(-0.2, 0.6, -w)
    hl = A["hairline"][:, None] + (0.3 - A["hairline"][:, None]) * back
    rho = _lerp(rho, A["hair_col"], torch.sigmoid((hl - v) / 0.03) * A["hair_on"][:, None])
    # brows: arcs above the brow ridge
    bv = s["brow_v"] - 0.07 + 0.15 * (au - 0.35) ** 2
    brow = _gauss(v - bv, 0.035) * torch.sigmoid((au - 0.12) / 0.02) * torch.sigmoid((0.55 - au) / 0.03)
    rho = _lerp(rho, A["brow_col"], (front * brow).clamp(0, 1))
    # eyes and lips
    eye = torch.exp(-((au - s["eye_u"]) / 0.07) ** 2 - ((v - s["eye_v"]) / 0.04) ** 2)
    rho = _lerp(rho, A["eye_col"], (front * eye).clamp(0, 1))
    lip = torch.exp(-((v - s["mouth_v"]) / 0.06) ** 2 - (u / s["mouth_w"]) ** 4)
    rho = _lerp(rho, A["lip_col"], (front * lip).clamp(0, 1))
    rho = _noise(rho, q, A)
    return rho.clamp(*RHO_RANGE) * 2 - 1


def _box_albedo(params, geo, device) -> Tensor:
    A = _albedo_tensors(params, device)
    q, qb, qc, nb = geo["q"], geo["q_body"], geo["q_cab"], geo["n_body"]
    B = len(params)
    rho = A["base"][:, None].expand(B, q.shape[1], 3)
    rho = _patterns(rho, q, A)
    cabin = _stack(params, "shape", "cabin", device)[:, None]
    body, cab = rho[:, :nb], rho[:, nb:]
    # windows: a band around the cabin's sides (the roof keeps the paint)
    cab = _lerp(cab, A["window_col"], torch.sigmoid((0.55 - qc[..., 1].abs()) / 0.06))
    # tyres: dark discs low on the sides (±z faces); for cabin-less boxes half of the time
    wheels = cabin.clamp(min=0.0) + (1 - cabin) * (A["wheel_x"][:, None] > 0.6).float()
    side = torch.sigmoid((qb[..., 2].abs() - 0.6) / 0.05)
    disc = sum(torch.sigmoid((A["wheel_r"][:, None] - ((qb[..., 0] - sgn * A["wheel_x"][:, None]) ** 2
                                                       + (qb[..., 1] - 0.65) ** 2).sqrt()) / 0.03)
               for sgn in (-1, 1))
    body = _lerp(body, A["tyre_col"], (side * disc * wheels).clamp(0, 1))
    # head / rear lights at the ±x ends
    lamp = (_gauss(qb[..., 1] + 0.05, 0.15) * torch.sigmoid((qb[..., 2].abs() - 0.35) / 0.05)
            * torch.sigmoid((0.8 - qb[..., 2].abs()) / 0.05) * A["lights_on"][:, None])
    body = _lerp(body, A["light_col"], lamp * torch.sigmoid((qb[..., 0] - 0.85) / 0.03))
    body = _lerp(body, A["rear_col"], lamp * torch.sigmoid((-qb[..., 0] - 0.85) / 0.03))
    rho = torch.cat([body, cab], 1)
    rho = _noise(rho, q, A)
    return rho.clamp(*RHO_RANGE) * 2 - 1


def build_meshes(params: list[SceneParams], size: int = 64, device="cpu") -> tuple[Tensor, Tensor, Tensor]:
    """Object-frame meshes of one family: vertices ``B×V×3`` (centred at the rotation centre, i.e. the
    canonical camera-frame position minus (0, 0, 1)), shared faces ``F×3`` (outward-oriented), and
    per-vertex albedo ``B×V×3`` in [−1, 1]."""
    fam = {p.family for p in params}
    if len(fam) != 1:
        raise ValueError(f"build_meshes needs one family per call, got {sorted(fam)}")
    family = fam.pop()
    if family == "face":
        verts, faces, geo = _face_geometry(params, size, device)
        albedo = _face_albedo(params, geo, device)
    elif family == "box":
        verts, faces, geo = _box_geometry(params, size, device)
        albedo = _box_albedo(params, geo, device)
    else:
        raise ValueError(f"unknown family {family!r} (expected one of {FAMILIES})")
    return verts, faces, albedo

