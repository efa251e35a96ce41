"""``gan2shape prior``: a depth prior (ellipsoid, masked box, smoothed box, confidence) from a mask."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import check_input, check_output_file, finite_float, positive_int

log = logging.getLogger("gan2shape")


def cmd_prior(args: argparse.Namespace) -> int:
    """Build a shape prior from a mask / confidence map."""
    from ..data import load_mask, save_npy, save_png
    from ..method.priors import make_prior

    if not args.far > args.near:
        raise SystemExit(f"--far ({args.far}) must be greater than --near ({args.near})")
    check_input(args.mask, "--mask")
    check_input(args.confidence, "--confidence")
    check_output_file(args.out, "--out")
    check_output_file(args.png, "--png")
    mask = load_mask(args.mask, args.image_size) if args.mask else None
    conf = load_mask(args.confidence, args.image_size) if args.confidence else None
    p = make_prior(args.name, mask=mask, confidence=conf, category=args.category, near=args.near, far=args.far,
                   compat=args.compat, adjust=args.adjust)
    if p is None:
        raise SystemExit("prior 'none' has no map; skip the pre-fit instead")
    save_npy(p[0], args.out)
    if args.png:
        save_png((p[0] - args.near) / (args.far - args.near), args.png, (0.0, 1.0))
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    q = subparsers.add_parser("prior", help=cmd_prior.__doc__)
    q.add_argument("--name", required=True)
    q.add_argument("--mask", type=Path)
    q.add_argument("--confidence", type=Path)
    q.add_argument("--image-size", type=positive_int, required=True)
    q.add_argument("--category", default="car")
    q.add_argument("--near", type=finite_float, default=0.91)
    q.add_argument("--far", type=finite_float, default=1.02)
    q.add_argument("--compat", action="store_true", help="reproduce the replication's out-of-range values")
    q.add_argument("--adjust", default="original", choices=["original", "replication"])
    q.add_argument("--out", required=True, type=Path)
    q.add_argument("--png", type=Path)
    q.set_defaults(func=cmd_prior)

    return q
