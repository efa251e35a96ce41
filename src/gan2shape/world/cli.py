"""``gan2shape synthesize`` (the held-out test set) and ``gan2shape viewlight`` (the view / light MVNs)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .dataset import save_test_set
from .scenes import ALL_FAMILIES, FAMILIES, viewlight_moments

__all__ = ["add_cli"]


def _cmd_synthesize(args: argparse.Namespace) -> int:
    """Render the held-out synthetic test set(s) with ground truth."""
    import logging

    log = logging.getLogger("gan2shape")
    for fam in args.family:
        folder = save_test_set(args.out, fam, args.n, args.seed, args.size, args.device, args.supersample)
        log.info("wrote %d %s images to %s", args.n, fam, folder)
    return 0


def _cmd_viewlight(args: argparse.Namespace) -> int:
    """Write the synthetic world's view / light MVN files (official {'mean', 'cov'} format)."""
    dist = viewlight_moments(args.family, args.n, args.seed)
    dist.save(args.view_out, args.light_out)
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``gan2shape synthesize``, ``gan2shape viewlight`` and ``gan2shape world-report``."""
    from .report import add_cli as add_report

    add_report(subparsers)
    q = subparsers.add_parser("viewlight", help=_cmd_viewlight.__doc__)
    q.add_argument("--family", nargs="+", default=list(FAMILIES), choices=ALL_FAMILIES,
                   help="families of one world (v1: face box; v2: face2 car2, moments of the GAN's training stream)")
    q.add_argument("--n", type=int, default=20000, help="scenes per family")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--view-out", type=Path, required=True)
    q.add_argument("--light-out", type=Path, required=True)
    q.set_defaults(func=_cmd_viewlight)
    p = subparsers.add_parser("synthesize", help=_cmd_synthesize.__doc__)
    p.add_argument("--family", nargs="+", default=list(FAMILIES), choices=ALL_FAMILIES,
                   help="object families (world v1: face box; world v2: face2 car2)")
    p.add_argument("--n", type=int, required=True, help="images per family")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--supersample", type=int, default=4, help="anti-aliasing sub-samples per axis")
    p.add_argument("--out", type=Path, required=True, help="output root (one folder per family)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.set_defaults(func=_cmd_synthesize)
    return p
