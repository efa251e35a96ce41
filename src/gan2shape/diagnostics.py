"""Diagnostic projections: what step 3 is given instead of the GAN's projected samples.

The method never imports the synthetic world; these hooks plug into :class:`GAN2Shape` from
outside (``model.projection_hook``), chosen by ``MethodConfig.projection``:

* ``"pseudo"`` -- the pseudo samples themselves (a perfect projection of the current canonical
  shape: no GAN information reaches step 3);
* ``"oracle"`` -- the *self-consistent* oracle: a perfect GAN of the ground truth as the model
  represents it. The true canonical depth and albedo, relit and re-viewed by the method's own
  pseudo-sample renderer (:func:`gan2shape.method.sampling.render_pseudo_samples`) in each pseudo
  sample's view and light, with the true k_a, k_d (needs ``Target.scene``). World v2: the frontal
  canonical frame of the scene (:func:`gan2shape.world.v2.canonical_maps`); world v1: the input
  view taken as the canonical frame (its ground-truth depth and albedo there, background at 1.1).
  At the true depth, albedo, view and light the step-3 objective is then minimal (0 with true V, L).
* ``"mesh_oracle"`` -- the old *model-mismatched* check (world v1 only): the scene's mesh rendered
  by the world's mesh renderer in each pseudo view and light (hidden sides, mesh normals, unlit
  background: not representable by the model; see docs/world.md). Selecting it through
  ``MethodConfig.projection`` needs "mesh_oracle" among the config's allowed values.

A hook returns step 3's samples, or (samples, their raw lights) when they are lit otherwise than the
pseudo samples: both oracles light the scene's true k_a, k_d, which ``step3_viewlight = "pseudo"``
then renders with.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .method.renderer import view_to_physical


def pseudo_projection(model, target, pseudo, raw_views, light_dir, light_r) -> torch.Tensor:
    """Step 3 sees the pseudo samples."""
    return pseudo


@torch.no_grad()
def mesh_oracle_samples(model, target, raw_views: torch.Tensor, light_dir: torch.Tensor,
                   light_r: torch.Tensor) -> torch.Tensor:
    """The mesh oracle (model-mismatched, world v1): what one image's pseudo samples would show if
    the world's mesh were seen in their views and lights.

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


def per_image_projection(samples):
    """A projection hook that gives step 3 ``samples(model, target_i, views_i, dirs_i, strengths_i)``
    of each of the K stacked images (its consecutive chunk of the K·N_p pseudo views and lights),
    with the raw lights they are lit with: the pseudo lights on the scene's true k_a, k_d."""
    from .method.sampling import pseudo_lights

    def hook(model, target, pseudo, raw_views, light_dir, light_r) -> tuple[torch.Tensor, torch.Tensor]:
        k = target.image.shape[0]
        n = raw_views.shape[0] // k
        scenes = target.scene if isinstance(target.scene, list) else [target.scene]
        images, lights = [], []
        for i, s in enumerate(scenes):
            sl = slice(i * n, (i + 1) * n)
            images.append(samples(model, replace(target, scene=s), raw_views[sl], light_dir[sl], light_r[sl]))
            lights.append(pseudo_lights(light_dir[sl], light_r[sl], s.k_a, s.k_d, model.cfg.rand_light[6]))
        return torch.cat(images), torch.cat(lights).to(model.device)
    return hook


# Step 3 sees the ground-truth scene of each image, rendered like its pseudo samples (mesh oracle).
mesh_oracle_projection = per_image_projection(mesh_oracle_samples)


def canonical_truth(scene, size: int, device="cpu") -> dict:
    """The ground truth in the model's terms: canonical ``depth`` 1×S×S, ``albedo`` 1×3×S×S,
    ``normals`` (the method's), ``k_a``, ``k_d`` (1) and the true ``view`` (1×6 physical) of the
    input relative to that frame. World v2: the scene's frontal canonical maps and view; world v1: the
    input view as the canonical frame (ground-truth depth, background 1.1, and albedo, background 0)."""
    from .method.renderer import Renderer
    from .world.render import render_batch
    from .world.scenes import V2_FAMILIES

    if scene.family in V2_FAMILIES:
        from .world.v2 import canonical_maps, renderer_for

        cm = canonical_maps([scene], size, device)
        depth, albedo, rend = cm["depth"], cm["albedo"], renderer_for(size, device)
        view = torch.tensor([scene.view], dtype=torch.float32, device=device)
    else:
        r = render_batch([scene], size=size, device=device)
        depth, albedo, rend = r["depth"], r["albedo"], Renderer(size).to(device)
        view = torch.zeros(1, 6, device=device)
    k = torch.tensor([scene.k_a], device=device), torch.tensor([scene.k_d], device=device)
    return dict(depth=depth, albedo=albedo, normals=rend.normals(depth), k_a=k[0], k_d=k[1], view=view)


@torch.no_grad()
def consistent_oracle_samples(model, target, raw_views: torch.Tensor, light_dir: torch.Tensor,
                              light_r: torch.Tensor) -> torch.Tensor:
    """One image's pseudo samples rendered by the method itself from the ground truth
    (:func:`canonical_truth`) instead of its current canonical estimate."""
    from .method.sampling import CanonicalState, render_pseudo_samples

    c = model.cfg
    if target.scene is None:
        raise ValueError(f"{target.name}: projection 'oracle' needs the synthetic scene parameters")
    t = canonical_truth(target.scene, c.image_size, model.device)
    state = CanonicalState(t["depth"], t["albedo"], t["normals"], t["k_a"], t["k_d"])
    out, _ = render_pseudo_samples(model.renderer, state, raw_views, light_dir, light_r, c.rand_light[6],
                                   c.xyz_rotation_range, c.xy_translation_range, c.z_translation_range)
    return out


# Step 3 sees the self-consistent oracle's renders of each image's ground truth.
consistent_oracle_projection = per_image_projection(consistent_oracle_samples)


HOOKS = {"pseudo": pseudo_projection, "oracle": consistent_oracle_projection,
         "mesh_oracle": mesh_oracle_projection}


def install_projection(model):
    """Set ``model.projection_hook`` from ``model.cfg.projection`` ("gan": none). Returns the model."""
    model.projection_hook = HOOKS.get(model.cfg.projection)
    return model
