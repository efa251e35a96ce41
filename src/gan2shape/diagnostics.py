"""Diagnostic projections: what step 3 is given instead of the GAN's projected samples.

The method never imports the synthetic world; these hooks plug into :class:`GAN2Shape` from
outside (``model.projection_hook``), chosen by ``MethodConfig.projection``:

* ``"pseudo"`` -- the pseudo samples themselves (a perfect projection of the current canonical
  shape: no GAN information reaches step 3);
* ``"oracle"`` -- a perfect GAN of the ground-truth object: the synthetic scene rendered in each
  pseudo sample's view and light (needs ``Target.scene``).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .method.renderer import view_to_physical


def pseudo_projection(model, target, pseudo, raw_views, light_dir, light_r) -> torch.Tensor:
    """Step 3 sees the pseudo samples."""
    return pseudo


@torch.no_grad()
def oracle_samples(model, target, raw_views: torch.Tensor, light_dir: torch.Tensor,
                   light_r: torch.Tensor) -> torch.Tensor:
    """What one image's pseudo samples would show if the canonical depth and albedo were exact.

    The method's canonical frame is the input view (the priors are built there), so the
    ground-truth object is rendered as placed in the input image, then re-viewed by each pseudo
    view with the method's warp; the pseudo light is attached to that frame, its strength added to
    the object's own k_a, k_d (METHOD §5.1).
    """
    from .world.render import render_batch

    c = model.cfg
    if target.scene is None:
        raise ValueError(f"{target.name}: projection 'oracle' needs the synthetic scene parameters")
    views = view_to_physical(raw_views, c.xyz_rotation_range, c.xy_translation_range, c.z_translation_range)
    s, alpha = target.scene, c.rand_light[6]
    scenes = [replace(s, k_a=s.k_a + alpha * float(r), k_d=s.k_d + float(r), lx=float(d[0] / d[2]),
                      ly=float(d[1] / d[2]))
              for d, r in zip(light_dir.tolist(), light_r.tolist())]
    return render_batch(scenes, size=c.image_size, device=model.device, warp=views)["image"]


def oracle_projection(model, target, pseudo, raw_views, light_dir, light_r) -> torch.Tensor:
    """Step 3 sees the ground-truth scene of each of the K images, rendered like its pseudo samples."""
    k = target.image.shape[0]
    n = raw_views.shape[0] // k
    scenes = target.scene if isinstance(target.scene, list) else [target.scene]
    return torch.cat([oracle_samples(model, replace(target, scene=s), raw_views[i * n:(i + 1) * n],
                                     light_dir[i * n:(i + 1) * n], light_r[i * n:(i + 1) * n])
                      for i, s in enumerate(scenes)])


HOOKS = {"pseudo": pseudo_projection, "oracle": oracle_projection}


def install_projection(model):
    """Set ``model.projection_hook`` from ``model.cfg.projection`` ("gan": none). Returns the model."""
    model.projection_hook = HOOKS.get(model.cfg.projection)
    return model
