"""``gan2shape sample-gan``: N StyleGAN2 samples with their W latents, the training images of a joint
pre-train (METHOD §1.5, §6.5).

One seeded CPU generator draws first the 4096 codes of the mean latent, then z ~ N(0, I) for the N
samples (so the samples are the same whatever the truncation and the device); w = mapping(z), and
with ``truncation`` t < 1 it is pulled towards the mean latent: w ← mean + t·(w − mean). The image is
G(w) with the generator's stored noise -- what GAN2Shape renders as G(w) -- and the stored latent is
that (truncated) w, so generating it again reproduces the image.

Default t = 1 (no truncation): the original synface pre-train used 200 synface *training* renderings
inverted into W, so its latents spread like the data, not pulled towards the mean; t = 0.7 is what the
original's sampling script used to make its celeba/car/church images.

Writes ``<out>/<name>.png``, ``<out>/<name>.pt`` (the W latent, as ``gan2shape invert`` writes it),
``<out>/list.txt`` (``image latent`` per line, for ``gan2shape pretrain --list``) and
``<out>/sample_gan.json`` (the settings), all through a temporary folder renamed into place.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

log = logging.getLogger("gan2shape")


@torch.no_grad()
def sample_latents(generator, n: int, seed: int = 0, truncation: float = 1.0, n_mean: int = 4096) -> torch.Tensor:
    """``n``×style_dim W latents on the generator's device (module doc)."""
    dev = next(generator.parameters()).device
    g = torch.Generator().manual_seed(seed)
    mean = generator.mean_latent(n_mean, generator=g)
    w = generator.get_latent(torch.randn(n, generator.style_dim, generator=g).to(dev))
    return w if truncation == 1 else mean + truncation * (w - mean)


@torch.no_grad()
def render(generator, w: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """G(w) with the stored noise, clamped to [-1, 1], resized to ``size`` (default: the GAN's)."""
    from ..utils import resize

    img, _ = generator(w, input_is_w=True, randomize_noise=False)
    return resize(img.clamp(-1, 1), size or img.shape[-1])


def cmd_sample_gan(args: argparse.Namespace) -> int:
    """Sample N GAN images with their W latents and a list file for `gan2shape pretrain`."""
    from ..data import save_json, save_png
    from ..io import atomic_dir, atomic_write_text
    from ..stages.common import check_input, check_output_dir
    from .stylegan2 import load_stylegan2, save_latent

    check_input(args.gan, "--gan")
    check_output_dir(args.out, "--out")
    G = load_stylegan2(args.gan, device="cpu", load_discriminator=False).generator.to(args.device).eval()
    w = sample_latents(G, args.n, args.seed, args.truncation, args.n_mean)
    names = [f"{i:06d}" for i in range(args.n)]
    with atomic_dir(args.out) as tmp:
        for start in range(0, args.n, args.batch_size):
            chunk = w[start:start + args.batch_size]
            for name, wi, img in zip(names[start:], chunk, render(G, chunk, args.size)):
                save_png(img, tmp / f"{name}.png")
                save_latent(tmp / f"{name}.pt", wi)
        save_json({"gan": str(args.gan), "n": args.n, "seed": args.seed, "truncation": args.truncation,
                   "n_mean": args.n_mean, "size": args.size or G.size}, tmp / "sample_gan.json")
        atomic_write_text("".join(f"{n}.png {n}.pt\n" for n in names), tmp / "list.txt")
    log.info("%d samples (truncation %g) -> %s", args.n, args.truncation, args.out)
    return 0


def truncation(s: str) -> float:
    """A truncation factor in (0, 1]."""
    from ..stages.common import positive_float

    v = positive_float(s)
    if v > 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {s!r}")
    return v


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``gan2shape sample-gan``."""
    from ..stages.common import nonneg_int, positive_int

    p = subparsers.add_parser("sample-gan", help=cmd_sample_gan.__doc__, description=cmd_sample_gan.__doc__)
    p.add_argument("--gan", required=True, type=Path, help="StyleGAN2 checkpoint (official rosinality format)")
    p.add_argument("--n", required=True, type=positive_int, help="number of samples")
    p.add_argument("--out", required=True, type=Path, help="folder: <name>.png, <name>.pt, list.txt, sample_gan.json")
    p.add_argument("--truncation", type=truncation, default=1.0,
                   help="pull w towards the mean latent by this factor (default 1: none, like the original's "
                        "inverted synface training images; its sampling script used 0.7)")
    p.add_argument("--n-mean", type=positive_int, default=4096, help="codes averaged for the mean latent")
    p.add_argument("--size", type=positive_int,
                   help="PNG width (default: the GAN's); with a cropping preset (synface: 170) the width of the "
                        "dataset's own images, so that the crop frames the samples as it frames the data")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.set_defaults(func=cmd_sample_gan)
    return p
