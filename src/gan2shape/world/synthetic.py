"""The synthetic world (DESIGN "The synthetic world"): procedural 3D objects rendered with ground truth.

Two families of procedurally generated objects, every random number drawn from a seed and kept in a
JSON-serialisable :class:`SceneParams`:

* ``face``: an ellipsoidal head (jaw taper, flattened front) with a nose ridge, brow ridge, eye
  sockets, mouth groove, lips, chin and cheekbones; skin-like albedo with hair, brows, eyes and lips.
  The method's ellipsoid prior fits this family.
* ``box``: a rounded box (superellipsoid, exponent 4–10) with, for 70 % of them, a smaller rounded
  "cabin" on top (car-like); paint colour with windows, tyres and lights. Flat faces and sharp-ish
  edges: the ellipsoid prior is wrong here.

Both families also get random low-frequency albedo patterns (3-D sinusoid noise, stripes, blobs,
Voronoi-like patches) evaluated at the object-frame vertex positions.

Geometry and camera follow METHOD §3: pinhole camera at the origin looking along +z, OpenCV axes,
fx = fy = ((S−1)/2)/tan(5°), cx = cy = (S−1)/2, output pixel (r, c) centred at (u, v) = (c, r). The
object frame is centred at the rotation centre C = (0, 0, 1) with the object facing the camera
(the face looks along −z). A view places it at P = R(rx=pitch, ry=yaw, rz=roll)·p + C + (tx, ty, 0),
exactly the method's canonical→view warp, so the physical view (``SceneParams.view``) is the
ground-truth view in the method's units.

Meshes: a UV sphere with a fixed topology per (family, resolution) (so a batch stacks as B×V×3 with
shared faces), deformed by the family's shape function; ~1 output pixel per triangle edge
(``_mesh_res``). Normals are the interpolated (area-weighted) vertex normals, i.e. smooth shading, in
the method's sign convention (a surface facing the camera has n = (0, 0, +1): n = −outward normal).

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

Held-out test set on disk (``save_test_set``): ``<out>/<family>/list.txt`` and per image
``<name>.png`` (RGB 8-bit), ``<name>_depth.png`` (16-bit grey: p = round((d − 0.8)/0.4·65535),
decoded as d = 0.8 + 0.4·p/65535, error ≤ 3.1e-6; the background code 49151 decodes to exactly 1.1),
``<name>_normal.png`` (RGB 8-bit, (n + 1)/2), ``<name>_mask.png`` (grey 8-bit coverage) and
``<name>.json`` (all parameters, the view, the light direction and the depth encoding).
Note: these depth PNGs are *not* in the unsup3d convention that :func:`gan2shape.data.load_depth`
assumes (1.1 − 0.2·p); read them with :func:`load_test_set` or :func:`decode_depth_png`.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..io import atomic_path, atomic_write_text
from ..method.raster import rasterize_native, rasterize_tiled
from ..method.renderer import compose_texture, rotation_matrix

__all__ = [
    "FAMILIES",
    "FAR_DEPTH",
    "SceneParams",
    "sample_params",
    "stream_params",
    "build_meshes",
    "intrinsics",
    "render_batch",
    "TrainingStream",
    "render_dataset",
    "save_test_set",
    "load_test_set",
    "encode_depth_png",
    "decode_depth_png",
    "add_cli",
]

FAMILIES: tuple[str, ...] = ("face", "box")
_FAMILY_CODE = {"face": 1, "box": 2}
_STREAM_SALT = 7919  # separates the training stream's seeds from sample_params' (held-out) seeds

FOV = 10.0
ROT_CENTER = 1.0
FAR_DEPTH = 1.1             # depth of the background (METHOD §8.2: GT mask = depth < max)
MAX_OBJECT_DEPTH = 1.099    # object depths are capped here so that depth < FAR always holds
# per-image view / light ranges
YAW_RANGE, PITCH_RANGE, ROLL_RANGE = 40.0, 20.0, 5.0  # degrees, uniform in ±range
TRANSLATION_RANGE = 0.005                              # tx, ty uniform in ±range (≈ ±1.8 px at 64)
KA_RANGE, KD_RANGE, LIGHT_XY_RANGE = (0.3, 0.7), (0.3, 0.8), 0.8
BACKGROUND_RANGE = (-0.5, 0.5)                         # grey level in image units
RHO_RANGE = (0.02, 0.66)                               # albedo reflectance (a + 1)/2
# 16-bit depth PNG encoding
DEPTH_PNG_LO, DEPTH_PNG_HI = 0.8, 1.2
_DEPTH_SCALE = 65535.0
_BG_CODE = int(round((FAR_DEPTH - DEPTH_PNG_LO) / (DEPTH_PNG_HI - DEPTH_PNG_LO) * _DEPTH_SCALE))
_TILE = 16  # tiled rasterisation: tile size (sub-samples) and faces per chunk
_CAP = 128


# ================================================================================================
# parameters
# ================================================================================================

@dataclass
class SceneParams:
    """All random parameters of one image (JSON-serialisable).

    ``yaw``/``pitch``/``roll`` are degrees about y/x/z (R = Rz(roll)·Ry(yaw)·Rx(pitch)), ``tx``/``ty``
    the translation; light = (k_a, k_d, lx, ly) with direction normalize([lx, ly, 1]); ``background``
    the grey level in [−1, 1]; ``shape`` and ``albedo`` the family's shape and pattern parameters.
    """

    family: str
    seed: int
    index: int
    yaw: float
    pitch: float
    roll: float
    tx: float
    ty: float
    k_a: float
    k_d: float
    lx: float
    ly: float
    background: float
    shape: dict[str, float] = field(default_factory=dict)
    albedo: dict[str, Any] = field(default_factory=dict)

    @property
    def view(self) -> list[float]:
        """Physical view in the method's units: (rx, ry, rz radians, tx, ty, tz)."""
        return [math.radians(self.pitch), math.radians(self.yaw), math.radians(self.roll),
                self.tx, self.ty, 0.0]

    @property
    def light_direction(self) -> list[float]:
        n = math.sqrt(self.lx ** 2 + self.ly ** 2 + 1.0)
        return [self.lx / n, self.ly / n, 1.0 / n]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SceneParams":
        names = {f for f in cls.__dataclass_fields__}
        missing = names - set(d)
        if missing:
            raise ValueError(f"scene parameters lack {sorted(missing)}")
        p = cls(**{k: d[k] for k in names})
        if p.family not in FAMILIES:
            raise ValueError(f"unknown family {p.family!r} (expected one of {FAMILIES})")
        return p


def _u(rng: np.random.Generator, lo: float, hi: float, shape=None):
    x = rng.uniform(lo, hi, shape)
    return float(x) if shape is None else x.tolist()


def _unit(rng: np.random.Generator, n: int) -> list[list[float]]:
    v = rng.normal(size=(n, 3))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).tolist()


def _hsv(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]) -> list[float]:
    return list(colorsys.hsv_to_rgb(_u(rng, 0, 1), _u(rng, *s), _u(rng, *v)))


def _sample_face_shape(rng: np.random.Generator) -> dict[str, float]:
    brow_v = _u(rng, -0.40, -0.28)
    return dict(
        a=_u(rng, 0.055, 0.068), b=_u(rng, 0.065, 0.078), c=_u(rng, 0.050, 0.065),
        taper=_u(rng, 0.0, 0.25), flat=_u(rng, 0.0, 0.2),
        nose_h=_u(rng, 0.010, 0.020), nose_w=_u(rng, 0.07, 0.12), nose_v=_u(rng, 0.15, 0.30),
        brow_h=_u(rng, 0.002, 0.005), brow_v=brow_v,
        eye_u=_u(rng, 0.30, 0.40), eye_v=brow_v + _u(rng, 0.13, 0.18), eye_d=_u(rng, 0.004, 0.009),
        mouth_v=_u(rng, 0.45, 0.60), mouth_w=_u(rng, 0.20, 0.32), mouth_d=_u(rng, 0.001, 0.0025),
        lip_h=_u(rng, 0.001, 0.0025), chin_h=_u(rng, 0.001, 0.004), cheek_h=_u(rng, 0.0, 0.003),
    )


def _sample_box_shape(rng: np.random.Generator) -> dict[str, float]:
    cabin = float(rng.uniform() < 0.7)
    a, c = _u(rng, 0.050, 0.070), _u(rng, 0.030, 0.060)
    b = _u(rng, 0.022, 0.038) if cabin else _u(rng, 0.030, 0.055)
    if cabin:
        ca, cb, cc = a * _u(rng, 0.45, 0.75), b * _u(rng, 0.5, 0.9), c * _u(rng, 0.75, 0.95)
        cx, cp = a * _u(rng, -0.25, 0.15), _u(rng, 2.5, 5.0)
        cy = -(0.75 * b + 0.45 * cb)
    else:  # a small sphere hidden inside the body keeps the topology fixed
        ca = cb = cc = 0.5 * min(a, b, c)
        cx, cy, cp = 0.0, 0.0, 2.0
    top = min(-b, cy - cb)
    return dict(a=a, b=b, c=c, p=_u(rng, 4.0, 10.0), cabin=cabin, cab_a=ca, cab_b=cb, cab_c=cc,
                cab_x=cx, cab_y=cy, cab_p=cp, y_shift=(top + b) / 2)


def _sample_patterns(rng: np.random.Generator, family: str) -> dict[str, Any]:
    face = family == "face"
    amp = 0.025 if face else 0.04
    return dict(
        sin_dir=_unit(rng, 3), sin_freq=_u(rng, 2.0, 8.0, 3), sin_phase=_u(rng, 0, 2 * math.pi, 3),
        sin_amp=_u(rng, -amp, amp, (3, 3)),
        stripe_on=float(rng.uniform() < (0.1 if face else 0.4)), stripe_dir=_unit(rng, 1)[0],
        stripe_freq=_u(rng, 4.0, 12.0), stripe_phase=_u(rng, 0, 2 * math.pi),
        stripe_thresh=_u(rng, 0.2, 0.7), stripe_col=_hsv(rng, (0.0, 0.9), (0.05, 0.65)),
        blob_on=(rng.uniform(size=4) < (0.1 if face else 0.25)).astype(float).tolist(),
        blob_center=_u(rng, -1.0, 1.0, (4, 3)), blob_radius=_u(rng, 0.2, 0.5, 4),
        blob_col=[_hsv(rng, (0.0, 0.9), (0.05, 0.65)) for _ in range(4)],
        patch_on=float(rng.uniform() < (0.1 if face else 0.3)), patch_center=_u(rng, -1.0, 1.0, (5, 3)),
        patch_col=[_hsv(rng, (0.0, 0.9), (0.05, 0.65)) for _ in range(5)],
        patch_strength=_u(rng, 0.3, 0.8),
    )


def _sample_face_albedo(rng: np.random.Generator) -> dict[str, Any]:
    r = _u(rng, 0.35, 0.62)
    g = r * _u(rng, 0.68, 0.85)
    skin = [r, g, g * _u(rng, 0.72, 0.92)]
    hv = _u(rng, 0.03, 0.40)
    hair = [hv, hv * _u(rng, 0.6, 0.9), hv * _u(rng, 0.4, 0.8)]
    lip = [skin[0] * _u(rng, 0.75, 0.95), skin[1] * _u(rng, 0.45, 0.65), skin[2] * _u(rng, 0.5, 0.7)]
    ev = _u(rng, 0.03, 0.15)
    return dict(base=skin, hair_col=hair, hair_on=float(rng.uniform() < 0.85),
                hairline=_u(rng, -0.75, -0.5), brow_col=[x * 0.8 for x in hair], lip_col=lip,
                eye_col=[ev, ev * _u(rng, 0.8, 1.2), ev * _u(rng, 0.8, 1.4)],
                **_sample_patterns(rng, "face"))


def _sample_box_albedo(rng: np.random.Generator) -> dict[str, Any]:
    wv = _u(rng, 0.04, 0.15)
    return dict(base=_hsv(rng, (0.2, 0.8), (0.35, 0.66)),
                window_col=[wv, wv * _u(rng, 1.0, 1.3), wv * _u(rng, 1.1, 1.6)],
                tyre_col=[_u(rng, 0.03, 0.06)] * 3, wheel_x=_u(rng, 0.5, 0.7), wheel_r=_u(rng, 0.22, 0.32),
                lights_on=float(rng.uniform() < 0.7), light_col=[_u(rng, 0.55, 0.65)] * 3,
                rear_col=[_u(rng, 0.45, 0.6), _u(rng, 0.03, 0.1), _u(rng, 0.03, 0.1)],
                **_sample_patterns(rng, "box"))


def _sample_one(family: str, seed: int, index: int, salt: int | None = None) -> SceneParams:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (expected one of {FAMILIES})")
    key = [int(seed), _FAMILY_CODE[family], int(index)] + ([salt] if salt is not None else [])
    rng = np.random.default_rng(np.random.SeedSequence(key))
    view = dict(yaw=_u(rng, -YAW_RANGE, YAW_RANGE), pitch=_u(rng, -PITCH_RANGE, PITCH_RANGE),
                roll=_u(rng, -ROLL_RANGE, ROLL_RANGE), tx=_u(rng, -TRANSLATION_RANGE, TRANSLATION_RANGE),
                ty=_u(rng, -TRANSLATION_RANGE, TRANSLATION_RANGE))
    light = dict(k_a=_u(rng, *KA_RANGE), k_d=_u(rng, *KD_RANGE),
                 lx=_u(rng, -LIGHT_XY_RANGE, LIGHT_XY_RANGE), ly=_u(rng, -LIGHT_XY_RANGE, LIGHT_XY_RANGE))
    bg = _u(rng, *BACKGROUND_RANGE)
    if family == "face":
        shape, albedo = _sample_face_shape(rng), _sample_face_albedo(rng)
    else:
        shape, albedo = _sample_box_shape(rng), _sample_box_albedo(rng)
    return SceneParams(family=family, seed=int(seed), index=int(index), background=bg, shape=shape,
                       albedo=albedo, **view, **light)


def sample_params(family: str, n: int, seed: int) -> list[SceneParams]:
    """``n`` scenes of ``family``; scene i depends only on (family, seed, i)."""
    return [_sample_one(family, seed, i) for i in range(int(n))]


def stream_params(families: Iterable[str], n: int, seed: int, start: int) -> list[SceneParams]:
    """Scenes ``start .. start+n−1`` of the training stream (family drawn per scene; seeds disjoint
    from :func:`sample_params`, so training images never coincide with a held-out set)."""
    families = tuple(families)
    out = []
    for j in range(int(start), int(start) + int(n)):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), j, _STREAM_SALT]))
        out.append(_sample_one(families[int(rng.integers(len(families)))], seed, j, salt=_STREAM_SALT))
    return out


# ================================================================================================
# meshes
# ================================================================================================

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


# ================================================================================================
# rendering
# ================================================================================================

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
    """
    if not params:
        raise ValueError("render_batch: no scenes given")
    if size < 4 or supersample < 1:
        raise ValueError(f"render_batch: bad size {size} / supersample {supersample}")
    unknown = {p.family for p in params} - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown family {sorted(unknown)} (expected one of {FAMILIES})")
    device = torch.device(device)
    if warp is not None:
        if tuple(warp.shape) != (len(params), 6):
            raise ValueError(f"render_batch: warp must be {len(params)}×6 physical views, got {tuple(warp.shape)}")
        warp = warp.to(device=device, dtype=torch.float32)
    parts: list[tuple[list[int], dict]] = []
    for fam in FAMILIES:
        idx = [i for i, p in enumerate(params) if p.family == fam]
        for j in range(0, len(idx), chunk):
            sub = idx[j:j + chunk]
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
        bad = set(families) - set(FAMILIES)
        if not families or bad:
            raise ValueError(f"TrainingStream: bad families {families} (expected a subset of {FAMILIES})")
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


# ================================================================================================
# held-out test set on disk
# ================================================================================================

def encode_depth_png(depth: Tensor, path: str | Path) -> None:
    """Write depth ``S×S`` as a 16-bit grey PNG: p = round((d − 0.8)/0.4 · 65535) (atomic)."""
    from PIL import Image

    d = depth.detach().double().cpu().numpy()
    if d.ndim != 2 or not np.isfinite(d).all() or d.min() < DEPTH_PNG_LO or d.max() > DEPTH_PNG_HI:
        raise ValueError(f"{path}: depth must be a finite 2-D map in [{DEPTH_PNG_LO}, {DEPTH_PNG_HI}]")
    code = np.round((d - DEPTH_PNG_LO) / (DEPTH_PNG_HI - DEPTH_PNG_LO) * _DEPTH_SCALE).astype(np.uint16)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(code).save(tmp, format="PNG")


def decode_depth_png(path: str | Path) -> Tensor:
    """Read a depth PNG written by :func:`encode_depth_png` as float32 ``S×S`` (background exactly 1.1)."""
    a = _read_png(path, ("I;16", "I"))
    if a.ndim != 2:
        raise ValueError(f"{path}: depth PNG must be single-channel 16-bit")
    d = DEPTH_PNG_LO + a.astype(np.float64) / _DEPTH_SCALE * (DEPTH_PNG_HI - DEPTH_PNG_LO)
    d[a == _BG_CODE] = FAR_DEPTH
    return torch.from_numpy(d.astype(np.float32))


def _read_png(path: str | Path, modes: tuple[str, ...]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in modes:
                raise ValueError(f"{path}: image mode {img.mode!r}, expected one of {modes}")
            return np.asarray(img).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable PNG ({e})") from e


def _write_png8(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _to8(x: Tensor) -> np.ndarray:
    """[0, 1] → uint8 (round half up)."""
    return (x.detach().float().cpu().clamp(0, 1) * 255).round().byte().numpy()


def save_test_set(out_dir: str | Path, family: str, n: int, seed: int, size: int = 64, device="cpu",
                  supersample: int = 4, batch: int = 32) -> Path:
    """Render and write the held-out set of ``family`` to ``out_dir/<family>/`` (format: module doc).

    Every file is written atomically; ``list.txt`` is written last, so an interrupted run leaves no
    list naming missing images. Returns the family folder.
    """
    folder = Path(out_dir) / family
    folder.mkdir(parents=True, exist_ok=True)
    params = sample_params(family, n, seed)
    names = []
    for i0 in range(0, n, batch):
        r = render_batch(params[i0:i0 + batch], size, device, supersample)
        for j, p in enumerate(params[i0:i0 + batch]):
            name = f"{family}_{p.seed}_{p.index:05d}"
            names.append(name)
            _write_png8(_to8((r["image"][j] + 1) / 2).transpose(1, 2, 0), folder / f"{name}.png")
            encode_depth_png(r["depth"][j], folder / f"{name}_depth.png")
            _write_png8(_to8((r["normals"][j] + 1) / 2), folder / f"{name}_normal.png")
            _write_png8(_to8(r["mask"][j, 0]), folder / f"{name}_mask.png")
            meta = dict(
                format_version=1, name=name, size=size, supersample=supersample, fov=FOV,
                rot_center=[0.0, 0.0, ROT_CENTER], params=p.to_dict(), view=p.view,
                light_direction=p.light_direction,
                depth_encoding=dict(format="png16", lo=DEPTH_PNG_LO, hi=DEPTH_PNG_HI, scale=_DEPTH_SCALE,
                                    formula="d = lo + (hi - lo) * p / scale", background=FAR_DEPTH,
                                    background_code=_BG_CODE),
                files=dict(image=f"{name}.png", depth=f"{name}_depth.png", normal=f"{name}_normal.png",
                           mask=f"{name}_mask.png"))
            atomic_write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", folder / f"{name}.json")
    atomic_write_text("\n".join(names) + "\n", folder / "list.txt")
    return folder


def _load_record(folder: Path, name: str) -> dict[str, Any]:
    jpath = folder / f"{name}.json"
    if not jpath.is_file():
        raise FileNotFoundError(f"{jpath}: file not found")
    try:
        meta = json.loads(jpath.read_text())
        params = SceneParams.from_dict(meta["params"])
        size = int(meta["size"])
        enc = meta["depth_encoding"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{jpath}: invalid test-set record ({type(e).__name__}: {e})") from e
    if enc.get("format") != "png16" or (enc.get("lo"), enc.get("hi")) != (DEPTH_PNG_LO, DEPTH_PNG_HI):
        raise ValueError(f"{jpath}: unsupported depth encoding {enc}")
    paths = {k: folder / f"{name}{suf}.png" for k, suf in
             (("image", ""), ("depth", "_depth"), ("normal", "_normal"), ("mask", "_mask"))}
    img = _read_png(paths["image"], ("RGB",))
    nrm = _read_png(paths["normal"], ("RGB",))
    msk = _read_png(paths["mask"], ("L",))
    depth = decode_depth_png(paths["depth"])
    for k, a in (("image", img), ("normal", nrm), ("mask", msk), ("depth", depth)):
        if tuple(a.shape[:2]) != (size, size):
            raise ValueError(f"{paths[k]}: size {tuple(a.shape[:2])}, expected {size}x{size} (from {jpath.name})")
    normals = torch.from_numpy(nrm).float() / 255 * 2 - 1
    return dict(name=name, family=params.family, params=params, meta=meta,
                image=torch.from_numpy(img).permute(2, 0, 1).float() / 255 * 2 - 1,
                depth=depth, normals=normals / normals.norm(dim=-1, keepdim=True).clamp(min=1e-6),
                mask=torch.from_numpy(msk).float()[None] / 255, paths={**paths, "json": jpath})


def load_test_set(directory: str | Path) -> list[dict[str, Any]]:
    """Read a held-out set: ``directory`` is a family folder (with ``list.txt``) or the output root
    holding family folders. Each record: name, family, params (:class:`SceneParams`), meta (the
    JSON), image 3×S×S, depth S×S, normals S×S×3 (unit, decoded from 8 bits), mask 1×S×S, paths.
    Missing or corrupt files raise an error naming the file."""
    directory = Path(directory)
    if (directory / "list.txt").is_file():
        folders = [directory]
    else:
        folders = [directory / f for f in FAMILIES if (directory / f / "list.txt").is_file()]
        if not folders:
            raise FileNotFoundError(f"{directory / 'list.txt'}: file not found (no test set in {directory})")
    records = []
    for folder in folders:
        names = [ln.strip() for ln in (folder / "list.txt").read_text().splitlines() if ln.strip()]
        if not names:
            raise ValueError(f"{folder / 'list.txt'}: empty list")
        records += [_load_record(folder, name) for name in names]
    return records


# ================================================================================================
# CLI
# ================================================================================================

def _cmd_synthesize(args: argparse.Namespace) -> int:
    """Render the held-out synthetic test set(s) with ground truth."""
    import logging

    log = logging.getLogger("gan2shape")
    for fam in args.family:
        folder = save_test_set(args.out, fam, args.n, args.seed, args.size, args.device, args.supersample)
        log.info("wrote %d %s images to %s", args.n, fam, folder)
    return 0


def viewlight_moments(families: Iterable[str], n: int, seed: int, rot_range_deg: float = 60.0,
                      xy_range: float = 0.1):
    """The view / light multivariate normals of this world, in the networks' raw units (METHOD §5.2).

    The original fitted them to Unsup3d's predictions on each dataset; here the generating
    distribution is known, so they are the moments of ``n`` sampled scenes per family: raw view =
    (pitch, yaw, roll)/60°, (tx, ty)/0.1, 0; raw light = (2·k_a − 1, 2·k_d − 1, lx, ly).
    """
    from ..method.sampling import ViewLightDistribution

    views, lights = [], []
    for fam in families:
        for p in sample_params(fam, n, seed):
            v = p.view
            views.append([v[0] / math.radians(rot_range_deg), v[1] / math.radians(rot_range_deg),
                          v[2] / math.radians(rot_range_deg), v[3] / xy_range, v[4] / xy_range, 0.0])
            lights.append([2 * p.k_a - 1, 2 * p.k_d - 1, p.lx, p.ly])
    v, l = torch.tensor(views, dtype=torch.float64), torch.tensor(lights, dtype=torch.float64)
    return ViewLightDistribution.from_moments(v.mean(0), torch.cov(v.T), l.mean(0), torch.cov(l.T))


def _cmd_viewlight(args: argparse.Namespace) -> int:
    """Write the synthetic world's view / light MVN files (official {'mean', 'cov'} format)."""
    dist = viewlight_moments(args.family, args.n, args.seed)
    dist.save(args.view_out, args.light_out)
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``gan2shape synthesize`` and ``gan2shape viewlight``."""
    q = subparsers.add_parser("viewlight", help=_cmd_viewlight.__doc__)
    q.add_argument("--family", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    q.add_argument("--n", type=int, default=20000, help="scenes per family")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--view-out", type=Path, required=True)
    q.add_argument("--light-out", type=Path, required=True)
    q.set_defaults(func=_cmd_viewlight)
    p = subparsers.add_parser("synthesize", help=_cmd_synthesize.__doc__)
    p.add_argument("--family", nargs="+", default=list(FAMILIES), choices=FAMILIES, help="object families")
    p.add_argument("--n", type=int, required=True, help="images per family")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--supersample", type=int, default=4, help="anti-aliasing sub-samples per axis")
    p.add_argument("--out", type=Path, required=True, help="output root (one folder per family)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.set_defaults(func=_cmd_synthesize)
    return p
