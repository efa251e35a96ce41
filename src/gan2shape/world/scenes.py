"""Scenes of the synthetic world: the two object families and their seeded random parameters.

Two families of procedurally generated objects, every random number drawn from a seed and kept in a
JSON-serialisable :class:`SceneParams`:

* ``face``: an ellipsoidal head (jaw taper, flattened front) with a nose ridge, brow ridge, eye
  sockets, mouth groove, lips, chin and cheekbones; skin-like albedo with hair, brows, eyes and lips.
  The method's ellipsoid prior fits this family.
* ``box``: a rounded box (superellipsoid, exponent 4–10) with, for 70 % of them, a smaller rounded
  "cabin" on top (car-like); paint colour with windows, tyres and lights. Flat faces and sharp-ish
  edges: the ellipsoid prior is wrong here.

Both families also get random low-frequency albedo patterns (3-D sinusoid noise, stripes, blobs,
Voronoi-like patches) evaluated at the object-frame vertex positions (:mod:`.geometry`).

A view places the object (centred at the rotation centre (0, 0, 1), facing the camera) at
P = R(rx=pitch, ry=yaw, rz=roll)·p + C + (tx, ty, 0), exactly the method's canonical→view warp, so
the physical view (``SceneParams.view``) is the ground-truth view in the method's units.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

__all__ = ["FAMILIES", "V2_FAMILIES", "ALL_FAMILIES", "WORLDS", "world_of", "SceneParams", "sample_params",
           "stream_params", "viewlight_moments"]

FAMILIES: tuple[str, ...] = ("face", "box")          # world v1 (kept reproducible by seed)
V2_FAMILIES: tuple[str, ...] = ("face2", "car2")     # world v2 (:mod:`.v2`)
ALL_FAMILIES = FAMILIES + V2_FAMILIES
WORLDS = {"v1": FAMILIES, "v2": V2_FAMILIES}
_FAMILY_CODE = {"face": 1, "box": 2, "face2": 3, "car2": 4}


def world_of(families: Iterable[str]) -> str:
    """The world ("v1" or "v2") of a set of families; mixing worlds or unknown names is an error."""
    fams = set(families)
    for w, f in WORLDS.items():
        if fams and fams <= set(f):
            return w
    raise ValueError(f"families {sorted(fams)} are not all of one world ({WORLDS})")
_STREAM_SALT = 7919  # separates the training stream's seeds from sample_params' (held-out) seeds

# per-image view / light ranges
YAW_RANGE, PITCH_RANGE, ROLL_RANGE = 40.0, 20.0, 5.0  # degrees, uniform in ±range
TRANSLATION_RANGE = 0.005                              # tx, ty uniform in ±range (≈ ±1.8 px at 64)
KA_RANGE, KD_RANGE, LIGHT_XY_RANGE = (0.3, 0.7), (0.3, 0.8), 0.8
BACKGROUND_RANGE = (-0.5, 0.5)                         # grey level in image units


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
        if p.family not in ALL_FAMILIES:
            raise ValueError(f"unknown family {p.family!r} (expected one of {ALL_FAMILIES})")
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
    if family in V2_FAMILIES:
        from .v2 import sample_scene

        return sample_scene(family, seed, index, _FAMILY_CODE[family], stream=salt is not None)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (expected one of {ALL_FAMILIES})")
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
    from :func:`sample_params`, so training images never coincide with a held-out set). v2 stream
    scenes are relit like pseudo samples half of the time (:func:`.v2.sample_scene`)."""
    families = tuple(families)
    world_of(families)
    out = []
    for j in range(int(start), int(start) + int(n)):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), j, _STREAM_SALT]))
        out.append(_sample_one(families[int(rng.integers(len(families)))], seed, j, salt=_STREAM_SALT))
    return out



def viewlight_moments(families: Iterable[str], n: int, seed: int, rot_range_deg: float = 60.0,
                      xy_range: float = 0.1):
    """The view / light multivariate normals of this world, in the networks' raw units (METHOD §5.2).

    The original fitted them to Unsup3d's predictions on each dataset; here the generating
    distribution is known, so they are the moments of ``n`` sampled scenes per family: raw view =
    (pitch, yaw, roll)/60°, (tx, ty)/0.1, 0; raw light = (2·k_a − 1, 2·k_d − 1, lx, ly). World v1:
    held-out scenes (views relative to nothing: the input frame); world v2: the GAN's training stream
    (frontal canonical frame; lights including the pseudo-sample relighting).
    """
    from ..method.sampling import ViewLightDistribution

    families = tuple(families)
    v2 = world_of(families) == "v2"
    views, lights = [], []
    for fam in families:
        scenes = stream_params([fam], n, seed, 0) if v2 else sample_params(fam, n, seed)
        for p in scenes:
            v = p.view
            views.append([v[0] / math.radians(rot_range_deg), v[1] / math.radians(rot_range_deg),
                          v[2] / math.radians(rot_range_deg), v[3] / xy_range, v[4] / xy_range, 0.0])
            lights.append([2 * p.k_a - 1, 2 * p.k_d - 1, p.lx, p.ly])
    v, l = torch.tensor(views, dtype=torch.float64), torch.tensor(lights, dtype=torch.float64)
    return ViewLightDistribution.from_moments(v.mean(0), torch.cov(v.T), l.mean(0), torch.cov(l.T))

