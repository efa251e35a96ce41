"""GAN inversion: find the StyleGAN2 latent of a new image (METHOD §6.4).

GAN2Shape needs, for every input image, a latent ``w`` with ``G(w) ≈ image``; it re-generates
``G(w)`` with the generator's *stored* noise buffers, so the projector here optimises only the
latent (never the noise) and always generates with ``randomize_noise=False``. The authors inverted
their synface images into **W** (one 512-vector per image; W+ over-fits the pseudo samples, issue
#29) with a projector run for 1001 steps at lr 0.1 with latent noise 0.05 and a VGG perceptual
loss. This module is a batched re-implementation of that kind of projector:

* every image of a batch has its own latent; the loss is a sum of per-image terms and Adam is
  elementwise, so an image's result does not depend on the other images of its batch;
* learning rate: linear warm-up over the first ``lr_rampup`` fraction of the steps, cosine
  ramp-down over the last ``lr_rampdown`` fraction;
* latent noise: Gaussian noise of std ``latent_noise · r · max(0, 1 − t/noise_ramp)²`` (r = RMS
  distance of mapped samples to their mean, t = step/steps) is added to the latent in the forward
  pass early on, to escape poor local minima; each image draws it from its own seeded CPU
  generator, so it is the same whatever the batch and the device.

API: :class:`InversionConfig`, :func:`invert` -> :class:`InversionResult`, :func:`psnr`,
:func:`add_cli` (``gan2shape invert``).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..method.losses import masked_l1
from ..utils import resize

log = logging.getLogger("gan2shape")

__all__ = ["InversionConfig", "InversionResult", "invert", "psnr", "latent_statistics", "lr_schedule",
           "noise_schedule", "add_cli"]

PSNR_CAP_DB = 100.0  # psnr of identical images (the MSE is floored at 10^-10)


@dataclass
class InversionConfig:
    """Settings of :func:`invert`.

    Regularisers (both computed on the noise-free latent, in units of the per-dimension std
    ``σ`` of the mapping distribution):

    * ``lam_w_reg`` · mean_d((w_d − μ_d)/σ_d)²: the negative log-density (up to constants) of a
      diagonal Gaussian fitted to mapped N(0, I) samples. It is ≈ 1 for a typical mapped code, so
      the default 1e-3 adds ~1e-3 to the loss -- far below the pixel error of any fit -- and does
      not bias in-distribution solutions; it only stops the code from drifting far outside the
      mapping distribution along directions the image barely constrains (such codes behave badly
      when GAN2Shape later offsets ``w`` to make pseudo and projected samples).
    * ``lam_w_spread`` (W+ only) · mean_{l,d}((w_{l,d} − mean_l w_{l,d})/σ_d)²: pulls the
      per-layer codes towards their common value, i.e. towards W, against W+ over-fitting.

    W+ is parametrised as a shared code plus per-layer offsets (offsets start at 0 and get
    ``offset_lr_scale`` × the lr; the latent noise goes on the shared code only), so at scale 0 it
    is exactly the W projector. On the tiny test GAN (100 steps) 0.3 matched 1.0 on style-mixed
    (W+) images and was a little better on W images; 0.1 was too slow on W+ images.

    ``mask_bg_weight``: with masks, pixels get weight ``m + mask_bg_weight·(1 − m)`` in the pixel
    (and perceptual) loss: 0 = object only, 1 = mask ignored.
    """

    space: str = "w"                  # "w" | "w+"
    steps: int = 1000
    lr: float = 0.1
    lr_rampup: float = 0.05           # fraction of steps of linear warm-up
    lr_rampdown: float = 0.25         # fraction of steps of cosine ramp-down
    init: str = "mean"                # start from the mean latent
    n_mean_samples: int = 4096
    latent_noise: float = 0.05        # × RMS radius of W; decays as (1 − t/noise_ramp)²
    noise_ramp: float = 0.75
    lam_pixel: float = 1.0
    pixel_loss: str = "l1"            # "l1" | "mse"
    lam_perceptual: float = 0.0       # needs a PerceptualLoss passed to invert()
    lam_w_reg: float = 1e-3
    lam_w_spread: float = 1e-2
    offset_lr_scale: float = 0.3      # W+: lr of the per-layer offsets relative to the shared code
    mask_bg_weight: float = 0.1
    image_size: int | None = None     # working resolution of the losses (None: the targets' size)
    seed: int = 0

    def validate(self) -> None:
        if self.space not in ("w", "w+"):
            raise ValueError(f"space must be 'w' or 'w+', got {self.space!r}")
        if self.init != "mean":
            raise ValueError(f"init must be 'mean', got {self.init!r}")
        if self.pixel_loss not in ("l1", "mse"):
            raise ValueError(f"pixel_loss must be 'l1' or 'mse', got {self.pixel_loss!r}")
        if self.steps < 0 or self.lr < 0 or self.n_mean_samples < 2:
            raise ValueError("steps and lr must be >= 0 and n_mean_samples >= 2")
        if not 0 <= self.mask_bg_weight <= 1:
            raise ValueError(f"mask_bg_weight must lie in [0, 1], got {self.mask_bg_weight}")


@dataclass
class InversionResult:
    """Output of :func:`invert` (tensors on the generator's device and in its dtype, detached).

    ``latents``: B×C (W) or B×n_latent×C (W+); ``reconstructions``: B×3×S×S, ``G(latent)`` with the
    stored noise resized to the targets' size S; ``psnr`` / ``psnr_masked`` (None without masks) /
    ``psnr_init`` (of the mean-latent start image): per image, dB, at size S;
    ``loss_history``: steps×B per-image total loss (CPU).
    """

    latents: torch.Tensor
    reconstructions: torch.Tensor
    psnr: torch.Tensor
    psnr_masked: torch.Tensor | None
    psnr_init: torch.Tensor
    loss_history: torch.Tensor
    w_mean: torch.Tensor = field(repr=False)


# ----------------------------------------------------------------------------------------------
# pieces
# ----------------------------------------------------------------------------------------------

def psnr(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None,
         max_db: float = PSNR_CAP_DB) -> torch.Tensor:
    """Per-image PSNR (dB) of ``B×C×H×W`` images in [-1, 1], mapped to [0, 1] and clamped there
    (as an 8-bit save would). With ``mask`` (``B×1×H×W`` / ``B×H×W``, soft allowed) the squared
    error is averaged over the mask weight × channels. Identical images give ``max_db`` (the MSE is
    floored at 10^(−max_db/10)); an all-zero mask gives NaN."""
    a = ((x.detach().float() + 1) / 2).clamp(0, 1)
    b = ((y.detach().float() + 1) / 2).clamp(0, 1)
    se = (a - b).pow(2)
    if mask is None:
        mse = se.flatten(1).mean(1)
    else:
        m = mask.detach().float().to(se.device)
        if m.dim() == se.dim() - 1:
            m = m.unsqueeze(1)
        m = m.expand_as(se)
        den = m.flatten(1).sum(1)
        mse = (se * m).flatten(1).sum(1) / den
        mse = torch.where(den > 0, mse, torch.full_like(mse, float("nan")))
    mse = mse.clamp_min(10 ** (-max_db / 10))
    return -10 * torch.log10(mse)


@torch.no_grad()
def latent_statistics(generator, n: int = 4096, seed: int = 0, chunk: int = 4096):
    """Mean ``1×C``, per-dimension std ``C`` and RMS radius ``sqrt(E‖w − μ‖²)`` of the mapping of
    ``n`` N(0, I) codes (drawn on the CPU from ``seed``, so equal on every device)."""
    p0 = next(generator.parameters())
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator.style_dim, generator=gen)
    w = torch.cat([generator.style(z[i:i + chunk].to(p0.device, p0.dtype)) for i in range(0, n, chunk)])
    mean = w.mean(0, keepdim=True)
    std = w.std(0).clamp_min(1e-8)
    radius = (w - mean).pow(2).sum(1).mean().sqrt()
    return mean, std, radius


def lr_schedule(t: float, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """Multiplier of the base lr at progress ``t`` in [0, 1]: linear warm-up, cosine ramp-down."""
    down = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    mult = 0.5 - 0.5 * math.cos(math.pi * down)
    if rampup > 0:
        mult *= min(1.0, t / rampup)
    return mult


def noise_schedule(t: float, noise_ramp: float = 0.75) -> float:
    """Multiplier of the latent noise at progress ``t``: ``max(0, 1 − t/noise_ramp)²``."""
    if noise_ramp <= 0:
        return 0.0
    return max(0.0, 1.0 - t / noise_ramp) ** 2


def _generate(generator, latent: torch.Tensor, size: int) -> torch.Tensor:
    img, _ = generator(latent, input_is_w=True, randomize_noise=False)
    return resize(img, size)


# ----------------------------------------------------------------------------------------------
# projector
# ----------------------------------------------------------------------------------------------

def invert(generator, targets: torch.Tensor, cfg: InversionConfig | None = None,
           masks: torch.Tensor | None = None, perceptual=None,
           callback: Callable[[int, dict], object] | None = None,
           image_ids: Sequence[int] | None = None) -> InversionResult:
    """Project ``targets`` (B×3×S×S in [-1, 1]) into W (or W+) of ``generator``.

    ``masks``: optional ``B×1×S×S`` object masks (loss weighting, see :class:`InversionConfig`,
    and the masked PSNR). ``perceptual``: optional :class:`gan2shape.method.losses.PerceptualLoss`, used
    with weight ``cfg.lam_perceptual``. ``callback(step, info)`` is called after every step with
    ``info = {"loss": per-image loss (B,), "lr": float, "noise": float, "latents": tensor}``.
    ``image_ids``: per-image integers that seed its latent noise (default 0..B−1); pass global
    indices to make results independent of how images are split into batches.
    The generator is not modified (no gradients are accumulated into its weights).
    """
    cfg = cfg or InversionConfig()
    cfg.validate()
    if targets.dim() != 4 or targets.shape[1] != 3 or targets.shape[-1] != targets.shape[-2]:
        raise ValueError(f"targets must be B×3×S×S, got {tuple(targets.shape)}")
    if cfg.lam_perceptual > 0 and perceptual is None:
        raise ValueError("lam_perceptual > 0 needs a perceptual loss")
    p0 = next(generator.parameters())
    dev, dtype = p0.device, p0.dtype
    B, S = targets.shape[0], targets.shape[-1]
    size = cfg.image_size or S
    ids = list(range(B)) if image_ids is None else [int(i) for i in image_ids]
    if len(ids) != B:
        raise ValueError(f"{len(ids)} image_ids for {B} targets")

    targets = targets.detach().to(dev, dtype)
    if masks is not None:
        masks = masks.detach().to(dev, dtype)
        if masks.dim() == 3:
            masks = masks.unsqueeze(1)
        if masks.shape != (B, 1, S, S):
            raise ValueError(f"masks must be B×1×S×S = {(B, 1, S, S)}, got {tuple(masks.shape)}")
    work_target = resize(targets, size)
    weight = None
    if masks is not None:
        m = resize(masks, size).clamp(0, 1)
        weight = m + cfg.mask_bg_weight * (1 - m)

    mean, std, radius = latent_statistics(generator, cfg.n_mean_samples, cfg.seed)
    # W: one code per image. W+: a shared code plus per-layer offsets (zero at the start), so
    # Adam moves the common part at the full rate and W+ search contains the W search.
    base = mean.expand(B, -1).clone().contiguous().requires_grad_(True)
    params = [base]
    if cfg.space == "w+":
        offsets = torch.zeros(B, generator.n_latent, generator.style_dim, device=dev, dtype=dtype,
                              requires_grad=True)
        params.append(offsets)

    def current() -> torch.Tensor:
        return base if cfg.space == "w" else base.unsqueeze(1) + offsets

    groups = [{"params": [base], "scale": 1.0}]
    if cfg.space == "w+":
        groups.append({"params": [offsets], "scale": cfg.offset_lr_scale})
    opt = torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    # one CPU generator per image: its noise does not depend on the batch or the device
    gens = [torch.Generator().manual_seed(cfg.seed * 1_000_003 + i) for i in ids]
    history = torch.zeros(cfg.steps, B, device=dev, dtype=dtype)
    radius_f = float(radius)  # one host sync, not one per step

    with torch.no_grad():
        latent = current()
        psnr_init = psnr(_generate(generator, latent, S), targets)

    def image_loss(w: torch.Tensor) -> torch.Tensor:
        out = _generate(generator, w, size)
        loss = torch.zeros(B, device=dev, dtype=dtype)
        if cfg.lam_pixel:
            if cfg.pixel_loss == "l1":
                pix = masked_l1(out, work_target, weight, reduction="none")
            else:
                se = (out - work_target).pow(2)
                if weight is None:
                    pix = se.flatten(1).mean(1)
                else:
                    wgt = weight.expand_as(se)
                    pix = (se * wgt).flatten(1).sum(1) / wgt.flatten(1).sum(1).clamp_min(1e-12)
            loss = loss + cfg.lam_pixel * pix
        if cfg.lam_perceptual:
            loss = loss + cfg.lam_perceptual * perceptual(out, work_target, mask=weight, reduction="none")
        return loss

    for step in range(cfg.steps):
        t = step / cfg.steps
        lr = cfg.lr * lr_schedule(t, cfg.lr_rampup, cfg.lr_rampdown)
        for g in opt.param_groups:
            g["lr"] = lr * g["scale"]
        strength = cfg.latent_noise * radius_f * noise_schedule(t, cfg.noise_ramp)
        latent = current()
        w_in = latent
        if strength > 0:
            # noise on the shared code (W+: broadcast to all layers, so W+ at offset lr 0 is W)
            noise = torch.stack([torch.randn(base.shape[1:], generator=g) for g in gens]).to(dev, dtype)
            w_in = latent + strength * (noise if cfg.space == "w" else noise.unsqueeze(1))
        loss = image_loss(w_in)
        # regularisers on the noise-free code, in units of the mapping distribution's std
        z = (latent - (mean if cfg.space == "w" else mean.unsqueeze(1))) / std
        if cfg.lam_w_reg:
            loss = loss + cfg.lam_w_reg * z.pow(2).flatten(1).mean(1)
        if cfg.space == "w+" and cfg.lam_w_spread:
            spread = (latent - latent.mean(1, keepdim=True)) / std
            loss = loss + cfg.lam_w_spread * spread.pow(2).flatten(1).mean(1)
        # the sum keeps each image's gradient its own; grad only w.r.t. the latent (not G's weights)
        grads = torch.autograd.grad(loss.sum(), params)
        for p_, g_ in zip(params, grads):
            p_.grad = g_
        opt.step()
        opt.zero_grad(set_to_none=True)
        history[step] = loss.detach()
        if callback is not None:
            callback(step, {"loss": loss.detach(), "lr": lr, "noise": strength, "latents": current().detach()})

    with torch.no_grad():
        latents = current().detach().clone()
        # one image at a time, as GAN2Shape's G(w) will do: bit-identical on the same device
        recon = torch.cat([_generate(generator, latents[i:i + 1], S) for i in range(B)])
    return InversionResult(
        latents=latents, reconstructions=recon, psnr=psnr(recon, targets),
        psnr_masked=psnr(recon, targets, masks) if masks is not None else None,
        psnr_init=psnr_init, loss_history=history.cpu(), w_mean=mean.detach())


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def _read_list(list_path: Path, root: Path | None) -> list[Path]:
    if not list_path.is_file():
        raise FileNotFoundError(f"{list_path}: list file not found")
    base = root if root is not None else list_path.parent
    lines = [ln.strip() for ln in list_path.read_text().splitlines()]
    paths = [base / ln for ln in lines if ln and not ln.startswith("#")]
    if not paths:
        raise ValueError(f"{list_path}: list file names no images")
    return paths


def cmd_invert(args: argparse.Namespace) -> int:
    """Invert images into StyleGAN2 latents (W by default) for GAN2Shape."""
    from ..data import load_image, load_mask, save_json, save_png
    from ..method.losses import PerceptualLoss
    from ..stages.common import check_input, check_output_dir
    from .stylegan2 import load_stylegan2, save_latent

    if (args.images is None) == (args.list is None):
        raise SystemExit("give either --images or --list")
    paths = list(args.images) if args.images is not None else _read_list(args.list, args.root)
    names = [p.stem for p in paths]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"images with the same name would overwrite each other's outputs: {dup[:5]}")
    if args.masks is not None and len(args.masks) != len(paths):
        raise ValueError(f"{len(args.masks)} masks for {len(paths)} images")
    if args.perceptual == "lpips_vgg" and args.vgg is None:
        raise SystemExit("--perceptual lpips_vgg needs --vgg (torchvision's vgg16-397923af.pth)")
    check_input(args.gan, "--gan")
    check_input(args.vgg, "--vgg")
    check_output_dir(args.out_dir, "--out-dir")

    ck = load_stylegan2(args.gan, device="cpu", load_discriminator=args.perceptual == "discriminator")
    G = ck.generator.to(args.device).eval()
    size = args.image_size or G.size
    # read (and validate) every input before the long optimisation
    images = torch.cat([load_image(p, size, args.crop)[0] for p in paths])
    masks = torch.cat([load_mask(p, size) for p in args.masks]) if args.masks is not None else None

    perceptual = None
    lam_perc = args.lam_perceptual
    if args.perceptual != "none":
        perceptual = PerceptualLoss(args.perceptual, vgg_path=args.vgg,
                                    discriminator=ck.discriminator).to(args.device)
        lam_perc = 1.0 if lam_perc is None else lam_perc
    cfg = InversionConfig(space=args.space, steps=args.steps, lr=args.lr, latent_noise=args.noise,
                          n_mean_samples=args.n_mean_samples, lam_pixel=args.lam_pixel,
                          pixel_loss=args.pixel_loss, lam_perceptual=lam_perc or 0.0,
                          lam_w_reg=args.lam_w_reg, lam_w_spread=args.lam_w_spread,
                          mask_bg_weight=args.mask_bg_weight, seed=args.seed)
    cfg.validate()

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    per_image: dict[str, dict] = {}
    t0 = time.time()
    for start in range(0, len(paths), args.batch_size):
        idx = list(range(start, min(start + args.batch_size, len(paths))))
        res = invert(G, images[idx], cfg, masks=masks[idx] if masks is not None else None,
                     perceptual=perceptual, image_ids=idx)
        for j, i in enumerate(idx):
            save_latent(out / f"{names[i]}.pt", res.latents[j:j + 1])
            save_png(res.reconstructions[j].clamp(-1, 1), out / f"{names[i]}_inv.png")
            rec = {"image": str(paths[i]), "psnr": float(res.psnr[j]), "psnr_init": float(res.psnr_init[j]),
                   "final_loss": float(res.loss_history[-1, j]) if cfg.steps else None}
            if res.psnr_masked is not None:
                rec["psnr_masked"] = float(res.psnr_masked[j])
                rec["mask"] = str(args.masks[i])
            per_image[names[i]] = rec
        log.info("inverted %d/%d images, mean PSNR %.2f dB", idx[-1] + 1, len(paths),
                 float(res.psnr.mean()))

    def _mean(key: str):
        vals = [r[key] for r in per_image.values() if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    summary = {"gan": str(args.gan), "image_size": size, "device": str(args.device),
               "config": asdict(cfg), "perceptual": args.perceptual, "seconds": time.time() - t0,
               "mean_psnr": _mean("psnr"), "mean_psnr_init": _mean("psnr_init"),
               "mean_psnr_masked": _mean("psnr_masked"), "psnr_cap_db": PSNR_CAP_DB,
               "images": per_image}
    save_json(summary, out / "inversion_summary.json")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``gan2shape invert``."""
    from ..stages.common import nonneg_float, nonneg_int, positive_float, positive_int

    d = InversionConfig()
    p = subparsers.add_parser("invert", help=cmd_invert.__doc__, description=cmd_invert.__doc__)
    p.add_argument("--gan", required=True, type=Path, help="StyleGAN2 checkpoint (official rosinality format)")
    p.add_argument("--images", nargs="+", type=Path, help="images to invert (PNG/JPEG, square)")
    p.add_argument("--list", type=Path, help="list file, one image path per line (relative to --root)")
    p.add_argument("--root", type=Path, help="folder of the --list paths (default: the list's folder)")
    p.add_argument("--masks", nargs="+", type=Path, help="object masks, one per image, same order")
    p.add_argument("--out-dir", required=True, type=Path,
                   help="writes <name>.pt (latent), <name>_inv.png, inversion_summary.json")
    p.add_argument("--space", default=d.space, choices=["w", "w+"])
    p.add_argument("--steps", type=nonneg_int, default=d.steps)
    p.add_argument("--lr", type=positive_float, default=d.lr)
    p.add_argument("--noise", type=nonneg_float, default=d.latent_noise, help="initial latent noise (× W radius)")
    p.add_argument("--n-mean-samples", type=positive_int, default=d.n_mean_samples)
    p.add_argument("--lam-pixel", type=nonneg_float, default=d.lam_pixel)
    p.add_argument("--pixel-loss", default=d.pixel_loss, choices=["l1", "mse"])
    p.add_argument("--lam-perceptual", type=nonneg_float, help="default 1 when --perceptual is not none")
    p.add_argument("--lam-w-reg", type=nonneg_float, default=d.lam_w_reg)
    p.add_argument("--lam-w-spread", type=nonneg_float, default=d.lam_w_spread)
    p.add_argument("--mask-bg-weight", type=nonneg_float, default=d.mask_bg_weight)
    p.add_argument("--image-size", type=positive_int, help="working/comparison size (default: the GAN's size)")
    p.add_argument("--crop", type=positive_int, help="centre crop before resizing")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--perceptual", default="none", choices=["none", "discriminator", "lpips_vgg"])
    p.add_argument("--vgg", type=Path, help="torchvision VGG16 weights vgg16-397923af.pth (for lpips_vgg)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=nonneg_int, default=d.seed)
    p.set_defaults(func=cmd_invert)
    return p
