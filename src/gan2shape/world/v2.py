"""World v2: objects that the method's own image-formation model renders exactly (docs/world.md).

A v2 scene is a *canonical* (frontal) depth map and albedo map on the method's S×S grid, a view and a
light; its image is made by the method's renderer and shading (METHOD §3.4–3.7): normals by finite
differences, k_a + k_d·max(0, n·d), the texture inverse-warped into the view. So the method's step-1
render at the true depth, albedo, view and light reproduces the image, and a pseudo sample of the
truth is the world's render of that view and light (consistent by construction; ``consistency``).

* the canonical depth is in the depth head's range: d = depth_head(atanh(10·(d0 − 1))) exactly (mean
  of the raw map 0: the relief amplitude ``c`` is solved for it), then the method's border clamp; the
  background is a Lambertian plane at the border depth 1.04 (a fixed point of the clamp), lit by the
  scene light like the object;
* ``face2``: mirror-symmetric depth and albedo (exactly: functions of |x| on a grid symmetric about
  the principal point), frame-filling like a synface crop; for the synface recipe (flips on);
* ``car2``: a car-like side view (body, slanted cabin, wheels, lamps), asymmetric front/back with a
  random mirror, object with background; for the car recipe (masks on, no flips);
* views: truncated normals about the frontal canonical frame (yaw σ 15° within ±3σ, ...);
  lights: directions uniform over the union of the presets' ``rand_light`` ranges, strengths from a
  base box; the GAN's training stream additionally relights half of its scenes exactly as the
  preset's pseudo samples do (k_a + α·r, k_d + r), so every pseudo light lies in what the GAN saw.

Pixels where the warped depth map leaves no surface (recon depth ≥ 1.2) show what the method's
renderer shows there (its pseudo samples do the same); they are invalid in every loss and metric.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..method.config import SYNFACE_RAND_LIGHT
from ..method.networks import clamp_border, depth_head
from ..method.renderer import Renderer, compose_texture, light_to_physical, shade
from ..method.sampling import DEFAULT_RAND_LIGHT
from .scenes import V2_FAMILIES

__all__ = ["V2_FAMILIES", "RAND_LIGHT", "VIEW_SIGMA", "BG_DEPTH", "sample_scene", "canonical_maps",
           "render_v2", "view_support", "light_in_support", "raw_light"]

# the method's preset whose rand_light the family's pseudo samples use (METHOD §5.1)
RAND_LIGHT = {"face2": SYNFACE_RAND_LIGHT, "car2": DEFAULT_RAND_LIGHT}
# view: σ of truncated normals (yaw, pitch, roll in degrees; tx, ty) and the truncation in σ
VIEW_SIGMA = (15.0, 6.0, 2.0, 0.003, 0.003)   # order: yaw, pitch, roll, tx, ty
VIEW_TRUNC = 3.0
# light: directions (lx, ly) uniform over the union of the presets' rand_light ranges; base strengths
LIGHT_X = (min(RAND_LIGHT[f][0] for f in V2_FAMILIES), max(RAND_LIGHT[f][1] for f in V2_FAMILIES))
LIGHT_Y = (min(RAND_LIGHT[f][2] for f in V2_FAMILIES), max(RAND_LIGHT[f][3] for f in V2_FAMILIES))
KA_BASE, KD_BASE = (0.40, 0.60), (0.30, 0.60)
STREAM_RELIT = 0.5           # share of training-stream scenes relit like a pseudo sample
BG_DEPTH = 1.04              # background plane = the method's border depth 0.7·1.1 + 0.3·0.9
MIN_DEPTH, MAX_DEPTH = 0.9, 1.1
RHO = (0.02, 0.66)           # albedo reflectance (a + 1)/2
FAR = 1.1                    # background value of the saved input-view depth (METHOD §8.2)
MAX_OBJECT_DEPTH = 1.099
FACE_Q, FACE_LEAN = (2.0, 3.0), (0.2, 0.4)
FACE_C, FACE_P, CAR_C = (0.083, 0.108), (0.6, 0.9), (0.08, 0.11)   # relief amplitude, face profile exponent


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def _tn(rng, sigma: float, trunc: float = VIEW_TRUNC) -> float:
    """A normal N(0, σ²) truncated to ±trunc·σ (rejection; deterministic given ``rng``)."""
    while True:
        x = float(rng.normal())
        if abs(x) <= trunc:
            return x * sigma


def _rgb(rng, base, spread):
    return [float(np.clip(b * rng.uniform(1 - spread, 1 + spread), *RHO)) for b in base]


def _face_shape(rng) -> dict:
    brow_v = _u(rng, -0.42, -0.30)
    return dict(c=_u(rng, *FACE_C), ax=_u(rng, 0.86, 0.93), ay=_u(rng, 1.15, 1.35), y0=_u(rng, 0.0, 0.12),
                q=_u(rng, *FACE_Q), lean=_u(rng, *FACE_LEAN),
                p=_u(rng, *FACE_P),
                taper=_u(rng, 0.10, 0.35), nose_h=_u(rng, 0.10, 0.20), nose_w=_u(rng, 0.08, 0.13),
                nose_top=_u(rng, -0.30, -0.20), nose_tip=_u(rng, 0.15, 0.28), brow_h=_u(rng, 0.02, 0.05),
                brow_v=brow_v, eye_u=_u(rng, 0.30, 0.40), eye_v=brow_v + _u(rng, 0.13, 0.18),
                eye_d=_u(rng, 0.04, 0.09), mouth_v=_u(rng, 0.45, 0.58), mouth_w=_u(rng, 0.20, 0.32),
                mouth_d=_u(rng, 0.01, 0.025), lip_h=_u(rng, 0.01, 0.025), chin_h=_u(rng, 0.01, 0.04),
                cheek_h=_u(rng, 0.0, 0.05))


def _face_albedo(rng) -> dict:
    r = _u(rng, 0.35, 0.62)
    g = r * _u(rng, 0.68, 0.85)
    skin = [r, g, g * _u(rng, 0.72, 0.92)]
    hv = _u(rng, 0.03, 0.40)
    hair = [hv, hv * _u(rng, 0.6, 0.9), hv * _u(rng, 0.4, 0.8)]
    ev = _u(rng, 0.03, 0.15)
    bg = _u(rng, 0.10, 0.60)
    return dict(skin=skin, hair=hair, hair_on=float(rng.uniform() < 0.85), hairline=_u(rng, -0.80, -0.55),
                hair_curve=_u(rng, 0.0, 0.4), brow=[x * 0.8 for x in hair],
                lip=[skin[0] * _u(rng, 0.75, 0.95), skin[1] * _u(rng, 0.45, 0.65), skin[2] * _u(rng, 0.5, 0.7)],
                eye=[ev, ev * _u(rng, 0.8, 1.2), ev * _u(rng, 0.8, 1.4)], blush=_u(rng, 0.0, 0.12),
                noise_amp=_u(rng, 0.0, 0.03), noise_fx=_u(rng, 1.0, 4.0), noise_fy=_u(rng, 1.0, 4.0),
                noise_phase=_u(rng, 0, 2 * math.pi), bg=_rgb(rng, [bg, bg, bg], 0.25),
                bg_grad=_u(rng, -0.15, 0.15))


def _car_shape(rng) -> dict:
    L = _u(rng, 0.72, 0.90)
    H = _u(rng, 0.20, 0.30)
    return dict(c=_u(rng, *CAR_C), mirror=float(rng.choice([-1.0, 1.0])), L=L, H=H, yb=_u(rng, 0.18, 0.32), k=_u(rng, 4.0, 8.0),
                tilt=_u(rng, -0.25, 0.1), cab_x=_u(rng, -0.22, 0.08) * L, cab_L=L * _u(rng, 0.42, 0.62),
                cab_H=_u(rng, 0.20, 0.32), cab_slope=_u(rng, 0.15, 0.45), cab_level=_u(rng, 0.72, 0.90),
                wheel_x=_u(rng, 0.55, 0.72), wheel_r=_u(rng, 0.13, 0.19), wheel_h=_u(rng, -0.06, 0.06))


def _car_albedo(rng) -> dict:
    import colorsys

    paint = list(colorsys.hsv_to_rgb(_u(rng, 0, 1), _u(rng, 0.2, 0.8), _u(rng, 0.35, 0.66)))
    wv = _u(rng, 0.04, 0.15)
    bg = _u(rng, 0.10, 0.60)
    return dict(paint=paint, window=[wv, wv * _u(rng, 1.0, 1.3), wv * _u(rng, 1.1, 1.6)],
                tyre=[_u(rng, 0.03, 0.06)] * 3, head=[_u(rng, 0.55, 0.65)] * 3,
                tail=[_u(rng, 0.45, 0.6), _u(rng, 0.03, 0.1), _u(rng, 0.03, 0.1)],
                stripe_on=float(rng.uniform() < 0.3), stripe_col=_rgb(rng, paint, 0.6), stripe_v=_u(rng, -0.3, 0.3),
                bg=_rgb(rng, [bg, bg, bg], 0.25), bg_grad=_u(rng, -0.15, 0.15))


def sample_scene(family: str, seed: int, index: int, family_code: int, stream: bool = False):
    """One v2 scene (a :class:`SceneParams`); ``stream`` scenes are relit like a pseudo sample with
    probability :data:`STREAM_RELIT` (the GAN's training distribution), held-out ones never."""
    from .scenes import SceneParams

    if family not in V2_FAMILIES:
        raise ValueError(f"unknown v2 family {family!r} (expected one of {V2_FAMILIES})")
    key = [int(seed), int(family_code), int(index)] + ([7919] if stream else [])
    rng = np.random.default_rng(np.random.SeedSequence(key))
    yaw, pitch, roll = (_tn(rng, s) for s in VIEW_SIGMA[:3])
    tx, ty = (_tn(rng, s) for s in VIEW_SIGMA[3:])
    k_a, k_d = _u(rng, *KA_BASE), _u(rng, *KD_BASE)
    lx, ly = _u(rng, *LIGHT_X), _u(rng, *LIGHT_Y)
    relit = rng.uniform() < STREAM_RELIT
    r = _u(rng, RAND_LIGHT[family][4], RAND_LIGHT[family][5])
    if stream and relit:
        k_a, k_d = k_a + RAND_LIGHT[family][6] * r, k_d + r
    if family == "face2":
        shape, albedo = _face_shape(rng), _face_albedo(rng)
    else:
        shape, albedo = _car_shape(rng), _car_albedo(rng)
    return SceneParams(family=family, seed=int(seed), index=int(index), yaw=yaw, pitch=pitch, roll=roll, tx=tx,
                       ty=ty, k_a=k_a, k_d=k_d, lx=lx, ly=ly, background=float(np.mean(albedo["bg"])),
                       shape=shape, albedo=albedo)


# ------------------------------------------------------------------------------------------------
# canonical maps
# ------------------------------------------------------------------------------------------------

def _grid(size: int, device) -> tuple[Tensor, Tensor]:
    """Normalised canonical coordinates x (right), y (down) in [−1, 1]; x of column c is exactly
    −x of column S−1−c, so functions of |x| are exactly mirror-symmetric."""
    h = (size - 1) / 2
    t = (torch.arange(size, dtype=torch.float64, device=device) - h) / h
    y, x = torch.meshgrid(t, t, indexing="ij")
    return x, y


def _ss(e0, e1, x):
    t = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _g(x, s):
    return torch.exp(-(x / s) ** 2)


def _p(params, group, key, device) -> Tensor:
    return torch.tensor([getattr(p, group)[key] for p in params], dtype=torch.float64, device=device).view(-1, 1, 1)


def _face_relief(params, size, device) -> tuple[Tensor, Tensor]:
    """Relative relief g ≥ 0 (B×S×S, about 1 at the face's centre) and the canonical object mask."""
    x, y = _grid(size, device)
    s = {k: _p(params, "shape", k, device) for k in params[0].shape}
    ax = x.abs()
    dy = y - s["y0"]
    axw = s["ax"] * (1 - s["taper"] * dy.clamp(min=0) ** 2)
    rho2 = ((ax / axw) ** s["q"] + (dy.abs() / s["ay"]) ** s["q"]) ** (2 / s["q"])
    inside = rho2 < 1
    base = (1 - rho2).clamp(min=0) ** s["p"]
    front = _ss(0.0, 0.45, base)
    t = _ss(s["nose_top"], s["nose_tip"], y)
    ridge = torch.where(y <= s["nose_tip"], t, _g(y - s["nose_tip"], 0.08))
    sig = s["nose_w"] * (0.55 + 0.45 * t)
    f = s["nose_h"] * ridge * torch.exp(-ax ** 2 / (2 * sig ** 2))
    f = f + 0.25 * s["nose_h"] * _g(ax - 1.3 * s["nose_w"], 0.07) * _g(y - s["nose_tip"] + 0.02, 0.06)
    f = f + s["brow_h"] * _g(y - s["brow_v"], 0.07) * torch.exp(-(ax / 0.6) ** 4)
    f = f - s["eye_d"] * torch.exp(-(ax - s["eye_u"]) ** 2 / (2 * 0.12 ** 2) - (y - s["eye_v"]) ** 2 / (2 * 0.085 ** 2))
    f = f - s["mouth_d"] * _g(y - s["mouth_v"], 0.03) * torch.exp(-(ax / s["mouth_w"]) ** 4)
    f = f + s["lip_h"] * _g(y - s["mouth_v"], 0.07) * torch.exp(-(ax / (s["mouth_w"] + 0.06)) ** 4)
    f = f + s["chin_h"] * _g(y - 0.85, 0.12) * _g(ax, 0.35)
    f = f + s["cheek_h"] * torch.exp(-(ax - 0.5) ** 2 / (2 * 0.15 ** 2) - (y - 0.1) ** 2 / (2 * 0.15 ** 2))
    base = base * (1 + s["lean"] * y)  # the forehead leans back, the chin forward (y down)
    g = torch.where(inside, (base + front * f).clamp(min=0), torch.zeros_like(base))
    return g, inside


def _car_parts(params, size, device) -> dict:
    x, y = _grid(size, device)
    s = {k: _p(params, "shape", k, device) for k in params[0].shape}
    xm = x * s["mirror"]  # +xm = the front
    Hx = s["H"] * (1 + s["tilt"] * xm / s["L"])          # the front lower (tilt < 0) or higher
    rb = (xm / s["L"]).abs() ** s["k"] + ((y - s["yb"]) / Hx).abs() ** s["k"]
    body = (1 - rb).clamp(min=0) ** 0.35
    top = s["yb"] - Hx                                      # the body's top edge (y down)
    tc = ((top - y) / s["cab_H"])                           # 0 at the body top, 1 at the roof
    Lc = s["cab_L"] * (1 - s["cab_slope"] * tc.clamp(0, 1))
    rc = ((xm - s["cab_x"]) / Lc).abs() ** 6 + ((y - (top - s["cab_H"] / 2)) / (s["cab_H"] / 2 + 0.04)).abs() ** 6
    cab = s["cab_level"] * (1 - rc).clamp(min=0) ** 0.35
    wheel_y = s["yb"] + 0.75 * s["H"]
    wheels = sum(torch.sigmoid((s["wheel_r"] - ((xm - sgn * s["wheel_x"] * s["L"]) ** 2
                                                  + (y - wheel_y) ** 2).sqrt()) / 0.015) for sgn in (-1, 1))
    g = torch.maximum(body, cab)
    g = torch.where(g > 0, (g + s["wheel_h"] * wheels * (body > 0)).clamp(min=0), g)
    return dict(x=x, y=y, xm=xm, s=s, g=g, body=body, cab=cab, wheels=wheels, top=top, wheel_y=wheel_y)


def _solve_background(g: Tensor, c: Tensor, iters: int = 60) -> Tensor:
    """Background depth b (B) with mean(atanh(10·(b − c·g − 1))) = 0: the depth head centres its raw
    map (METHOD §2.4), so b − c·g is then exactly representable. Bisection in (0.9 + c·max g, 1.1)."""
    lo = MIN_DEPTH + 1e-4 + c * g.flatten(1).amax(1)
    hi = torch.full_like(lo, MAX_DEPTH - 1e-4)
    a, b = lo, hi

    def f(bg):
        z = 10 * (bg.view(-1, 1, 1) - c.view(-1, 1, 1) * g - 1)
        return torch.atanh(z.clamp(-0.999999, 0.999999)).flatten(1).mean(1)

    for _ in range(iters):
        m = (a + b) / 2
        pos = f(m) > 0
        a, b = torch.where(pos, a, m), torch.where(pos, m, b)
    return (a + b) / 2


def _albedo_table(params, device) -> dict[str, Tensor]:
    """Every albedo parameter of the batch as a float64 tensor (leading image axis)."""
    return {k: torch.tensor([p.albedo[k] for p in params], dtype=torch.float64, device=device) for k in params[0].albedo}


def _lerp(rho: Tensor, colour: Tensor, w: Tensor) -> Tensor:
    """Blend the B×3×S×S albedo towards a B×3×1×1 colour with B×S×S weights."""
    return rho + w.unsqueeze(1) * (colour - rho)


def _face_albedo_map(params, size, device, inside: Tensor) -> Tensor:
    x, y = _grid(size, device)
    ax = x.abs()
    A = _albedo_table(params, device)
    s = {k: _p(params, "shape", k, device) for k in ("brow_v", "eye_u", "eye_v", "mouth_v", "mouth_w", "y0")}

    def col(k):
        return A[k].view(-1, 3, 1, 1)

    B = len(params)
    rho = col("skin").expand(B, 3, size, size).clone()
    # hair above a symmetric hairline, and outside the face's sides above the ears
    hl = A["hairline"].view(-1, 1, 1) + A["hair_curve"].view(-1, 1, 1) * ax ** 2
    rho = _lerp(rho, col("hair"), torch.sigmoid((hl - y) / 0.04) * A["hair_on"].view(-1, 1, 1))
    bv = s["brow_v"] - 0.07 + 0.15 * (ax - 0.35) ** 2
    rho = _lerp(rho, col("brow"), _g(y - bv, 0.035) * torch.sigmoid((ax - 0.12) / 0.02) * torch.sigmoid((0.55 - ax) / 0.03))
    rho = _lerp(rho, col("eye"), torch.exp(-((ax - s["eye_u"]) / 0.07) ** 2 - ((y - s["eye_v"]) / 0.04) ** 2))
    rho = _lerp(rho, col("lip"), torch.exp(-((y - s["mouth_v"]) / 0.06) ** 2 - (ax / s["mouth_w"]) ** 4))
    rho = rho + (A["blush"].view(-1, 1, 1) * torch.exp(-((ax - 0.5) / 0.15) ** 2 - ((y - 0.15) / 0.15) ** 2)).unsqueeze(1) \
        * rho.new_tensor([1.0, -0.3, -0.3]).view(1, 3, 1, 1)
    noise = A["noise_amp"].view(-1, 1, 1) * torch.cos(math.pi * A["noise_fx"].view(-1, 1, 1) * x) \
        * torch.sin(math.pi * A["noise_fy"].view(-1, 1, 1) * y + A["noise_phase"].view(-1, 1, 1))
    rho = rho + noise.unsqueeze(1)
    bg = col("bg") * (1 + A["bg_grad"].view(-1, 1, 1, 1) * y.unsqueeze(0).unsqueeze(0))
    return torch.where(inside.unsqueeze(1), rho, bg)


def _car_albedo_map(params, size, device, parts: dict, inside: Tensor) -> Tensor:
    A = _albedo_table(params, device)
    xm, y, s = parts["xm"], parts["y"], parts["s"]

    def col(k):
        return A[k].view(-1, 3, 1, 1)

    B = len(params)
    rho = col("paint").expand(B, 3, size, size).clone()
    stripe = A["stripe_on"].view(-1, 1, 1) * _g(y - s["yb"] - A["stripe_v"].view(-1, 1, 1) * s["H"], 0.03) * (parts["body"] > 0)
    rho = _lerp(rho, col("stripe_col"), stripe)
    window = (parts["cab"] > 0) & (parts["body"] <= parts["cab"])
    win_w = torch.sigmoid((parts["top"] - 0.02 - y) / 0.015) * torch.sigmoid((y - (parts["top"] - s["cab_H"] + 0.05)) / 0.015)
    rho = _lerp(rho, col("window"), win_w * window)
    rho = _lerp(rho, col("tyre"), parts["wheels"].clamp(0, 1))
    lamp_y = _g(y - (s["yb"] - 0.3 * s["H"]), 0.06) * (parts["body"] > 0)
    rho = _lerp(rho, col("head"), lamp_y * torch.sigmoid((xm / s["L"] - 0.88) / 0.03))
    rho = _lerp(rho, col("tail"), lamp_y * torch.sigmoid((-xm / s["L"] - 0.88) / 0.03))
    bg = col("bg") * (1 + A["bg_grad"].view(-1, 1, 1, 1) * y.unsqueeze(0).unsqueeze(0))
    return torch.where(inside.unsqueeze(1), rho, bg)


def canonical_maps(params, size: int = 64, device="cpu") -> dict[str, Tensor]:
    """Canonical ``depth`` B×S×S (border-clamped, exactly representable by the depth head),
    ``albedo`` B×3×S×S in [−1, 1], object ``mask`` B×1×S×S (0/1), the relief amplitude ``c`` (B), the
    background plane's depth ``background`` (B) and the depth net's raw output ``raw`` B×S×S that
    gives ``depth`` through the method's depth head and border clamp, of scenes of one v2 family."""
    fam = {p.family for p in params}
    if len(fam) != 1 or not fam <= set(V2_FAMILIES):
        raise ValueError(f"canonical_maps needs scenes of one v2 family, got {sorted(fam)}")
    family = fam.pop()
    if family == "face2":
        g, inside = _face_relief(params, size, device)
        rho = _face_albedo_map(params, size, device, inside)
    else:
        parts = _car_parts(params, size, device)
        g = parts["g"]
        inside = g > 0
        rho = _car_albedo_map(params, size, device, parts, inside)
    c = _p(params, "shape", "c", device).view(-1)
    bg = _solve_background(g, c)
    d0 = bg.view(-1, 1, 1) - c.view(-1, 1, 1) * g
    raw = torch.atanh(10 * (d0 - 1))
    depth = clamp_border(depth_head(raw, MIN_DEPTH, MAX_DEPTH), min_depth=MIN_DEPTH, max_depth=MAX_DEPTH)
    albedo = rho.clamp(*RHO) * 2 - 1
    return dict(depth=depth.float(), albedo=albedo.float(), mask=inside.unsqueeze(1).float(), c=c.float(),
                background=bg.float(), raw=(raw - raw.mean((1, 2), keepdim=True)).float())


# ------------------------------------------------------------------------------------------------
# rendering with the method's renderer
# ------------------------------------------------------------------------------------------------

def raw_light(params) -> Tensor:
    """Lights in the networks' raw units (2·k_a − 1, 2·k_d − 1, lx, ly), B×4 (METHOD §2.4)."""
    return torch.tensor([[2 * p.k_a - 1, 2 * p.k_d - 1, p.lx, p.ly] for p in params], dtype=torch.float32)


_RENDERERS: dict = {}


def renderer_for(size: int, device) -> Renderer:
    """The method's renderer at S px (bin size as the method's default: naive on the CPU, binned on CUDA)."""
    key = (int(size), str(device))
    if key not in _RENDERERS:
        _RENDERERS[key] = Renderer(size, min_depth=MIN_DEPTH, max_depth=MAX_DEPTH, bin_size=None).to(device)
    return _RENDERERS[key]


@torch.no_grad()
def render_v2(params, size: int = 64, device="cpu", views: Tensor | None = None,
              lights: Tensor | None = None, canon: dict | None = None) -> dict[str, Tensor]:
    """Render v2 scenes of one family with the method's step-1 image formation (METHOD §3.7).

    ``views`` (B×6 physical) and ``lights`` (B×4 raw) replace the scenes' own. Returns ``image``
    B×3×S×S, input-view ``depth`` B×S×S (object; background 1.1), ``normals`` B×S×S×3 (of the
    rendered depth; background (0, 0, 1)), ``mask`` B×1×S×S (the canonical mask warped nearest),
    ``valid`` B×1×S×S (recon depth < 1.2), ``recon_depth`` (the renderer's), the canonical
    ``canon_depth``, ``albedo``, ``canon_mask``, and ``view`` B×6 / ``light`` B×4 (k_a, k_d, lx, ly).
    """
    device = torch.device(device)
    rend = renderer_for(size, device)
    cm = canon if canon is not None else canonical_maps(params, size, device)
    depth, albedo, cmask = (cm[k].to(device) for k in ("depth", "albedo", "mask"))
    if views is None:
        views = torch.tensor([p.view for p in params], dtype=torch.float32)
    if lights is None:
        lights = raw_light(params)
    views, lights = views.to(device, torch.float32), lights.to(device, torch.float32)
    normals = rend.normals(depth)
    k_a, k_d, direction = light_to_physical(lights)
    shading, _ = shade(normals, k_a, k_d, direction)
    texture = compose_texture(albedo, shading)
    image, recon_depth, valid = rend.render(texture, depth, views)
    grid = rend.inverse_warp_grid(recon_depth, views)
    mask = F.grid_sample(cmask, grid, mode="nearest", padding_mode="zeros", align_corners=True) * valid
    obj = mask[:, 0] > 0.5
    gt = torch.where(obj, recon_depth.clamp(max=MAX_OBJECT_DEPTH), torch.full_like(recon_depth, FAR))
    n_view = rend.normals(recon_depth.clamp(max=rend.depth_hi))
    n_view = torch.where(obj[..., None], n_view / n_view.norm(dim=-1, keepdim=True).clamp(min=1e-12),
                         n_view.new_tensor([0.0, 0.0, 1.0]))
    light_phys = torch.stack([k_a, k_d, lights[:, 2], lights[:, 3]], 1)
    return dict(image=image.contiguous(), depth=gt, normals=n_view.contiguous(), mask=mask, valid=valid,
                recon_depth=recon_depth, canon_depth=depth, albedo=albedo, canon_mask=cmask,
                view=views, light=light_phys)


# ------------------------------------------------------------------------------------------------
# the support of the GAN's training distribution (pseudo-sample coverage)
# ------------------------------------------------------------------------------------------------

def view_support() -> Tensor:
    """Half-widths of the training views' support in physical units (rx, ry, rz rad, tx, ty)."""
    yaw, pitch, roll, tx, ty = (VIEW_TRUNC * s for s in VIEW_SIGMA)
    return torch.tensor([math.radians(pitch), math.radians(yaw), math.radians(roll), tx, ty], dtype=torch.float64)


def light_in_support(family: str, k_a: Tensor, k_d: Tensor, direction: Tensor, tol: float = 1e-6) -> Tensor:
    """Whether lights (strengths, unit directions) lie in the training stream's support: direction
    (dx/dz, dy/dz) in the box, and (k_a, k_d) = (k_a0 + α·r, k_d0 + r) for a base (k_a0, k_d0) in
    its box and r in the preset's [r_min, r_max] (r = 0 for unrelit scenes)."""
    dx, dy = direction[:, 0] / direction[:, 2], direction[:, 1] / direction[:, 2]
    x_ok = (dx >= LIGHT_X[0] - tol) & (dx <= LIGHT_X[1] + tol)
    y_ok = (dy >= LIGHT_Y[0] - tol) & (dy <= LIGHT_Y[1] + tol)
    r_min, r_max, alpha = RAND_LIGHT[family][4], RAND_LIGHT[family][5], RAND_LIGHT[family][6]
    # r must satisfy k_d − r ∈ KD_BASE, k_a − α·r ∈ KA_BASE and r ∈ [r_min, r_max] (or r = 0)
    lo = torch.maximum(k_d - KD_BASE[1], torch.full_like(k_d, r_min))
    hi = torch.minimum(k_d - KD_BASE[0], torch.full_like(k_d, r_max))
    if alpha < 0:
        lo = torch.maximum(lo, (k_a - KA_BASE[0]) / alpha)
        hi = torch.minimum(hi, (k_a - KA_BASE[1]) / alpha)
    elif alpha > 0:
        lo = torch.maximum(lo, (k_a - KA_BASE[1]) / alpha)
        hi = torch.minimum(hi, (k_a - KA_BASE[0]) / alpha)
    s_ok = lo <= hi + tol
    return x_ok & y_ok & s_ok
