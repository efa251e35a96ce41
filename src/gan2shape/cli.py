"""``gan2shape <stage>``: one subcommand per pipeline stage, every value an explicit flag.

This module only registers the stages; each lives in its own module with an ``add_cli``. Method
defaults come from the dataset presets (``--preset``); a flag given on the command line overrides
the preset. Stage code never reads params.yaml.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

import torch

# Modules that register their stage subcommands through ``add_cli(subparsers)``, in help order.
STAGE_MODULES: tuple[str, ...] = (
    "gan2shape.download", "gan2shape.world.cli", "gan2shape.gan.train_gan", "gan2shape.gan.invert",
    "gan2shape.masks.segmenter", "gan2shape.masks", "gan2shape.stages.prior", "gan2shape.stages.pretrain_depth",
    "gan2shape.stages.pretrain", "gan2shape.stages.reconstruct", "gan2shape.report.evaluate",
    "gan2shape.report.figures", "gan2shape.report.page",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gan2shape", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    for name in STAGE_MODULES:
        importlib.import_module(name).add_cli(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    torch.manual_seed(getattr(args, "seed", None) or 0)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
