"""Model-consistency checks of world v2 and the pseudo-sample coverage (issue 10, docs/world.md).

With the ground-truth canonical depth, albedo, view and light fed to the method's own model
(:class:`gan2shape.method.model.GAN2Shape` whose D, A, V, L return the truth):

* ``step1``: the step-1 render reproduces the input image (mean L1 on valid pixels);
* ``flip``: the flip branch's render does too (mirror-symmetric families);
* ``pseudo``: the method's pseudo sample of the truth in a random view and light (its
  ``pseudo_samples``) equals the world's render of that view and light (mean L1 on object pixels).

``coverage`` draws the views and lights the method asks for (view MVN × view_scale, the preset's
``rand_light`` relative to the target's true k_a, k_d) and counts those outside the support of the GAN's
training stream (:func:`.v2.view_support`, :func:`.v2.light_in_support`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..method.renderer import view_to_physical
from .v2 import RAND_LIGHT, canonical_maps, light_in_support, raw_light, render_v2, view_support

__all__ = ["PRESET_OF", "truth_model", "check_scenes", "coverage"]

PRESET_OF = {"face2": "synface", "car2": "car"}  # the recipe each v2 family is made for


class _Const(nn.Module):
    """A network that returns a fixed output (the truth) whatever its input."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.register_buffer("value", value)

    def forward(self, x):
        return self.value


def raw_view(views: torch.Tensor, rot_range_deg: float = 60.0, xy_range: float = 0.1) -> torch.Tensor:
    """Physical B×6 views → the networks' raw units (inverse of METHOD §2.4 with z range 0)."""
    return torch.cat([views[:, :3] / math.radians(rot_range_deg), views[:, 3:5] / xy_range,
                      torch.zeros_like(views[:, 5:])], 1)


def truth_model(family: str, size: int, viewlight) -> "GAN2Shape":  # noqa: F821
    """The method's model for ``family``'s preset (perceptual term off, a small random GAN that step 1
    never uses); :func:`set_truth` makes its D, A, V, L return a scene's truth."""
    from ..gan.stylegan2 import Generator
    from ..method.config import preset
    from ..method.losses import PerceptualLoss
    from ..method.model import GAN2Shape

    cfg = preset(PRESET_OF[family], image_size=size, lam_perc=0.0, crop=None)
    torch.manual_seed(0)
    g = Generator(64, style_dim=32, n_mlp=8, channel_multiplier=1, channel_max=32).eval()
    return GAN2Shape(cfg, g, None, PerceptualLoss("none"), viewlight)


def set_truth(model, canon: dict, params) -> None:
    """D, A, V, L of ``model`` return the truth of ``params`` (canonical maps ``canon``)."""
    views = torch.tensor([p.view for p in params], dtype=torch.float32)
    model.nets["netD"] = _Const(canon["raw"][:, None].float())
    model.nets["netA"] = _Const(canon["albedo"].float())
    model.nets["netV"] = _Const(raw_view(views) - model.view_mean)
    model.nets["netL"] = _Const(raw_light(params) - model.light_mean)


@torch.no_grad()
def check_scenes(params, images: torch.Tensor, viewlight, n_pseudo: int = 4, seed: int = 0) -> list[dict]:
    """The three checks for scenes of one v2 family and their input ``images`` (B×3×S×S, e.g. read
    back from the test set): per image ``step1_l1``, ``flip_l1`` (face2 only), ``pseudo_l1`` (mean
    over ``n_pseudo`` pseudo samples of the preset) and the valid / object pixel shares."""
    from ..method.model import Target
    from ..method.sampling import CanonicalState

    family = params[0].family
    size = images.shape[-1]
    canon = canonical_maps(params, size)
    model = truth_model(family, size, viewlight)
    set_truth(model, canon, params)
    rows = []
    for i, p in enumerate(params):
        one = {k: v[i:i + 1] for k, v in canon.items()}
        set_truth(model, one, [p])
        t = Target(name=f"{p.family}_{p.index}", image=images[i:i + 1].float(), latent=torch.zeros(1, 32))
        s1 = model.step1(t, flip=False)
        v = s1.valid
        row = {"image": t.name, "step1_l1": float(((s1.recon - t.image).abs() * v).sum() / (3 * v.sum())),
               "valid_share": float(v.mean())}
        if family == "face2":
            s2 = model.step1(t, flip=True)
            v2m = s2.valid
            row["flip_l1"] = float(((s2.recon[1:] - t.image).abs() * v2m).sum() / (3 * v2m.sum()))
        # pseudo samples of the truth vs the world's render of the same views and lights
        st = CanonicalState(s1.depth, s1.albedo, s1.normals, s1.k_a, s1.k_d)
        g = torch.Generator().manual_seed(seed * 100003 + i)
        pseudo, _, rv, ldir, lr = model.pseudo_samples(st, n_pseudo, g, return_params=True)
        alpha = model.cfg.rand_light[6]
        lights = torch.stack([2 * (p.k_a + alpha * lr) - 1, 2 * (p.k_d + lr) - 1,
                              ldir[:, 0] / ldir[:, 2], ldir[:, 1] / ldir[:, 2]], 1)
        world = render_v2([p] * n_pseudo, size, views=model.physical_view(rv), lights=lights,
                          canon={k: v.expand(n_pseudo, *v.shape[1:]) for k, v in one.items()})
        obj = world["mask"] * world["valid"]
        row["pseudo_l1"] = float(((pseudo - world["image"]).abs() * obj).sum() / (3 * obj.sum().clamp(min=1)))
        row["object_share"] = float(obj.mean())
        rows.append(row)
    return rows


def coverage(family: str, params, viewlight, n_per_image: int = 64, seed: int = 0) -> dict:
    """Share of the pseudo views / lights the method asks for that lie outside the GAN's training
    support: views ~ MVN (yaw × the preset's view_scale), lights ~ the preset's ``rand_light`` on
    each target's true k_a, k_d (METHOD §5.1–5.2)."""
    from ..method.config import preset
    from ..method.sampling import sample_lights, sample_views

    cfg = preset(PRESET_OF[family])
    g = torch.Generator().manual_seed(seed)
    sup = view_support().float()
    out_view = out_light = out_any = n = 0
    for p in params:
        raw = sample_views(viewlight, n_per_image, cfg.view_scale, g)
        phys = view_to_physical(raw, cfg.xyz_rotation_range, cfg.xy_translation_range, cfg.z_translation_range)
        v_bad = (phys[:, :5].abs() > sup).any(1)
        d, r = sample_lights(n_per_image, RAND_LIGHT[family], g)
        alpha = RAND_LIGHT[family][6]
        ka = torch.full((n_per_image,), p.k_a) + alpha * r
        kd = torch.full((n_per_image,), p.k_d) + r
        l_bad = ~light_in_support(family, ka, kd, d)
        out_view += int(v_bad.sum())
        out_light += int(l_bad.sum())
        out_any += int((v_bad | l_bad).sum())
        n += n_per_image
    return {"preset": PRESET_OF[family], "view_scale": cfg.view_scale, "rand_light": list(RAND_LIGHT[family]),
            "samples": n, "outside_view": out_view / n, "outside_light": out_light / n, "outside_any": out_any / n}
