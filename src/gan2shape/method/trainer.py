"""The GAN2Shape training procedure: steps, stage schedule and trainers (METHOD §1, §3.7, §4, §5;
EXTENSIONS §2).

Vocabulary
----------
* **step 1** fits the albedo net A so the render of (depth, albedo, view, light) matches the target;
* **step 2** fits the offset encoder E so that G(w + Δw) reproduces random *pseudo samples*
  (the current canonical shape, relit and seen from random views);
* **step 3** fits D, A, V, L on the target and on *projected samples* (the GAN outputs of step 2);
* a **stage** is step 1, then ``rounds`` × (step 2, collect, step 3); a **schedule** is a list of
  stages (:class:`Stage`), i.e. the iteration tables are data.

Trainers
--------
* :meth:`Trainer.fit` -- instance-specific ("original"): one image, or a group of images that share
  one model with their losses averaged (the original's ``independent + share_weight`` DDP runs);
  weights reset to the initial snapshot / pretrain checkpoint, optimisers re-created at every step;
  checkpoint and exact resume mid-schedule.
* :meth:`Trainer.fit_joint` -- joint pre-training over many images, one image per iteration.
* :meth:`Trainer.fit_generalized` -- the replication's generalized trainer (one model for a set of
  images; epochs of mini-batches), with its batching bugs fixed (see :func:`GeneralizedConfig`).
* Initialisation iterations are a schedule (:func:`init_iterations_schedule`), usable by every trainer.

Every step computes per-image losses and averages them, so K images can later be trained in one
batch without changing the mathematics.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io import CheckpointError, atomic_torch_save, safe_torch_load
from .losses import PerceptualLoss, discriminator_feature_loss, latent_regularization, masked_l1, smoothness
from .metrics import depth_metrics
from .networks import build_networks, clamp_border, depth_head
from .renderer import Renderer, compose_texture, light_to_physical, shade, view_to_physical
from .sampling import (DEFAULT_RAND_LIGHT, CanonicalState, LatentOffsetMapper, ProjectionPool,
                       ViewLightDistribution, generate_projected, postprocess_gan_image,
                       render_pseudo_samples, sample_lights, sample_views)

NET_NAMES = ("netD", "netA", "netV", "netL", "netEnc")
# Which networks each step trains (METHOD §1.1).
STEP_NETS = {1: ("netA",), 2: ("netEnc",), 3: ("netD", "netA", "netV", "netL"), 0: ("netD",)}


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    """One stage: ``n1`` step-1 iterations, then ``rounds`` × (``n2`` step-2, collect, ``n3`` step-3)."""

    n1: int
    n2: int
    n3: int
    flip1: bool = False
    flip3: bool = False
    rounds: int = 1


def original_schedule(num_stage: int, first: Sequence[int], later: Sequence[int],
                      flip1: Sequence[bool] | None = None, flip3: Sequence[bool] | None = None) -> list[Stage]:
    """Stage 0 uses ``first`` = (n1, n2, n3), stages ≥ 1 use ``later``; flags per stage."""
    flip1 = list(flip1 or [False] * num_stage)
    flip3 = list(flip3 or [False] * num_stage)
    if len(flip1) != num_stage or len(flip3) != num_stage:
        raise ValueError(f"flip1/flip3 need {num_stage} entries, got {len(flip1)} and {len(flip3)}")
    return [Stage(*(first if k == 0 else later), flip1=flip1[k], flip3=flip3[k]) for k in range(num_stage)]


# The per-config iteration tables of the original code (METHOD §1.3).
SCHEDULES: dict[str, list[Stage]] = {
    "car": original_schedule(4, (700, 700, 600), (200, 500, 400)),
    "church": original_schedule(4, (700, 700, 600), (200, 500, 400)),
    "celeba": original_schedule(4, (600, 600, 400), (200, 500, 300), flip3=[True, False, False, False]),
    "cat": original_schedule(4, (600, 600, 400), (200, 500, 300), flip3=[True, False, False, False]),
    "synface": original_schedule(1, (500, 500, 200), (500, 500, 200), flip3=[True]),
    "celeba_pretrain": original_schedule(4, (1500, 1500, 1500), (700, 1000, 1000),
                                         flip1=[False, True, True, True], flip3=[True] * 4),
    "cat_pretrain": original_schedule(4, (1500, 1500, 1500), (700, 1000, 1000),
                                      flip1=[False, True, True, True], flip3=[True] * 4),
    "synface_pretrain": original_schedule(8, (1500, 1500, 1500), (700, 1000, 1000),
                                          flip1=[False] + [True] * 7, flip3=[True] * 8),
    # The replication runs the car schedule for every dataset (EXTENSIONS §2.2).
    "replication": original_schedule(4, (700, 700, 600), (200, 500, 400)),
}


def init_iterations_schedule(n_init_stages: int = 10, n_init_rounds: int = 8,
                             first_step1: int = 700, bridge: Sequence[int] = (1, 700, 600),
                             later: Sequence[int] = (200, 500, 400), n_later: int = 3) -> list[Stage]:
    """The replication's single-image schedule with initialisation iterations (EXTENSIONS §2.4,
    paper Table 2): step 1 only, then ``n_init_stages`` stages of (1, 1, 1) × ``n_init_rounds``
    rounds, then (1, 700, 600), then ``n_later`` × (200, 500, 400)."""
    stages = [Stage(first_step1, 0, 0, rounds=0)]
    stages += [Stage(1, 1, 1, rounds=n_init_rounds) for _ in range(n_init_stages)]
    stages += [Stage(*bridge)] + [Stage(*later) for _ in range(n_later)]
    return stages


def schedule_iterations(schedule: Sequence[Stage]) -> int:
    return sum(st.n1 + st.rounds * (st.n2 + st.n3) for st in schedule)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

@dataclass
class MethodConfig:
    """Every constant of the method. Defaults are the original code defaults (METHOD §1.9);
    the dataset presets of :data:`PRESETS` override them."""

    image_size: int = 128
    min_depth: float = 0.9
    max_depth: float = 1.1
    border_depth: float | None = None          # None -> 0.7·max + 0.3·min = 1.04
    fov: float = 10.0
    rot_center_depth: float = 1.0
    xyz_rotation_range: float = 60.0
    xy_translation_range: float = 0.1
    z_translation_range: float = 0.0            # every original config sets 0 (code default 0.1)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    lam_perc: float = 0.5
    lam_smooth: float = 0.01
    lam_regular: float = 0.01
    f1_d: int = 2
    relative_enc: bool = False
    use_mask: bool = True
    add_mean_view: bool = True
    add_mean_light: bool = True
    view_scale: float = 1.0
    rand_light: tuple = DEFAULT_RAND_LIGHT
    batchsize: int = 8                          # N_p: pseudo / projected samples per iteration
    collect_iters: int = 100
    crop: int | None = None
    schedule: list[Stage] = field(default_factory=lambda: list(SCHEDULES["car"]))
    prior_iters: int = 1000                     # depth pre-fit iterations when no pretrained netD
    prior_tol: float | None = None              # stop the pre-fit early once MSE < tol (EXTENSIONS §1.7 REC)
    step3_pool: str = "original"                # "original" pool of collect_iters batches | "last_batch" (replication)
    optimizers: str = "recreate"                # "recreate" at every step switch (original) | "persistent" (replication)
    optimizer: str = "adam"                     # "adam" (original) | "radam": no sign-step jolt after a re-creation
    depth_lr_step3: float | None = None         # our option: lr of D in step 3 (None: lr, as the original)
    projection: str = "gan"                     # "gan" | diagnostics "pseudo" / "oracle" (see GAN2Shape.step2)
                                                # themselves (no GAN information) instead of G(w + Δw)
    seed: int = 0
    # pytorch3d rasteriser binning: 0 = naive (exact, the spec's recipe); on CUDA coarse-to-fine
    # binning (e.g. 16 with 2000 faces per bin) gives the same depth ~10× faster
    raster_bin_size: int | None = 0
    raster_max_faces_per_bin: int | None = None

    def __post_init__(self):
        if self.border_depth is None:
            self.border_depth = 0.7 * self.max_depth + 0.3 * self.min_depth
        if self.step3_pool not in ("original", "last_batch"):
            raise ValueError(f"step3_pool must be 'original' or 'last_batch', got {self.step3_pool!r}")
        if self.projection not in ("gan", "pseudo", "oracle"):
            raise ValueError(f"projection must be 'gan', 'pseudo' or 'oracle', got {self.projection!r}")
        if self.optimizers not in ("recreate", "persistent"):
            raise ValueError(f"optimizers must be 'recreate' or 'persistent', got {self.optimizers!r}")
        if self.optimizer not in ("adam", "radam"):
            raise ValueError(f"optimizer must be 'adam' or 'radam', got {self.optimizer!r}")
        if self.depth_lr_step3 is not None and not self.depth_lr_step3 >= 0:
            raise ValueError(f"depth_lr_step3 must be >= 0, got {self.depth_lr_step3!r}")
        self.schedule = [s if isinstance(s, Stage) else Stage(**s) for s in self.schedule]
        self.rand_light = tuple(self.rand_light)
        self.betas = tuple(self.betas)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["schedule"] = [asdict(s) for s in self.schedule]
        return d


SYNFACE_RAND_LIGHT = (-0.9, 0.9, -0.3, 0.8, -0.1, 0.7, -0.4)

# Per-dataset values of the original configs (METHOD §1.9); everything else = MethodConfig defaults.
PRESETS: dict[str, dict] = {
    "car": dict(image_size=128, batchsize=8, use_mask=True, relative_enc=False, schedule=SCHEDULES["car"]),
    "church": dict(image_size=128, batchsize=8, use_mask=True, relative_enc=False, schedule=SCHEDULES["church"]),
    "celeba": dict(image_size=128, batchsize=16, use_mask=False, relative_enc=True, view_scale=1.2,
                   schedule=SCHEDULES["celeba"]),
    "cat": dict(image_size=128, batchsize=16, use_mask=False, relative_enc=True, view_scale=1.2, crop=170,
                schedule=SCHEDULES["cat"]),
    "synface": dict(image_size=64, batchsize=16, use_mask=False, relative_enc=True, view_scale=1.2, crop=170,
                    f1_d=8, rand_light=SYNFACE_RAND_LIGHT, schedule=SCHEDULES["synface"]),
    "celeba_pretrain": dict(image_size=128, batchsize=8, use_mask=False, relative_enc=True, view_scale=1.2,
                            collect_iters=800, schedule=SCHEDULES["celeba_pretrain"]),
    "cat_pretrain": dict(image_size=128, batchsize=8, use_mask=False, relative_enc=True, view_scale=1.2,
                         crop=170, collect_iters=800, schedule=SCHEDULES["cat_pretrain"]),
    "synface_pretrain": dict(image_size=64, batchsize=12, use_mask=False, relative_enc=True, view_scale=1.2,
                             crop=170, f1_d=8, rand_light=SYNFACE_RAND_LIGHT, collect_iters=1000,
                             schedule=SCHEDULES["synface_pretrain"]),
    # The replication's settings (EXTENSIONS §2.1, §3.3): λ_perc 1, z range 0.1, persistent
    # optimisers, last-batch step-3 samples, no flips, generic MVNs, car schedule.
    "replication": dict(image_size=128, batchsize=16, lam_perc=1.0, z_translation_range=0.1, use_mask=False,
                        relative_enc=False, step3_pool="last_batch", optimizers="persistent",
                        schedule=SCHEDULES["replication"]),
}


def preset(name: str, **overrides) -> MethodConfig:
    """The :class:`MethodConfig` of a dataset preset, with overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return MethodConfig(**{**PRESETS[name], **overrides})


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------

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
    scene: Any = None                        # synthetic SceneParams (ground truth; only for projection "oracle")

    def to(self, device) -> "Target":
        def mv(t):
            return None if t is None else t.to(device)
        return replace(self, image=mv(self.image), latent=mv(self.latent), mask=mv(self.mask),
                       prior=mv(self.prior), gt_depth=mv(self.gt_depth), gan_image=mv(self.gan_image))


@dataclass
class TargetState:
    """Per-image training state that persists across steps (and is checkpointed)."""

    canonical: CanonicalState | None = None   # from the most recent step-1 phase forward
    canon_mask: torch.Tensor | None = None    # object mask warped into the canonical frame
    pool: ProjectionPool = None
    last_metrics: dict | None = None          # metrics of the most recent step-1 forward

    def state_dict(self) -> dict:
        c = self.canonical
        return {"canonical": None if c is None else {k: getattr(c, k) for k in
                                                     ("depth", "albedo", "normals", "k_a", "k_d", "canon_mask")},
                "canon_mask": self.canon_mask, "pool": self.pool.state_dict(), "last_metrics": self.last_metrics}

    def load_state_dict(self, d: dict) -> None:
        self.canonical = None if d["canonical"] is None else CanonicalState(**d["canonical"])
        self.canon_mask = d["canon_mask"]
        self.pool.load_state_dict(d["pool"])
        self.last_metrics = d["last_metrics"]


# --------------------------------------------------------------------------------------------
# The model: networks + frozen components + the three step forwards
# --------------------------------------------------------------------------------------------

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
        self.nets = build_networks(cfg.image_size, latent_dim=generator.style_dim)
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
                    raise CheckpointError(f"{source}: {k} does not fit a {self.cfg.image_size}-px network: "
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
        return self.nets["netV"](image) + self.view_mean

    def predict_light(self, image: torch.Tensor) -> torch.Tensor:
        return self.nets["netL"](image) + self.light_mean

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
        out = Step1Output(loss=loss.reshape(k) if per_image else loss.sum(), losses=_log_terms(terms, per_image),
                          depth=depth, albedo=albedo, normals=normals, view=view, light=light, k_a=k_a, k_d=k_d,
                          shading=shading, recon=recon, recon_depth=recon_depth, valid=valid, terms=terms)
        if target.gt_depth is not None:
            with torch.no_grad():
                m = depth_metrics(recon_depth[:k].detach(), target.gt_depth, self.renderer.normals,
                                  max_valid_depth=c.max_depth + (c.max_depth - c.min_depth) / 2)
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
        args = (raw_views, light_dir, light_r, c.rand_light[6], c.xyz_rotation_range, c.xy_translation_range,
                c.z_translation_range)
        pseudo, pmask = render_pseudo_samples(self.renderer, state, *args)
        return (pseudo, pmask, raw_views, light_dir, light_r) if return_params else (pseudo, pmask)

    @torch.no_grad()
    def oracle_samples(self, target: Target, raw_views: torch.Tensor, light_dir: torch.Tensor,
                       light_r: torch.Tensor) -> torch.Tensor:
        """Diagnostic "perfect GAN": what a pseudo sample would show if the canonical depth and albedo
        were exact. The canonical frame of the method is the input view (the priors are built there),
        so the ground-truth object is rendered as placed in the input image, then re-viewed by each
        pseudo view with the method's warp; the pseudo light is attached to that frame, its strength
        added to the object's own k_a, k_d (METHOD §5.1)."""
        from ..world.render import render_batch
        c = self.cfg
        if target.scene is None:
            raise ValueError(f"{target.name}: projection 'oracle' needs the synthetic scene parameters")
        views = view_to_physical(raw_views, c.xyz_rotation_range, c.xy_translation_range, c.z_translation_range)
        s, alpha = target.scene, c.rand_light[6]
        scenes = [replace(s, k_a=s.k_a + alpha * float(r), k_d=s.k_d + float(r), lx=float(d[0] / d[2]),
                          ly=float(d[1] / d[2]))
                  for d, r in zip(light_dir.tolist(), light_r.tolist())]
        return render_batch(scenes, size=c.image_size, device=self.device, warp=views)["image"]

    def step2(self, target: Target, state: CanonicalState, generator, per_image: bool = False):
        """Returns (loss, losses, projected samples Q, their masks M_p)."""
        c = self.cfg
        k, n = target.image.shape[0], c.batchsize
        pseudo, pmask, raw_views, light_dir, light_r = self.pseudo_samples(state, n, generator, True)
        e = self.nets["netEnc"](pseudo)
        if c.relative_enc:
            e = (e.unflatten(0, (k, n)) - self.nets["netEnc"](target.gan_image).unsqueeze(1)).flatten(0, 1)
        dw = self.mapper(e)
        proj = generate_projected(self.G, target.latent.repeat_interleave(n, 0), dw, c.image_size, c.crop,
                                  target.origin_size)
        l1 = masked_l1(proj, pseudo, pmask, groups=k)
        with torch.no_grad():
            feats_p = self.Dgan.features(pseudo, 4)
        lfeat = discriminator_feature_loss(self.Dgan.features(proj, 4), feats_p, pmask, groups=k)
        reg = latent_regularization(dw) if k == 1 else dw.unflatten(0, (k, n)).pow(2).mean((1, 2))
        loss = l1 + lfeat + c.lam_regular * reg
        if c.projection == "pseudo":  # diagnostic: step 3 is given the pseudo samples themselves
            proj = pseudo
        elif c.projection == "oracle":  # diagnostic: a perfect GAN of the ground-truth object
            scenes = target.scene if k > 1 else [target.scene]
            proj = torch.cat([self.oracle_samples(replace(target, scene=s), raw_views[i * n:(i + 1) * n],
                                                  light_dir[i * n:(i + 1) * n], light_r[i * n:(i + 1) * n])
                              for i, s in enumerate(scenes)])
        terms = _detached(k, l1=l1, dfeat=lfeat, reg=reg)
        return (loss.reshape(k) if per_image else loss.sum()), _log_terms(terms, per_image), proj.detach(), pmask

    # -- step 3: explain the target and the projected samples (METHOD §4.6) ---------------------
    def step3(self, target: Target, proj: torch.Tensor, proj_mask: torch.Tensor, flip: bool = False,
              per_image: bool = False):
        c = self.cfg
        k = target.image.shape[0]
        s1 = self.step1(target, flip=flip, per_image=True)
        m = proj.shape[0]  # K·n projected samples, K-major
        n = m // k
        nb = s1.depth.shape[0] // k  # 1 or 2 (flip)
        view_q = self.predict_view(proj)
        light_q = self.predict_light(proj)
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
        return (loss.reshape(k) if per_image else loss.sum()), _log_terms(terms, per_image), s1


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


# --------------------------------------------------------------------------------------------
# Depth pre-fit
# --------------------------------------------------------------------------------------------

def _f(x) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def make_optimizer(params, cfg: MethodConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """Adam with classic L2 weight decay (not AdamW), as every optimiser of the method.

    ``cfg.optimizer = "radam"`` (our option, not the original's) uses rectified Adam with the same
    lr, betas and decay. Why: the method re-creates its optimisers at every step switch, and a fresh
    Adam's first update is lr·sign(g) for every weight. At a converged depth net these signs are
    coherent, so that one update moves the whole depth map: from a depth pre-fitted to the ground
    truth, one step-3 update takes SIDE from 0.28 to 2.5 ×10⁻² (one step on the pre-fit loss itself:
    to 5.1), erasing the prior before the projected samples can act. RAdam takes plain momentum
    steps, proportional to the gradient, until its second-moment estimate is reliable.
    """
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "radam":
        return torch.optim.RAdam(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def fit_depth_to_prior(model: GAN2Shape, images: torch.Tensor, priors: torch.Tensor, iters: int,
                       tol: float | None = None, batch_size: int | None = None,
                       optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Pre-fit D so that the (un-clamped) depth of each image matches its prior (METHOD §2.6).

    MSE over all pixels, a fresh Adam on D only. ``images`` N×3×S×S and ``priors`` N×S×S; with
    ``batch_size`` an iteration is an epoch over mini-batches in fixed order (generalized trainer).
    Stops early when ``tol`` is given and the epoch's MSE drops below it. Returns the final MSE and
    the number of iterations run.
    """
    net = model.nets["netD"]
    opt = optimizer or make_optimizer(net.parameters(), model.cfg)
    n = images.shape[0]
    bs = batch_size or n
    mse = float("nan")
    it = 0
    for it in range(1, iters + 1):
        total = 0.0
        for s in range(0, n, bs):
            depth = model.predict_depth(images[s:s + bs], border=False)
            loss = F.mse_loss(depth, priors[s:s + bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += _f(loss) * min(bs, n - s)
        mse = total / n
        if not math.isfinite(mse):
            raise FloatingPointError(f"depth pre-fit diverged (MSE {mse}) at iteration {it}")
        if tol is not None and mse < tol:
            break
    return {"prior_mse": mse, "prior_iters": it}


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Phase:
    """A run of ``n`` iterations of one step (0 = depth pre-fit)."""

    stage: int
    round: int
    step: int
    n: int
    flip: bool = False


def phases_of(schedule: Sequence[Stage], prior_iters: int = 0) -> list[Phase]:
    """Flatten a schedule into phases (the pre-fit first, when it runs)."""
    out = [Phase(-1, 0, 0, prior_iters)] if prior_iters > 0 else []
    for k, st in enumerate(schedule):
        if st.n1 > 0:
            out.append(Phase(k, 0, 1, st.n1, st.flip1))
        for r in range(st.rounds):
            if st.n2 > 0:
                out.append(Phase(k, r, 2, st.n2))
            if st.n3 > 0:
                out.append(Phase(k, r, 3, st.n3, st.flip3))
    return out


@dataclass
class FitResult:
    """What a fit leaves: per-image final predictions, metrics and the loss log."""

    names: list[str]
    depth: torch.Tensor           # N×S×S canonical depth
    recon_depth: torch.Tensor     # N×S×S depth in the input view
    albedo: torch.Tensor          # N×3×S×S
    normals: torch.Tensor         # N×S×S×3 canonical normals
    recon: torch.Tensor           # N×3×S×S reconstruction of the input
    view: torch.Tensor            # N×6 raw (network units, with mean)
    light: torch.Tensor           # N×4 raw
    metrics: list[dict]           # per image: protocol metrics (last step-3 forward) and final ones
    log: list[dict]
    seconds: float
    iterations: int
    interrupted: bool = False


class Trainer:
    """Runs a schedule on one image or a group of images sharing one model."""

    def __init__(self, model: GAN2Shape, log_every: int = 50, progress: bool = False,
                 on_log: Callable[[dict], None] | None = None):
        self.model = model
        self.cfg = model.cfg
        self.log_every = log_every
        self.progress = progress
        self.on_log = on_log
        self.initial_state = model.nets_state()   # the reset snapshot (random init or pretrain)
        self.pretrained_depth = False

    # -- initial weights --------------------------------------------------------------------------
    def load_pretrain(self, path: str | Path) -> list[str]:
        """Load an official-format pretrain file (keys netD/netA/netV/netL/netEnc, subset allowed)
        and make it the reset snapshot; a present netD skips the ellipsoid pre-fit."""
        state = safe_torch_load(path)
        if not isinstance(state, dict) or not any(k in state for k in NET_NAMES):
            raise CheckpointError(f"{path}: expected a dict with some of {NET_NAMES}, got "
                                  f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
        loaded = self.model.load_nets_state(state, source=str(path))
        self.initial_state = self.model.nets_state()
        self.pretrained_depth = "netD" in loaded
        return loaded

    def reset(self) -> None:
        self.model.load_nets_state(self.initial_state)

    # -- optimisers -------------------------------------------------------------------------------
    def _optimizers(self, step: int, persistent: dict | None, model: nn.Module | None = None
                    ) -> dict[str, torch.optim.Optimizer]:
        """The step's optimisers over ``model``'s nets (default: the trainer's model): one per net,
        re-created, or one persistent optimiser per step (replication)."""
        nets, c = (model or self.model).nets, self.cfg

        def lr(k: str) -> float:  # the option of a slower depth net in step 3 (None: every net at lr)
            return c.depth_lr_step3 if step == 3 and k == "netD" and c.depth_lr_step3 is not None else c.lr

        if persistent is not None:
            if step not in persistent:
                groups = [{"params": list(nets[k].parameters()), "lr": lr(k)} for k in STEP_NETS[step]]
                persistent[step] = make_optimizer(groups, c)
            return {"all": persistent[step]}
        return {k: make_optimizer(nets[k].parameters(), c, lr(k)) for k in STEP_NETS[step]}

    # -- one iteration of a phase on a group of targets -------------------------------------------
    def _iteration(self, phase: Phase, targets: list[Target], states: list[TargetState],
                   opts: dict, gen: torch.Generator, random_pool: bool = False) -> dict:
        m, c = self.model, self.cfg
        k = len(targets)
        total = 0.0
        logs: dict = {}
        for target, st in zip(targets, states):
            if phase.step == 0:
                depth = m.predict_depth(target.image, border=False)
                loss = F.mse_loss(depth, target.prior)
                terms = {"prior_mse": _f(loss)}
            elif phase.step == 1:
                out = m.step1(target, flip=phase.flip, grad_nets=STEP_NETS[1])
                loss, terms = out.loss, dict(out.losses)
                # the canonical quantities of the most recent step-1 forward feed step 2
                # canonical object mask: computed at the image's first step-1 iteration, then kept
                # (it is refreshed by every step-3 iteration, METHOD §3.5)
                if c.use_mask and target.mask is not None and st.canon_mask is None:
                    st.canon_mask = m.canonical_mask(target, out.depth, out.view).detach()
                st.canonical = CanonicalState(out.depth[:1], out.albedo[:1], out.normals[:1], out.k_a[:1],
                                              out.k_d[:1]).detach()
                st.last_metrics = out.metrics
            elif phase.step == 2:
                state = replace(st.canonical, canon_mask=st.canon_mask if c.use_mask else None)
                loss, terms, proj, pmask = m.step2(target, state, gen)
                if c.step3_pool == "last_batch":
                    st.pool.start()
                    st.pool.add(proj, pmask)
                    st.pool.finish()
            else:
                if c.step3_pool == "last_batch":
                    proj, pmask = st.pool.images, st.pool.masks
                elif random_pool:
                    proj, pmask = st.pool.random_batch(c.batchsize, gen)
                else:
                    proj, pmask = st.pool.next_batch(c.batchsize, gen)
                loss, terms, s1 = m.step3(target, proj, pmask, flip=phase.flip)
                if c.use_mask and target.mask is not None:
                    st.canon_mask = m.canonical_mask(target, s1.depth, s1.view).detach()
                st.last_metrics = s1.metrics
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{target.name}: loss is {float(loss)} in stage {phase.stage} "
                                         f"step {phase.step}")
            total = total + loss / k
            for kk, v in terms.items():
                logs[kk] = logs.get(kk, 0.0) + v / k
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        total.backward()
        for o in opts.values():
            o.step()
        logs["loss"] = _f(total)
        # ground-truth accuracy of this forward (evaluation targets only): drift shows in the log
        if phase.step in (1, 3) and all(st.last_metrics for st in states):
            for key in ("side", "mad"):
                logs[key] = sum(st.last_metrics[key] for st in states) / k
        return logs

    @torch.no_grad()
    def _collect(self, targets: list[Target], states: list[TargetState], gen: torch.Generator) -> None:
        """After step 2: ``collect_iters`` no-grad step-2 forwards fill each image's pool (METHOD §5.6)."""
        if self.cfg.step3_pool == "last_batch":
            return
        m, c = self.model, self.cfg
        for target, st in zip(targets, states):
            st.pool.start()
            state = replace(st.canonical, canon_mask=st.canon_mask if c.use_mask else None)
            for _ in range(c.collect_iters):
                _, _, proj, pmask = m.step2(target, state, gen)
                st.pool.add(proj, pmask)
            st.pool.finish()

    # -- checkpoints ------------------------------------------------------------------------------
    def _save(self, path: Path, cursor: tuple[int, int], opts: dict, persistent: dict | None,
              states: list[TargetState], gen: torch.Generator, log: list, names: list[str], elapsed: float,
              global_it: int) -> None:
        atomic_torch_save({
            **self.model.nets_state(),
            "cursor": list(cursor), "iteration": global_it, "names": names,
            "optimizers": {k: o.state_dict() for k, o in opts.items()},
            "persistent": None if persistent is None else {k: o.state_dict() for k, o in persistent.items()},
            "targets": [s.state_dict() for s in states],
            "rng": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "log": log, "elapsed": elapsed, "config": self.cfg.to_dict(),
        }, path)

    # -- instance-specific training ---------------------------------------------------------------
    def fit(self, targets: Target | Sequence[Target], checkpoint: str | Path | None = None,
            checkpoint_every: int = 500, stop_after: int | None = None, reset: bool = True) -> FitResult:
        """Train one image (or a group sharing one model, losses averaged) through the schedule.

        ``checkpoint``: file to write every ``checkpoint_every`` iterations and at the end; if it
        exists and belongs to the same images, training resumes from it exactly. ``stop_after``:
        stop after this many iterations of this call (as if interrupted) and write the checkpoint.
        """
        targets = [targets] if isinstance(targets, Target) else list(targets)
        m, c = self.model, self.cfg
        dev = m.device
        targets = [t.to(dev) for t in targets]
        names = [t.name for t in targets]
        gen = torch.Generator().manual_seed(c.seed)
        states = [TargetState(pool=ProjectionPool(dev)) for _ in targets]
        persistent = {} if c.optimizers == "persistent" else None
        if reset:
            self.reset()
        for t in targets:
            t.gan_image = m.gan_image(t)
        need_prior = not self.pretrained_depth and c.prior_iters > 0
        if need_prior:
            for t in targets:
                if t.prior is None:
                    raise ValueError(f"{t.name}: no pretrained depth net and no prior to pre-fit it to")
        phases = phases_of(c.schedule, c.prior_iters if need_prior else 0)
        cursor, log, elapsed, global_it, opt_state = (0, 0), [], 0.0, 0, None
        ckpt = Path(checkpoint) if checkpoint is not None else None
        if ckpt is not None and ckpt.exists():
            saved = safe_torch_load(ckpt)
            if saved.get("names") != names:
                raise CheckpointError(f"{ckpt}: checkpoint belongs to {saved.get('names')}, not {names}")
            m.load_nets_state(saved, source=str(ckpt))
            cursor, global_it, log, elapsed = tuple(saved["cursor"]), saved["iteration"], saved["log"], saved["elapsed"]
            opt_state = saved["optimizers"]
            for st, d in zip(states, saved["targets"]):
                st.load_state_dict(d)
            gen.set_state(saved["rng"])
            torch.set_rng_state(saved["torch_rng"])
            if persistent is not None and saved["persistent"]:
                for step, sd in saved["persistent"].items():
                    self._optimizers(step, persistent)["all"].load_state_dict(sd)
        t0 = time.perf_counter()
        done_this_call = 0
        interrupted = False
        pbar = None
        if self.progress:
            from tqdm import tqdm
            pbar = tqdm(total=sum(p.n for p in phases), initial=global_it, desc=",".join(names), unit="it")
        for pi in range(cursor[0], len(phases)):
            phase = phases[pi]
            opts = self._optimizers(phase.step, persistent)
            start = cursor[1] if pi == cursor[0] else 0
            if start > 0 and opt_state is not None and persistent is None:
                for k, o in opts.items():
                    o.load_state_dict(opt_state[k])
            for it in range(start, phase.n):
                logs = self._iteration(phase, targets, states, opts, gen)
                global_it += 1
                done_this_call += 1
                if pbar is not None:
                    pbar.update(1)
                if global_it % self.log_every == 0 or it == phase.n - 1:
                    entry = {"iteration": global_it, "stage": phase.stage, "step": phase.step, **logs}
                    log.append(entry)
                    if self.on_log:
                        self.on_log(entry)
                last = it == phase.n - 1
                stop = stop_after is not None and done_this_call >= stop_after
                if ckpt is not None and not last and (global_it % checkpoint_every == 0 or stop):
                    self._save(ckpt, (pi, it + 1), opts, persistent, states, gen, log,
                               names, elapsed + time.perf_counter() - t0, global_it)
                if stop and not last:
                    interrupted = True
                    break
            if interrupted:
                break
            # transitions at the end of a phase (METHOD §1.3)
            if phase.step == 2:
                self._collect(targets, states, gen)
            stop = stop_after is not None and done_this_call >= stop_after
            if ckpt is not None and (stop or pi == len(phases) - 1):
                self._save(ckpt, (pi + 1, 0), {}, persistent, states, gen, log, names,
                           elapsed + time.perf_counter() - t0, global_it)
            if stop and pi < len(phases) - 1:
                interrupted = True
                break
        if pbar is not None:
            pbar.close()
        seconds = elapsed + time.perf_counter() - t0
        return self._result(targets, states, log, seconds, global_it, interrupted)

    # -- final predictions ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, targets: Sequence[Target]) -> dict:
        m = self.model
        outs = [m.step1(t.to(m.device), flip=False) for t in targets]
        return {
            "depth": torch.cat([o.depth for o in outs]), "recon_depth": torch.cat([o.recon_depth for o in outs]),
            "albedo": torch.cat([o.albedo for o in outs]), "normals": torch.cat([o.normals for o in outs]),
            "recon": torch.cat([o.recon for o in outs]), "view": torch.cat([o.view for o in outs]),
            "light": torch.cat([o.light for o in outs]), "metrics": [o.metrics for o in outs],
        }

    def _result(self, targets, states, log, seconds, iterations, interrupted) -> FitResult:
        p = self.predict(targets)
        metrics = []
        for st, final in zip(states, p["metrics"]):
            d = {}
            if st.last_metrics:
                d.update({f"{k}": v for k, v in st.last_metrics.items()})
            if final:
                d.update({f"final_{k}": v for k, v in final.items()})
            metrics.append(d)
        return FitResult(names=[t.name for t in targets], depth=p["depth"].cpu(), recon_depth=p["recon_depth"].cpu(),
                         albedo=p["albedo"].cpu(), normals=p["normals"].cpu(), recon=p["recon"].cpu(),
                         view=p["view"].cpu(), light=p["light"].cpu(), metrics=metrics, log=log, seconds=seconds,
                         iterations=iterations, interrupted=interrupted)

    # -- joint pre-training (METHOD §1.5) -----------------------------------------------------------
    def fit_joint(self, targets: Sequence[Target], checkpoint: str | Path | None = None) -> FitResult:
        """One model over many images, one image per iteration (a random permutation, re-shuffled
        after each pass). The depth pre-fit uses the first image only; after each step 1 every
        image's canonical state is collected; each image keeps its own projection pool and step 3
        draws random subsets of it. Writes an official-format pretrain file (netD, netA, ...).

        Deviation (recommended by the spec): the ambient/diffuse terms of each image's pseudo
        samples are that image's own, not those of the last image of the collect pass.
        """
        m, c = self.model, self.cfg
        dev = m.device
        targets = [t.to(dev) for t in targets]
        for t in targets:
            t.gan_image = m.gan_image(t)
        gen = torch.Generator().manual_seed(c.seed)
        states = [TargetState(pool=ProjectionPool(dev)) for _ in targets]
        persistent = {} if c.optimizers == "persistent" else None
        order: list[int] = []

        def next_index() -> int:
            if not order:
                order.extend(torch.randperm(len(targets), generator=gen).tolist())
            return order.pop(0)

        log, global_it, t0 = [], 0, time.perf_counter()
        if not self.pretrained_depth and c.prior_iters > 0:
            if targets[0].prior is None:
                raise ValueError(f"{targets[0].name}: no pretrained depth net and no prior to pre-fit it to")
            r = fit_depth_to_prior(m, targets[0].image, targets[0].prior, c.prior_iters, c.prior_tol)
            log.append({"iteration": 0, "step": 0, **r})
        cur = next_index()
        for phase in phases_of(c.schedule):
            opts = self._optimizers(phase.step, persistent)
            for it in range(phase.n):
                if phase.step == 1:
                    states[cur].canon_mask = None  # joint mode recomputes the canonical mask every iteration
                logs = self._iteration(phase, [targets[cur]], [states[cur]], opts, gen, random_pool=True)
                global_it += 1
                if global_it % self.log_every == 0 or it == phase.n - 1:
                    entry = {"iteration": global_it, "stage": phase.stage, "step": phase.step,
                             "image": targets[cur].name, **logs}
                    log.append(entry)
                    if self.on_log:
                        self.on_log(entry)
                cur = next_index()
            if phase.step == 1:
                # step-1 collect: every image's canonical state, in list order, without gradient
                with torch.no_grad():
                    for t, st in zip(targets, states):
                        out = m.step1(t, flip=False)
                        if c.use_mask and t.mask is not None:
                            st.canon_mask = m.canonical_mask(t, out.depth, out.view)
                        st.canonical = CanonicalState(out.depth[:1], out.albedo[:1], out.normals[:1],
                                                      out.k_a[:1], out.k_d[:1]).detach()
            elif phase.step == 2 and c.step3_pool == "original":
                # step-2 collect: each forward on the current image, then the next image
                with torch.no_grad():
                    for st in states:
                        st.pool.start()
                    for _ in range(c.collect_iters):
                        st = states[cur]
                        state = replace(st.canonical, canon_mask=st.canon_mask if c.use_mask else None)
                        _, _, proj, pmask = m.step2(targets[cur], state, gen)
                        st.pool.add(proj, pmask)
                        cur = next_index()
                    for t, st in zip(targets, states):
                        if st.pool.collected:
                            st.pool.finish()
                        elif len(st.pool) == 0:  # an image missed by this pass keeps its previous pool
                            raise RuntimeError(f"{t.name}: no projected samples collected; raise collect_iters "
                                               f"(at least twice the number of images, {len(targets)})")
        if checkpoint is not None:
            atomic_torch_save({**m.nets_state(), "iteration": global_it, "config": c.to_dict(),
                               "names": [t.name for t in targets]}, checkpoint)
        return self._result(targets, states, log, time.perf_counter() - t0, global_it, False)

    # -- generalized training (EXTENSIONS §2.3, §2.4) ---------------------------------------------
    def fit_generalized(self, targets: Sequence[Target], gcfg: "GeneralizedConfig",
                        checkpoint_dir: str | Path | None = None) -> FitResult:
        """One model M* for a set of images: depth pre-fit on all priors, then epochs over
        mini-batches: ``n1`` step-1 iterations on the whole batch, then per image ``rounds`` ×
        (``n2`` step-2, ``n3`` step-3). Initialisation epochs (``init_epochs`` × ``init_stage`` ×
        ``init_rounds``) come first when asked for.

        The replication's batching bugs are fixed (EXTENSIONS §2.3): (1) step-1 losses are
        per image and averaged (the replication compared every render with image 0); (2) depth
        is centred per image, also in the pre-fit; (3) the final epoch is always checkpointed;
        (4) checkpoints are named ``epoch_XXXX.pth`` so the latest is the last in sorted order.
        With ``checkpoint_dir`` an interrupted run resumes from its latest epoch checkpoint.
        """
        m, c = self.model, self.cfg
        dev = m.device
        targets = [t.to(dev) for t in targets]
        names = [t.name for t in targets]
        for t in targets:
            t.gan_image = m.gan_image(t)
        gen = torch.Generator().manual_seed(c.seed)
        states = [TargetState(pool=ProjectionPool(dev)) for _ in targets]
        persistent = {} if c.optimizers == "persistent" else None
        epochs = [(gcfg.init_stage, gcfg.init_rounds)] * gcfg.init_epochs + [(gcfg.stage, 1)] * gcfg.epochs
        log, global_it, start, elapsed, t0 = [], 0, 0, 0.0, time.perf_counter()
        ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        existing = sorted(ckdir.glob("epoch_*.pth")) if ckdir is not None and ckdir.exists() else []
        if existing:
            saved = safe_torch_load(existing[-1])
            if saved.get("names") != names:
                raise CheckpointError(f"{existing[-1]}: checkpoint belongs to other images")
            m.load_nets_state(saved, source=str(existing[-1]))
            start, global_it, log, elapsed = saved["epoch"], saved["iteration"], saved["log"], saved["elapsed"]
            gen.set_state(saved["rng"])
            torch.set_rng_state(saved["torch_rng"])
            if persistent is not None:
                for step, sd in saved["persistent"].items():
                    self._optimizers(step, persistent)["all"].load_state_dict(sd)
        elif not self.pretrained_depth and gcfg.prior_epochs > 0:
            if any(t.prior is None for t in targets):
                raise ValueError("generalized training needs a prior for every image (or a pretrained depth net)")
            images = torch.cat([t.image for t in targets])
            priors = torch.cat([t.prior for t in targets])
            r = fit_depth_to_prior(m, images, priors, gcfg.prior_epochs, c.prior_tol, batch_size=gcfg.batch_size)
            log.append({"iteration": 0, "step": 0, **r})

        def run(phase: Phase, group: list[int]) -> None:
            nonlocal global_it
            opts = self._optimizers(phase.step, persistent)
            for it in range(phase.n):
                logs = self._iteration(phase, [targets[i] for i in group], [states[i] for i in group], opts, gen)
                global_it += 1
                if global_it % self.log_every == 0:
                    entry = {"iteration": global_it, "epoch": phase.stage, "step": phase.step, **logs}
                    log.append(entry)
                    if self.on_log:
                        self.on_log(entry)

        for e in range(start, len(epochs)):
            (n1, n2, n3), rounds = epochs[e]
            for b in range(0, len(targets), gcfg.batch_size):
                batch = list(range(b, min(b + gcfg.batch_size, len(targets))))
                run(Phase(e, 0, 1, n1), batch)
                for i in batch:
                    for r in range(rounds):
                        run(Phase(e, r, 2, n2), [i])
                        self._collect([targets[i]], [states[i]], gen)
                        run(Phase(e, r, 3, n3), [i])
            if ckdir is not None and ((e + 1) % gcfg.save_every == 0 or e == len(epochs) - 1):
                atomic_torch_save({
                    **m.nets_state(), "epoch": e + 1, "iteration": global_it, "names": names,
                    "persistent": None if persistent is None else {k: o.state_dict() for k, o in persistent.items()},
                    "rng": gen.get_state(), "torch_rng": torch.get_rng_state(), "log": log,
                    "elapsed": elapsed + time.perf_counter() - t0, "config": c.to_dict(), "generalized": asdict(gcfg),
                }, ckdir / f"epoch_{e + 1:04d}.pth")
        return self._result(targets, states, log, elapsed + time.perf_counter() - t0, global_it, False)


@dataclass
class GeneralizedConfig:
    """The generalized trainer's schedule (EXTENSIONS §2.3–2.4, paper Tables 3–5)."""

    epochs: int = 60
    batch_size: int = 10
    stage: tuple = (13, 22, 18)
    init_epochs: int = 0          # Table 4: 10
    init_stage: tuple = (13, 1, 1)
    init_rounds: int = 8
    prior_epochs: int = 1000
    save_every: int = 20
