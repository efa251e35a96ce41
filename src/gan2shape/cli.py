"""``gan2shape <stage>``: one subcommand per pipeline stage, every value an explicit flag.

This module only registers the stages; each lives in its own module with an ``add_cli``. Method
defaults come from the dataset presets (``--preset``); a flag given on the command line overrides
the preset. Stage code never reads params.yaml.

CPU runs use ``--threads`` intra-op threads (default ``$GAN2SHAPE_THREADS``, else 1), set here
before any work for Snakemake jobs and hand runs alike: results on the CPU are bitwise equal
whatever ``OMP_NUM_THREADS`` says, as long as ``--threads`` is the same.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

import torch

# Modules that register their stage subcommands through ``add_cli(subparsers)``, in help order.
STAGE_MODULES: tuple[str, ...] = (
    "gan2shape.download", "gan2shape.world.cli", "gan2shape.gan.train_gan", "gan2shape.gan.invert",
    "gan2shape.gan.sample", "gan2shape.masks.segmenter", "gan2shape.masks", "gan2shape.stages.prior", "gan2shape.stages.pretrain_depth",
    "gan2shape.stages.pretrain", "gan2shape.stages.reconstruct", "gan2shape.report.evaluate",
    "gan2shape.report.figures", "gan2shape.report.page",
)
THREADS_ENV = "GAN2SHAPE_THREADS"


def build_parser() -> argparse.ArgumentParser:
    from .stages.common import positive_int

    p = argparse.ArgumentParser(prog="gan2shape", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--threads", type=positive_int, default=os.environ.get(THREADS_ENV, "1"),
                   help=f"CPU threads of torch (default: ${THREADS_ENV}, else 1); CPU results depend on it")
    sub = p.add_subparsers(dest="command", required=True)
    for name in STAGE_MODULES:
        importlib.import_module(name).add_cli(sub)
    return p


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that report a bad input, flag or file (not a bug): shown as one message."""
    from .download import DownloadError
    from .io import CheckpointError

    return (CheckpointError, DownloadError, ValueError, OSError)


def main(argv: list[str] | None = None) -> int:
    """Run one stage. From the console (``argv`` None) a user error prints ``gan2shape <stage>:
    error: <message>`` without a traceback and exits with status 2; called with ``argv`` (tests,
    scripts) the exception propagates."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(getattr(args, "seed", None) or 0)
    if argv is not None:
        return args.func(args)
    try:
        return args.func(args)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            raise
        print(f"gan2shape {args.command}: error: {e.code}", file=sys.stderr)
        return 2
    except user_errors() as e:
        print(f"gan2shape {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gan2shape {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
