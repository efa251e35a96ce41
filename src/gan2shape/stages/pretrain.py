"""``gan2shape pretrain``: joint pre-training of D, A, V, L, E over many images (METHOD §1.5, §1.6, §8.1).

The original synface protocol starts every instance-specific run from ``synface_pretrain.pth``, a
model trained jointly on 200 training images by 8 processes sharing the weights (``--streams``, 8
in the ``*_pretrain`` presets: every iteration trains the 8 streams' current images together).
Without it the view and light networks start untrained, and one short synface stage (500/500/200)
cannot teach them. This stage writes such a file in the official key layout; ``--nets`` keeps a
subset (e.g. without netD, so that each instance run pre-fits its depth net to its own prior) and
``--half`` stores the weights in float16 (they are loaded back into float32 networks).

The run is resumable: with ``--checkpoint`` an interrupted call (killed, or stopped by
``--stop-after-seconds``, exit status 3) continues where it stopped when the same command is run
again, and ends with the same weights as an uninterrupted run. ``--out`` is written only at the end;
``--partial-out`` also writes, when a call stops early, the networks as they are at the stop (a
shortened pre-train: the file records the iterations run and ``complete: false``).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ..method.config import NET_NAMES

log = logging.getLogger("gan2shape")


def _read_list(path: Path) -> list[tuple[Path, Path, Path | None]]:
    """Lines ``image latent [prior]`` (paths relative to the list's folder unless absolute)."""
    if not path.is_file():
        raise SystemExit(f"{path}: file not found")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) not in (2, 3):
            raise SystemExit(f"{path}:{i}: expected 'image latent [prior]', got {line!r}")
        p = [q if Path(q).is_absolute() else path.parent / q for q in map(Path, parts)]
        rows.append((p[0], p[1], p[2] if len(p) == 3 else None))
    if not rows:
        raise SystemExit(f"{path}: no images listed")
    return rows


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Jointly pre-train the GAN2Shape networks on many images; write an official pretrain file."""
    from ..data import save_json
    from ..io import atomic_torch_save
    from ..method.pretrain import check_collect_iters, fit_joint, pretrain_file
    from ..method.trainer import Trainer
    from .common import (
        build_model,
        check_input,
        check_model_args,
        check_output_file,
        load_target,
        method_config,
        resolved_config,
    )

    t_call = time.perf_counter()
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    bad = sorted(set(nets) - set(NET_NAMES))
    if bad or not nets:
        raise SystemExit(f"--nets: unknown {bad} (choose from {', '.join(NET_NAMES)})")
    if args.checkpoint is None and args.stop_after_seconds is not None:
        raise SystemExit("--stop-after-seconds needs --checkpoint (the file the next call resumes from)")
    if args.partial_out is not None and args.partial_out.resolve() == args.out.resolve():
        raise SystemExit(f"--partial-out {args.partial_out}: is also --out (a finished run's file)")
    if args.checkpoint is not None and args.checkpoint.resolve() in (args.out.resolve(),
                                                                     args.log.resolve() if args.log else None):
        raise SystemExit(f"--checkpoint {args.checkpoint}: is also --out or --log")
    rows = _read_list(args.list)
    if args.first_prior is not None:
        if rows[0][2] is not None:
            raise SystemExit(f"--first-prior: {args.list} already names a prior for its first image")
        rows[0] = (*rows[0][:2], args.first_prior)
    cfg = method_config(args)
    for img, lat, prior in rows:
        for f in (img, lat, prior):
            check_input(f, f"{args.list}:")
    check_model_args(args)
    for path, flag in ((args.out, "--out"), (args.log, "--log"), (args.checkpoint, "--checkpoint"),
                       (args.partial_out, "--partial-out")):
        check_output_file(path, flag)
    if cfg.step3_pool == "original":
        try:
            check_collect_iters(cfg.collect_iters, len(rows))
        except ValueError as e:
            raise SystemExit(f"--collect-iters (or --preset {args.preset}): {e}")
    model = build_model(args, cfg)
    trainer = Trainer(model, log_every=args.log_every, progress=args.progress, fast=args.mode == "fast")
    if args.pretrain is not None:
        trainer.load_pretrain(args.pretrain)
    targets = [load_target(img.stem, img, lat, cfg, model.G.style_dim, prior=prior, n_latent=model.G.n_latent)
               for img, lat, prior in rows]
    seconds = args.stop_after_seconds
    if seconds is not None:  # counted from the start of this call
        seconds = max(0.0, seconds - (time.perf_counter() - t_call))
    result = fit_joint(trainer, targets, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                       stop_after=args.stop_after, stop_after_seconds=seconds)
    if result.interrupted:
        if args.partial_out is not None:
            atomic_torch_save(pretrain_file(model, result, nets, args.half), args.partial_out)
            if args.log is not None:
                save_json(result.log, args.log)
            log.warning("the networks after %d iterations -> %s (a shortened pre-train)", result.iterations,
                        args.partial_out)
        log.warning("stopped after %d iterations (%.0f s in all); checkpoint %s: re-run the same command to continue",
                    result.iterations, result.seconds, args.checkpoint)
        return 3
    atomic_torch_save(pretrain_file(model, result, nets, args.half), args.out)
    save_json(resolved_config(args, cfg), args.out.with_name(args.out.stem + ".config.json"))
    if args.log is not None:
        save_json(result.log, args.log)
    if args.checkpoint is not None and not args.keep_checkpoint:
        args.checkpoint.unlink(missing_ok=True)  # only needed to resume an unfinished run
    log.info("pre-trained %s on %d images with %d streams: %d iterations in %.1f s -> %s", ",".join(nets),
             len(targets), cfg.joint_streams, result.iterations, result.seconds, args.out)
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    from .common import (
        add_checkpoint_flags,
        add_method_flags,
        add_mode_flags,
        add_model_flags,
        nonneg_float,
        positive_int,
    )

    p = subparsers.add_parser("pretrain", help=cmd_pretrain.__doc__)
    p.add_argument("--list", required=True, type=Path,
                   help="text file, one 'image latent [prior]' per line (the first image's prior seeds netD)")
    p.add_argument("--first-prior", type=Path,
                   help="depth prior (.npy) of the list's first image, when the list gives none (seeds netD)")
    p.add_argument("--streams", dest="joint_streams", type=positive_int, metavar="P",
                   help="P image streams trained together, each on its own random order of the images (the "
                        "original's P processes sharing the weights; default: the preset's, 8 for *_pretrain)")
    p.add_argument("--nets", default=",".join(NET_NAMES), help="networks to write (comma-separated)")
    p.add_argument("--half", action="store_true", help="store float16 weights (half the file size)")
    p.add_argument("--out", required=True, type=Path, help="pretrain file (official keys netD, netA, ...)")
    p.add_argument("--partial-out", type=Path,
                   help="when a call stops early (--stop-after-seconds, --stop-after): also write the networks as "
                        "they are then, a shortened pre-train (the run still resumes from --checkpoint)")
    p.add_argument("--log", type=Path, help="training log (JSON)")
    p.add_argument("--log-every", type=positive_int, default=100)
    p.add_argument("--progress", action="store_true")
    add_checkpoint_flags(p, every=500)
    p.add_argument("--stop-after-seconds", type=nonneg_float, metavar="S",
                   help="stop at the first iteration after this many seconds of this call, write --checkpoint and "
                        "exit with status 3 (re-run the same command to continue)")
    add_mode_flags(p)
    add_method_flags(p)
    add_model_flags(p)
    p.set_defaults(func=cmd_pretrain)
    return p
