"""``gan2shape pretrain-depth``: pre-fit the depth net to the priors of one or more images."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from .common import check_input, check_output_file, nonneg_float, nonneg_int, positive_float, positive_int

log = logging.getLogger("gan2shape")


def cmd_pretrain_depth(args: argparse.Namespace) -> int:
    """Pre-fit the depth net D to the priors of one or more images; write an official pretrain file."""
    from ..data import load_array, load_image
    from ..io import atomic_torch_save
    from ..method.networks import build_networks
    from ..method.config import MethodConfig
    from ..method.model import GAN2Shape
    from ..method.prefit import fit_depth_to_prior

    if len(args.image) != len(args.prior):
        raise SystemExit("--image and --prior need the same number of files")
    for f in [*args.image, *args.prior]:
        check_input(f, "--image/--prior")
    check_output_file(args.out, "--out")
    cfg = MethodConfig(image_size=args.image_size, seed=args.seed, lr=args.lr, net_width=args.net_width)
    torch.manual_seed(args.seed)
    images = torch.cat([load_image(p, args.image_size)[0] for p in args.image]).to(args.device)
    priors = torch.cat([load_array(p, args.image_size) for p in args.prior]).to(args.device)

    class _DepthOnly(torch.nn.Module):  # the depth part of GAN2Shape, without GAN or renderer
        def __init__(self):
            super().__init__()
            self.cfg = cfg
            self.nets = build_networks(cfg.image_size, width=cfg.net_width)
        predict_depth = GAN2Shape.predict_depth

    m = _DepthOnly().to(args.device)
    r = fit_depth_to_prior(m, images, priors, args.iters, args.tol, batch_size=args.batch_size)
    # saved on the CPU: the file loads anywhere, whatever device fitted it
    net_d = {k: v.detach().cpu() for k, v in m.nets["netD"].state_dict().items()}
    atomic_torch_save({"netD": net_d, **r}, args.out)
    log.info("prior fit MSE %.3g after %d iterations", r["prior_mse"], r["prior_iters"])
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    d = subparsers.add_parser("pretrain-depth", help=cmd_pretrain_depth.__doc__)
    d.add_argument("--image", nargs="+", required=True, type=Path)
    d.add_argument("--prior", nargs="+", required=True, type=Path)
    d.add_argument("--image-size", type=positive_int, required=True)
    d.add_argument("--iters", type=nonneg_int, default=1000)
    d.add_argument("--tol", type=nonneg_float)
    d.add_argument("--batch-size", type=positive_int)
    d.add_argument("--lr", type=positive_float, default=1e-4)
    d.add_argument("--seed", type=nonneg_int, default=0)
    d.add_argument("--net-width", type=positive_float, default=1.0,
                   help="our option: channel multiplier of the networks (1: the original)")
    d.add_argument("--device", default="cpu",
                   help="where to fit: cpu (default), cuda, cuda:<id> (at 64 px, 1000 iterations took ~4 min on one CPU thread)")
    d.add_argument("--out", required=True, type=Path)
    d.set_defaults(func=cmd_pretrain_depth)
    return d
