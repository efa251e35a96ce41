"""The GAN2Shape model: the five networks D, A, V, L, E, the frozen StyleGAN2, its discriminator, the
perceptual net and the renderer, and the forwards of the three steps (METHOD §1, §3.7, §4, §5).

* **step 1** fits the albedo net A so the render of (depth, albedo, view, light) matches the target;
* **step 2** fits the offset encoder E so that G(w + Δw) reproduces random *pseudo samples*
  (the current canonical shape, relit and seen from random views);
* **step 3** fits D, A, V, L on the target and on *projected samples* (the GAN outputs of step 2).

Every step takes a target of K ≥ 1 stacked images and computes per-image losses, so one image, a
group sharing one model and K independent models (:mod:`.stacked`) run the same code.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io import CheckpointError
from .config import NET_NAMES, MethodConfig
from .losses import PerceptualLoss, discriminator_feature_loss, latent_regularization, masked_l1, smoothness
from .metrics import depth_metrics
from .networks import build_networks, clamp_border, depth_head
from .renderer import Renderer, compose_texture, light_to_physical, shade, view_to_physical
from .sampling import (CanonicalState, LatentOffsetMapper, ViewLightDistribution, generate_projected,
                       postprocess_gan_image, pseudo_lights, render_pseudo_samples, sample_lights, sample_views)


@dataclass
class Target:
    """One image to reconstruct and everything known about it."""

    name: str
    image: torch.Tensor                      # 1×3×S×S in [-1, 1]
    latent: torch.Tensor                     # 1×C (W) or 1×n_latent×C (W+)
    mask: torch.Tensor | None = None         # 1×1×S×S soft object mask
    prior: torch.Tensor | None = None        # 1×S×S depth prior (for the pre-fit)
    gt_depth: torch.Tensor | None = None     # 1×S×S ground-truth depth in the input view
    origin_size: int | None = None           # width of the image file before resizing (for crop)
    gan_image: torch.Tensor | None = None    # filled by the trainer: G(w), post-processed
    scene: Any = None                        # ground-truth scene (only for the diagnostic projection "oracle")

    def to(self, device) -> "Target":
        def mv(t):
            return None if t is None else t.to(device)
        return replace(self, image=mv(self.image), latent=mv(self.latent), mask=mv(self.mask),
                       prior=mv(self.prior), gt_depth=mv(self.gt_depth), gan_image=mv(self.gan_image))


@dataclass
class Step1Output:
    loss: torch.Tensor                # scalar (sum over the K images), or the K vector (per_image)
    losses: dict                      # named terms (detached floats, or lists of K floats)
    depth: torch.Tensor               # B'×S×S canonical depth (B' = K, or 2K with flip: unflipped first)
    albedo: torch.Tensor              # B'×3×S×S
    normals: torch.Tensor             # B'×S×S×3
    view: torch.Tensor                # K×6 raw view (with mean)
    light: torch.Tensor               # K×4 raw light (with mean)
    k_a: torch.Tensor
    k_d: torch.Tensor
    shading: torch.Tensor
    recon: torch.Tensor               # B'×3×S×S
    recon_depth: torch.Tensor         # B'×S×S
    valid: torch.Tensor               # K×1×S×S validity mask (product over flip branches)
    metrics: dict | None = None       # depth metrics (means over the K images)
    terms: dict | None = None         # loss terms, detached K vectors
    image_metrics: list[dict] | None = None  # depth metrics of each image


class GAN2Shape(nn.Module):
    """D, A, V, L, E plus the frozen StyleGAN2, its discriminator, the perceptual net and the renderer."""

    def __init__(self, cfg: MethodConfig, generator: nn.Module, discriminator: nn.Module,
                 perceptual: PerceptualLoss, viewlight: ViewLightDistribution):
        super().__init__()
        self.cfg = cfg
        self.nets = build_networks(cfg.image_size, latent_dim=generator.style_dim, width=cfg.net_width)
        self.renderer = Renderer(cfg.image_size, fov=cfg.fov, min_depth=cfg.min_depth, max_depth=cfg.max_depth,
                                 rot_center_depth=cfg.rot_center_depth, bin_size=cfg.raster_bin_size,
                                 max_faces_per_bin=cfg.raster_max_faces_per_bin)
        # Frozen components are held outside the module tree so they are never saved or optimised.
        for m in (generator, discriminator, perceptual):
            if m is not None:
                m.eval().requires_grad_(False)
        self._frozen = {"G": generator, "Dgan": discriminator, "perceptual": perceptual}
        self.mapper = LatentOffsetMapper(generator, cfg.f1_d)
        self.viewlight = viewlight
        self.register_buffer("view_mean", viewlight.view.mean.clone() if cfg.add_mean_view else torch.zeros(6))
        self.register_buffer("light_mean", viewlight.light.mean.clone() if cfg.add_mean_light else torch.zeros(4))
        # diagnostic hook replacing the projected samples (cfg.projection != "gan"); see gan2shape.diagnostics
        self.projection_hook: Callable | None = None
        # fast mode (set by stacked.fast_view / StackedGAN2Shape): bf16 autocast of the encoders
        # netEnc, netV, netL on this device type (None: fp32), and no host syncs in the steps (loss
        # terms and metrics stay tensors; the trainer reads them every log_every iterations)
        self.amp: str | None = None
        self.sync_free = False

    def _amp(self):
        """bf16 autocast for an encoder's forward in fast mode; nothing otherwise."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.amp, dtype=torch.bfloat16)

    def encode(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Encoder ``name`` (netEnc, netV, netL) on ``x``; in fast mode bf16 inside, float32 out."""
        # K stacked encoders run under vmap, where CUDA autocast does not reach every conv (measured on
        # an H200: "Input type BFloat16 and bias type float"): they stay fp32
        if self.amp is None or getattr(self.nets[name], "vmapped", False):
            return self.nets[name](x)
        with self._amp():
            return self.nets[name](x).float()

    def _log(self, terms: dict, per_image: bool) -> dict:
        """Loss terms for the log: floats/lists (one device sync) or, sync-free, the K-vector tensors."""
        return dict(terms) if self.sync_free else _log_terms(terms, per_image)

    @property
    def G(self):
        return self._frozen["G"]

    @property
    def Dgan(self):
        return self._frozen["Dgan"]

    @property
    def perceptual(self):
        return self._frozen["perceptual"]

    def to(self, *args, **kwargs):
        super().to(*args, **kwargs)
        for m in self._frozen.values():
            if m is not None:
                m.to(*args, **kwargs)
        return self

    @property
    def device(self) -> torch.device:
        return self.view_mean.device

    # -- state of the trainable networks (official pretrain checkpoint keys) --------------------
    def nets_state(self) -> dict:
        return {k: copy.deepcopy(self.nets[k].state_dict()) for k in NET_NAMES}

    def load_nets_state(self, state: dict, names: Iterable[str] = NET_NAMES, strict: bool = True,
                        source: str = "state") -> list[str]:
        loaded = []
        for k in names:
            if k in state:
                try:
                    self.nets[k].load_state_dict(state[k], strict=strict)
                except RuntimeError as e:
                    raise CheckpointError(f"{source}: {k} does not fit a {self.cfg.image_size}-px network of "
                                          f"width {self.cfg.net_width:g} (--image-size, --net-width): "
                                          f"{str(e).splitlines()[0]}") from e
                loaded.append(k)
        return loaded

    # -- helpers --------------------------------------------------------------------------------
    def physical_view(self, raw: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return view_to_physical(raw, c.xyz_rotation_range, c.xy_translation_range, c.z_translation_range)

    def predict_depth(self, image: torch.Tensor, border: bool = True) -> torch.Tensor:
        """Canonical depth of §2.4: per-image centring, tanh, scaling, optional border clamp."""
        c = self.cfg
        depth = depth_head(self.nets["netD"](image), c.min_depth, c.max_depth)
        if border:
            depth = clamp_border(depth, c.border_depth, min_depth=c.min_depth, max_depth=c.max_depth)
        return depth

    def predict_view(self, image: torch.Tensor) -> torch.Tensor:
        return self.encode("netV", image) + self.view_mean

    def predict_light(self, image: torch.Tensor) -> torch.Tensor:
        return self.encode("netL", image) + self.light_mean

    @torch.no_grad()
    def gan_image(self, target: Target) -> torch.Tensor:
        img, _ = self.G(target.latent, input_is_w=True, randomize_noise=False)
        return postprocess_gan_image(img, self.cfg.image_size, self.cfg.crop, target.origin_size)

    def _perc(self, x, y, mask, groups: int = 1):
        """Perceptual distance of the masked batches: their mean, or with ``groups`` = K the mean
        within each image's consecutive chunk (a K vector)."""
        if self.cfg.lam_perc == 0:
            return x.new_zeros(()) if groups == 1 else x.new_zeros(groups)
        if groups == 1:
            return self.perceptual(x * mask, y * mask)
        return self.perceptual(x * mask, y * mask, reduction="none").view(groups, -1).mean(1)

    # The step forwards take a target with K ≥ 1 stacked images (``target.image`` K×3×S×S, see
    # ``batched.stack_targets``); every tensor is K-major within a flip branch, and every loss is
    # computed per image. ``loss`` is the sum of the K per-image losses (for K = 1: the loss), or
    # with ``per_image`` the K vector; ``losses`` holds floats (summed over K), or with
    # ``per_image`` lists of K floats.

    # -- step 1: reconstruct the target (METHOD §3.7, §4.4) --------------------------------------
    def step1(self, target: Target, flip: bool = False, grad_nets: Sequence[str] = NET_NAMES,
              per_image: bool = False) -> Step1Output:
        image = target.image
        k = image.shape[0]
        with torch.set_grad_enabled(torch.is_grad_enabled() and "netD" in grad_nets):
            depth = self.predict_depth(image)
        with torch.set_grad_enabled(torch.is_grad_enabled() and "netV" in grad_nets):
            view = self.predict_view(image)
        with torch.set_grad_enabled(torch.is_grad_enabled() and "netA" in grad_nets):
            albedo = self.nets["netA"](image)
        with torch.set_grad_enabled(torch.is_grad_enabled() and "netL" in grad_nets):
            light = self.predict_light(image)
        # 1. the soft symmetry prior: a second branch with flipped depth and albedo
        if flip:
            depth = torch.cat([depth, depth.flip(2)])
            albedo = torch.cat([albedo, albedo.flip(3)])
        nb = depth.shape[0] // k
        # 2. normals -> Lambertian shading -> canonical texture
        normals = self.renderer.normals(depth)
        k_a, k_d, direction = light_to_physical(light)
        shading, s_diff = shade(normals, k_a.repeat(nb), k_d.repeat(nb), direction.repeat(nb, 1))
        texture = compose_texture(albedo, shading)
        # 3. render in the predicted view; validity = product over branches
        recon, recon_depth, valid = self.renderer.render(texture, depth, self.physical_view(view).repeat(nb, 1))
        valid = valid.unflatten(0, (nb, k)).prod(0)
        # 4. losses: photometric + perceptual per branch, smoothness of depth and diffuse shading
        c = self.cfg
        l1 = masked_l1(recon, image.repeat(nb, 1, 1, 1), valid.repeat(nb, 1, 1, 1), reduction="none")
        l1 = l1.view(nb, k).sum(0)
        perc = sum(self._perc(recon[i * k:(i + 1) * k], image, valid, groups=k) for i in range(nb))
        smooth = (smoothness(depth, reduction="none").view(nb, k).mean(0)
                  + smoothness(s_diff, reduction="none").view(nb, k).mean(0))
        loss = l1 + c.lam_perc * perc + c.lam_smooth * smooth
        terms = _detached(k, l1=l1, perc=perc, smooth=smooth)
        out = Step1Output(loss=loss.reshape(k) if per_image else loss.sum(), losses=self._log(terms, per_image),
                          depth=depth, albedo=albedo, normals=normals, view=view, light=light, k_a=k_a, k_d=k_d,
                          shading=shading, recon=recon, recon_depth=recon_depth, valid=valid, terms=terms)
        if target.gt_depth is not None:
            with torch.no_grad():
                m = depth_metrics(recon_depth[:k].detach(), target.gt_depth, self.renderer.normals,
                                  max_valid_depth=c.max_depth + (c.max_depth - c.min_depth) / 2)
            if self.sync_free:  # 0-d tensors, read by the trainer when it logs
                per = {key: v.reshape(k, -1).mean(1) for key, v in m.items()}
                out.metrics = {key: v.mean() for key, v in per.items()}
                out.image_metrics = [{key: v[i] for key, v in per.items()} for i in range(k)]
            else:
                out.metrics = {key: float(v.mean()) for key, v in m.items()}
                out.image_metrics = [{key: float(v[i].mean()) for key, v in m.items()} for i in range(k)]
        return out

    def canonical_mask(self, target: Target, depth: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Warp the input-view object mask into the canonical frame (METHOD §3.5)."""
        k = target.image.shape[0]
        grid = self.renderer.forward_warp_grid(depth[:k].detach(), self.physical_view(view[:k]).detach())
        return F.grid_sample(target.mask, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    # -- step 2: project pseudo samples into the GAN (METHOD §4.5, §5) ---------------------------
    def pseudo_samples(self, state: CanonicalState, n: int, generator, return_params: bool = False):
        """``n`` pseudo samples and masks per image of ``state`` (and, with ``return_params``, their
        raw views, light dirs, strengths). For K stacked images ``generator`` is a list of K
        generators, image i drawing its views and lights from the i-th; samples are K-major."""
        c = self.cfg
        gens = list(generator) if isinstance(generator, (list, tuple)) else [generator]
        k = state.depth.shape[0]
        if len(gens) != k:
            raise ValueError(f"{k} canonical states need {k} random generators, got {len(gens)}")
        draws = [(sample_views(self.viewlight, n, c.view_scale, g), *sample_lights(n, c.rand_light, g)) for g in gens]
        raw_views, light_dir, light_r = (torch.cat([d[j] for d in draws]) for j in range(3))
        if self.sync_free and self.device.type == "cuda":  # pinned, non-blocking upload (no stream sync)
            raw_views, light_dir, light_r = (t.pin_memory().to(self.device, non_blocking=True)
                                             for t in (raw_views, light_dir, light_r))
        args = (raw_views, light_dir, light_r, c.rand_light[6], c.xyz_rotation_range, c.xy_translation_range,
                c.z_translation_range)
        pseudo, pmask = render_pseudo_samples(self.renderer, state, *args)
        return (pseudo, pmask, raw_views, light_dir, light_r) if return_params else (pseudo, pmask)

    def step2(self, target: Target, state: CanonicalState, generator, per_image: bool = False,
              viewlight: bool = False):
        """Returns (loss, losses, projected samples Q, their masks M_p), with ``viewlight`` also the
        raw views and raw lights (:func:`~.sampling.pseudo_lights`) of the pseudo samples Q was
        projected from (a diagnostic projection hook may light its samples otherwise and says so)."""
        c = self.cfg
        k, n = target.image.shape[0], c.n_p
        pseudo, pmask, raw_views, light_dir, light_r = self.pseudo_samples(state, n, generator, True)
        lights = pseudo_lights(light_dir, light_r, state.k_a.repeat_interleave(n), state.k_d.repeat_interleave(n),
                               c.rand_light[6]) if viewlight else None
        e = self.encode("netEnc", pseudo)
        if c.relative_enc:
            e = (e.unflatten(0, (k, n)) - self.encode("netEnc", target.gan_image).unsqueeze(1)).flatten(0, 1)
        dw = self.mapper(e)
        proj = generate_projected(self.G, target.latent.repeat_interleave(n, 0), dw, c.image_size, c.crop,
                                  target.origin_size)
        l1 = masked_l1(proj, pseudo, pmask, groups=k)
        with torch.no_grad():
            feats_p = self.Dgan.features(pseudo, 4)
        lfeat = discriminator_feature_loss(self.Dgan.features(proj, 4), feats_p, pmask, groups=k)
        reg = latent_regularization(dw) if k == 1 else dw.unflatten(0, (k, n)).pow(2).mean((1, 2))
        loss = l1 + lfeat + c.lam_regular * reg
        if c.projection != "gan":  # diagnostics: step 3 is given other samples (gan2shape.diagnostics)
            if self.projection_hook is None:
                raise ValueError(f"projection {c.projection!r} is a diagnostic: install its hook with "
                                 f"gan2shape.diagnostics.install_projection(model)")
            # a hook returns its samples, or (samples, the raw lights they are lit with)
            proj = self.projection_hook(self, target, pseudo, raw_views, light_dir, light_r)
            if isinstance(proj, tuple):
                proj, hook_lights = proj
                lights = hook_lights if viewlight else None
        terms = _detached(k, l1=l1, dfeat=lfeat, reg=reg)
        out = (loss.reshape(k) if per_image else loss.sum()), self._log(terms, per_image), proj.detach(), pmask
        return (*out, raw_views, lights) if viewlight else out

    # -- step 3: explain the target and the projected samples (METHOD §4.6) ---------------------
    def step3(self, target: Target, proj: torch.Tensor, proj_mask: torch.Tensor, flip: bool = False,
              per_image: bool = False, grad_nets: Sequence[str] = NET_NAMES,
              proj_view: torch.Tensor | None = None, proj_light: torch.Tensor | None = None):
        """Returns (loss, losses, the step-1 output). Gradients reach only ``grad_nets`` (the V/L
        warm-up: netV, netL). ``proj_view``, ``proj_light``: raw views and lights to render the
        projected samples with instead of V(Q), L(Q) (``step3_viewlight = "pseudo"``; V and L then
        learn from the target alone)."""
        c = self.cfg
        k = target.image.shape[0]
        s1 = self.step1(target, flip=flip, grad_nets=grad_nets, per_image=True)
        m = proj.shape[0]  # K·n projected samples, K-major
        n = m // k
        nb = s1.depth.shape[0] // k  # 1 or 2 (flip)
        if (proj_view is None) != (proj_light is None):
            raise ValueError("step 3 takes the projected samples' views and lights together, or neither")
        if proj_view is None:
            with torch.set_grad_enabled(torch.is_grad_enabled() and "netV" in grad_nets):
                view_q = self.predict_view(proj)
            with torch.set_grad_enabled(torch.is_grad_enabled() and "netL" in grad_nets):
                light_q = self.predict_light(proj)
        else:
            view_q, light_q = proj_view, proj_light
        # broadcast the target's canonical quantities: first K·n unflipped, next K·n flipped
        depth = s1.depth.repeat_interleave(n, 0)
        albedo = s1.albedo.repeat_interleave(n, 0)
        normals = s1.normals.repeat_interleave(n, 0)
        k_a, k_d, direction = light_to_physical(light_q.repeat(nb, 1))
        shading, _ = shade(normals, k_a, k_d, direction)
        texture = compose_texture(albedo, shading)
        recon, _, valid = self.renderer.render(texture, depth, self.physical_view(view_q).repeat(nb, 1))
        if nb == 2:
            valid = valid[:m] * valid[m:]
        mask = valid * proj_mask
        l1 = sum(masked_l1(recon[i * m:(i + 1) * m], proj, mask, groups=k) for i in range(nb))
        perc = sum(self._perc(recon[i * m:(i + 1) * m], proj, mask, groups=k) for i in range(nb))
        loss = s1.loss + l1 + c.lam_perc * perc
        terms = {**{f"target_{key}": v for key, v in s1.terms.items()}, **_detached(k, proj_l1=l1, proj_perc=perc)}
        return (loss.reshape(k) if per_image else loss.sum()), self._log(terms, per_image), s1


# --------------------------------------------------------------------------------------------
# Per-image reductions of stacked batches (K images, each with a consecutive chunk of samples)
# --------------------------------------------------------------------------------------------

def _detached(k: int, **terms) -> dict[str, torch.Tensor]:
    """Loss terms as detached K vectors."""
    return {name: v.detach().reshape(-1).expand(k) for name, v in terms.items()}


def _log_terms(terms: dict[str, torch.Tensor], per_image: bool) -> dict:
    """Floats (summed over the K images), or with ``per_image`` lists of K floats; one device sync."""
    if not terms:
        return {}
    table = torch.stack(list(terms.values()))
    values = table.tolist() if per_image else table.sum(1).tolist()
    return dict(zip(terms, values))
