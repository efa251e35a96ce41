"""``gan2shape reconstruct``: instance-specific GAN2Shape on one image, a group sharing one model, or K
independent models in one batch."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


from .common import (add_checkpoint_flags, add_method_flags, add_mode_flags, add_model_flags, build_model,
                     check_input, check_model_args, check_output_dir, check_output_file, load_scene, load_target,
                     method_config, positive_int, resolved_config, write_result)

log = logging.getLogger("gan2shape")


def log_progress(entry: dict) -> None:
    """One line per logged iteration (every --log-every), so that the job's log shows the loss and, with
    ground truth, SIDE (×10⁻²) and MAD (°) as they go, even for a run stopped before it writes its files."""
    gt = f" SIDE {100 * entry['side']:.3f} MAD {entry['mad']:.2f}" if "side" in entry else ""
    who = f"{entry['image']} " if "image" in entry else ""
    log.info("%siteration %d (stage %d, step %d): loss %.4g%s", who, entry["iteration"], entry["stage"],
             entry["step"], entry["loss"], gt)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """Instance-specific GAN2Shape on one image (or a group sharing one model; with --independent
    one model per image, all trained in one batch)."""
    from ..method.trainer import Trainer

    cfg = method_config(args)
    n = len(args.image)
    if len(args.latent) != n:
        raise SystemExit(f"--latent needs one file per --image ({n}), got {len(args.latent)}")
    for opt in ("mask", "prior", "gt_depth", "name", "scene"):
        v = getattr(args, opt)
        if v is not None and len(v) != n:
            raise SystemExit(f"--{opt.replace('_', '-')} needs one value per --image ({n}), got {len(v)}")
    check_args(args, cfg)
    if args.no_bf16 and args.mode != "fast":
        raise SystemExit("--no-bf16 changes the fast mode only; give --mode fast")
    model = build_model(args, cfg)
    trainer = Trainer(model, log_every=args.log_every, progress=args.progress, fast=args.mode == "fast",
                      bf16=not args.no_bf16, on_log=log_progress)
    if args.pretrain is not None:
        trainer.load_pretrain(args.pretrain)
    targets = []
    for i in range(n):
        name = args.name[i] if args.name else Path(args.image[i]).stem
        targets.append(load_target(name, args.image[i], args.latent[i], cfg, model.G.style_dim,
                                   mask=args.mask[i] if args.mask else None,
                                   prior=args.prior[i] if args.prior else None,
                                   gt_depth=args.gt_depth[i] if args.gt_depth else None,
                                   prior_name=args.prior_name, category=args.category,
                                   gt_encoding=args.gt_encoding, n_latent=model.G.n_latent))
        if args.scene:
            targets[-1].scene = load_scene(args.scene[i])
    if args.independent and len({t.name for t in targets}) != n:
        raise SystemExit(f"--independent writes --out/<name>/ per image; names are not unique: "
                         f"{[t.name for t in targets]}")
    starts = None
    if args.init_truth:  # diagnostic: D and A fitted to the ground truth instead of the prior pre-fit
        from ..truth_start import start_from_truth

        starts = start_from_truth(trainer, targets, cfg.prior_iters, cfg.prior_tol)
    result = trainer.fit(targets, independent=args.independent, checkpoint=args.checkpoint,
                         checkpoint_every=args.checkpoint_every, stop_after=args.stop_after)
    for metrics, start in zip(result.metrics, starts or []):
        metrics.update(start)
    if result.interrupted:
        log.warning("stopped after %d iterations; checkpoint %s", result.iterations, args.checkpoint)
        return 3
    config = resolved_config(args, cfg)
    for i, t in enumerate(targets):
        if args.independent:  # each image's outputs as its own run writes them
            write_result(result.image(i), 0, args.out / t.name, config=config,
                         save_model=result.states[i] if args.save_model else None)
        else:
            write_result(result, i, args.out if n == 1 else args.out / t.name, config=config,
                         save_model=model.nets_state() if args.save_model else None)
    if args.checkpoint is not None and not args.keep_checkpoint:
        args.checkpoint.unlink(missing_ok=True)  # only needed to resume an unfinished run
    log.info("done: %s in %.1f s%s", ", ".join(result.names), result.seconds,
             f" ({n} independent models, one batch)" if args.independent else "")
    return 0


def check_args(args: argparse.Namespace, cfg) -> None:
    """Flag combinations, input files and outputs, checked before any model is built."""
    if cfg.projection in ("oracle", "mesh_oracle") and not args.scene:
        raise SystemExit("--projection oracle needs --scene (the synthetic test set's JSON records)")
    prior_name = args.prior_name if args.prior_name != "none" else None
    if args.prior and prior_name:
        raise SystemExit("give --prior (prior maps) or --prior-name (built from --mask), not both")
    if args.init_truth:
        if not args.scene:
            raise SystemExit("--init-truth needs --scene (the synthetic test set's JSON records)")
        if args.independent and len(args.image) > 1:
            raise SystemExit("--init-truth fits one set of nets to the images' ground truth; the K models of "
                             "--independent would all start from it: run the images one by one")
        if cfg.prior_iters < 1:
            raise SystemExit("--init-truth fits D and A for --prior-iters iterations each; give --prior-iters >= 1")
    elif not args.prior and not prior_name and args.pretrain is None and cfg.prior_iters > 0:
        raise SystemExit("the depth pre-fit needs a prior: give --prior FILE or --prior-name NAME (with --mask), "
                         "or --pretrain with a netD, or --prior-iters 0")
    if prior_name and not args.mask:
        raise SystemExit(f"--prior-name {prior_name} needs --mask")
    for flag in ("image", "latent", "mask", "prior", "gt_depth", "scene"):
        for f in getattr(args, flag) or []:
            check_input(f, "--" + flag.replace("_", "-"))
    check_model_args(args)
    check_output_dir(args.out, "--out")
    check_output_file(args.checkpoint, "--checkpoint")


def add_cli(subparsers) -> argparse.ArgumentParser:
    r = subparsers.add_parser("reconstruct", help=cmd_reconstruct.__doc__)
    r.add_argument("--image", nargs="+", required=True, type=Path)
    r.add_argument("--latent", nargs="+", required=True, type=Path)
    r.add_argument("--name", nargs="+")
    r.add_argument("--mask", nargs="+", type=Path)
    r.add_argument("--prior", nargs="+", type=Path, help=".npy depth priors (from `gan2shape prior`)")
    r.add_argument("--prior-name", help="build the prior from --mask instead (ellipsoid, smoothed_box, ...)")
    r.add_argument("--category", default="car", help="category for the ellipsoid box adjustments")
    r.add_argument("--gt-depth", nargs="+", type=Path, help="ground-truth depth (.npy or unsup3d PNG)")
    r.add_argument("--gt-encoding", default="unsup3d", choices=["unsup3d", "synthetic"],
                   help="encoding of ground-truth depth PNGs")
    r.add_argument("--scene", nargs="+", type=Path,
                   help="synthetic scene records (.json; for --projection oracle and --init-truth)")
    r.add_argument("--init-truth", action="store_true",
                   help="diagnostic: instead of the prior pre-fit, fit D and A to the ground-truth canonical depth and "
                        "albedo (--prior-iters iterations each; needs --scene); metrics.json gets start_side, start_mad")
    r.add_argument("--out", required=True, type=Path)
    add_checkpoint_flags(r, every=200)
    r.add_argument("--log-every", type=positive_int, default=50)
    r.add_argument("--save-model", action="store_true", help="also write the trained nets (model.pth)")
    r.add_argument("--progress", action="store_true", help="tqdm progress bar")
    r.add_argument("--independent", action="store_true",
                   help="several --image: train one independent model per image, all in one batch (as separate "
                        "runs would, outputs in --out/<name>/); default: one model shared by the group")
    add_mode_flags(r)
    r.add_argument("--no-bf16", action="store_true",
                   help="diagnostic, with --mode fast: no bf16 autocast (frozen nets and encoders in fp32), "
                        "the rest of the fast mode kept")
    add_method_flags(r)
    add_model_flags(r)
    r.set_defaults(func=cmd_reconstruct)

    return r
