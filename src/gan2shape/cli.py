"""``gan2shape <stage>``: one subcommand per pipeline stage, every value an explicit flag.

Method defaults come from the dataset presets of :mod:`gan2shape.trainer` (``--preset``); a flag
given on the command line overrides the preset. Stage code never reads params.yaml.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

import torch

log = logging.getLogger("gan2shape")


# --------------------------------------------------------------------------------------------
# shared flag groups
# --------------------------------------------------------------------------------------------

def _bool_flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction,
                   default=None, help=help + " (default: preset)")


def _add_method_flags(p: argparse.ArgumentParser) -> None:
    from .trainer import PRESETS, SCHEDULES

    g = p.add_argument_group("method (default: the preset's value)")
    g.add_argument("--preset", default="car", choices=sorted(PRESETS), help="dataset preset of the original configs")
    g.add_argument("--image-size", type=int, help="working resolution S")
    g.add_argument("--np", dest="batchsize", type=int, help="N_p: pseudo/projected samples per iteration")
    g.add_argument("--collect-iters", type=int, help="no-grad step-2 forwards filling the step-3 pool")
    g.add_argument("--schedule", choices=sorted(SCHEDULES) + ["init_iterations"], help="stage schedule")
    g.add_argument("--num-stages", type=int, help="keep only the first K stages of the schedule")
    g.add_argument("--stage-iters", help="N1,N2,N3: override the iteration counts of every stage")
    g.add_argument("--prior-iters", type=int, help="depth pre-fit iterations (0: none)")
    g.add_argument("--prior-tol", type=float, help="stop the pre-fit once its MSE is below this")
    g.add_argument("--crop", type=int, help="centre crop before resizing (cat/synface: 170; 0: none)")
    g.add_argument("--lam-perc", type=float, help="perceptual weight (original 0.5, replication 1)")
    g.add_argument("--lr", type=float, help="Adam learning rate of every network (original 1e-4)")
    g.add_argument("--weight-decay", type=float, help="Adam L2 weight decay (original 5e-4)")
    g.add_argument("--depth-lr-step3", type=float,
                   help="our option: learning rate of the depth net in step 3 (default: --lr, as the original)")
    g.add_argument("--f1-d", type=int, help="mapping layers after the offset injection point (F1_d)")
    g.add_argument("--view-scale", type=float, help="yaw scale of sampled views")
    g.add_argument("--step3-pool", choices=["original", "last_batch"], help="step-3 projected samples")
    g.add_argument("--optimizers", choices=["recreate", "persistent"], help="optimiser policy")
    g.add_argument("--optimizer", choices=["adam", "radam"],
                   help="adam (original) | radam: rectified Adam, no lr·sign(g) first step after each re-creation")
    g.add_argument("--projection", choices=["gan", "pseudo", "oracle"],
                   help="diagnostic: step 3 sees the pseudo samples ('pseudo', no GAN information) or the "
                        "ground-truth object rendered like them ('oracle', a perfect GAN; needs --scene)")
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument("--raster-bin-size", type=int, help="pytorch3d bin size (0: naive; 16 is ~10x faster on CUDA)")
    g.add_argument("--raster-max-faces-per-bin", type=int, help="pytorch3d faces per bin (e.g. 2000)")
    _bool_flag(g, "relative-enc", "encode E(x) − E(G(w))")
    _bool_flag(g, "use-mask", "use the object mask for pseudo samples")


def method_config(args: argparse.Namespace):
    """Build the :class:`MethodConfig` from the preset and the flags that were given."""
    from .trainer import SCHEDULES, Stage, init_iterations_schedule, preset

    names = ["image_size", "batchsize", "collect_iters", "prior_iters", "prior_tol", "crop", "lam_perc", "lr",
             "weight_decay", "depth_lr_step3", "f1_d",
             "view_scale", "step3_pool", "optimizers", "optimizer", "projection", "seed", "relative_enc", "use_mask", "raster_bin_size",
             "raster_max_faces_per_bin"]
    over = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if args.schedule == "init_iterations":
        over["schedule"] = init_iterations_schedule()
    elif args.schedule:
        over["schedule"] = list(SCHEDULES[args.schedule])
    if over.get("crop") == 0:  # --crop 0: no crop (e.g. the synface preset on native 64-px images)
        over["crop"] = None
    cfg = preset(args.preset, **over)
    sched = list(cfg.schedule)
    if args.num_stages is not None:
        if args.num_stages < 1:
            raise SystemExit("--num-stages must be >= 1")
        sched = (sched + [sched[-1]] * args.num_stages)[:args.num_stages]
    if args.stage_iters:
        try:
            n1, n2, n3 = (int(v) for v in args.stage_iters.split(","))
        except ValueError:
            raise SystemExit(f"--stage-iters expects N1,N2,N3, got {args.stage_iters!r}")
        sched = [replace(s, n1=n1, n2=n2 if s.n2 else 0, n3=n3 if s.n3 else 0) for s in sched]
    cfg.schedule = [s if isinstance(s, Stage) else Stage(**s) for s in sched]
    return cfg


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--gan", required=True, type=Path, help="StyleGAN2 checkpoint (official rosinality format)")
    g.add_argument("--view-mvn", required=True, type=Path, help="view MVN file {'mean': [6], 'cov': [6,6]}")
    g.add_argument("--light-mvn", required=True, type=Path, help="light MVN file {'mean': [4], 'cov': [4,4]}")
    g.add_argument("--perceptual", default="lpips_vgg", choices=["lpips_vgg", "discriminator", "none"],
                   help="perceptual loss: LPIPS-VGG (needs --vgg), the GAN discriminator's features, or none")
    g.add_argument("--vgg", type=Path, help="torchvision VGG16 weights vgg16-397923af.pth (for lpips_vgg)")
    g.add_argument("--pretrain", type=Path, help="official pretrain file (netD/netA/netV/netL/netEnc)")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def build_model(args: argparse.Namespace, cfg):
    """Load the GAN, the perceptual net and the view/light distributions; build the model."""
    from .losses import PerceptualLoss
    from .sampling import ViewLightDistribution
    from .stylegan2 import load_stylegan2
    from .trainer import GAN2Shape

    ck = load_stylegan2(args.gan, device="cpu")
    perceptual = PerceptualLoss(args.perceptual, vgg_path=args.vgg, discriminator=ck.discriminator)
    vl = ViewLightDistribution.from_files(args.view_mvn, args.light_mvn)
    return GAN2Shape(cfg, ck.generator, ck.discriminator, perceptual, vl).to(args.device)


def load_target(name: str, image: Path, latent: Path, cfg, style_dim: int, mask: Path | None = None,
                prior: Path | None = None, gt_depth: Path | None = None, prior_name: str | None = None,
                category: str = "car", confidence: Path | None = None, gt_encoding: str = "unsup3d"):
    """Read one image and what belongs to it into a :class:`Target`."""
    from .data import load_array, load_depth, load_image, load_mask
    from .priors import make_prior
    from .stylegan2 import load_latent
    from .trainer import Target

    img, origin = load_image(image, cfg.image_size, cfg.crop)
    t = Target(name=name, image=img, latent=load_latent(latent, style_dim), origin_size=origin)
    if mask is not None:
        t.mask = load_mask(mask, cfg.image_size)
    if gt_depth is not None:
        t.gt_depth = load_depth(gt_depth, cfg.image_size, cfg.crop, encoding=gt_encoding)
    if prior is not None:
        t.prior = load_array(prior, cfg.image_size)
    elif prior_name is not None and prior_name != "none":
        conf = load_mask(confidence, cfg.image_size) if confidence is not None else None
        if t.mask is None and conf is None:
            raise SystemExit(f"--prior-name {prior_name} needs --mask (or --confidence)")
        t.prior = make_prior(prior_name, mask=t.mask, confidence=conf, category=category)
    return t


def load_scene(path: Path):
    """The :class:`SceneParams` of a synthetic test-set record (``<name>.json``)."""
    import json

    from .synthetic import SceneParams

    try:
        return SceneParams.from_dict(json.loads(Path(path).read_text())["params"])
    except FileNotFoundError:
        raise SystemExit(f"{path}: file not found")
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{path}: not a synthetic scene record ({type(e).__name__}: {e})")


def write_result(result, index: int, out: Path, renderer=None, save_model: dict | None = None) -> None:
    """Write one image's depth, albedo, view, light, metrics and previews into ``out``."""
    from .data import save_json, save_npy, save_png
    from .renderer import light_to_physical, view_to_physical

    out.mkdir(parents=True, exist_ok=True)
    i = index
    depth, recon_depth = result.depth[i], result.recon_depth[i]
    save_npy(depth, out / "depth.npy")
    save_npy(recon_depth, out / "recon_depth.npy")
    save_npy(result.albedo[i], out / "albedo.npy")
    save_png(result.albedo[i], out / "albedo.png")
    save_png(result.recon[i], out / "recon.png")
    lo, hi = float(depth.min()), float(depth.max())
    save_png(1 - (depth - lo) / max(hi - lo, 1e-8), out / "depth.png", (0.0, 1.0))
    save_png(result.normals[i].permute(2, 0, 1), out / "normal.png")
    k_a, k_d, direction = light_to_physical(result.light[i:i + 1])
    phys = view_to_physical(result.view[i:i + 1])
    save_json({"view_raw": result.view[i].tolist(),
               "rotation_rad": phys[0, :3].tolist(), "translation": phys[0, 3:].tolist()}, out / "view.json")
    save_json({"light_raw": result.light[i].tolist(), "ambient": float(k_a), "diffuse": float(k_d),
               "direction": direction[0].tolist()}, out / "light.json")
    save_json({"name": result.names[i], "seconds": result.seconds / len(result.names),
               "iterations": result.iterations, **result.metrics[i]}, out / "metrics.json")
    save_json(result.log, out / "log.json")
    if save_model is not None:
        from .io import atomic_torch_save
        atomic_torch_save(save_model, out / "model.pth")


# --------------------------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------------------------

def cmd_reconstruct(args: argparse.Namespace) -> int:
    """Instance-specific GAN2Shape on one image (or a group sharing one model; with --independent
    one model per image, all trained in one batch)."""
    from .trainer import Trainer

    cfg = method_config(args)
    n = len(args.image)
    if len(args.latent) != n:
        raise SystemExit(f"--latent needs one file per --image ({n}), got {len(args.latent)}")
    for opt in ("mask", "prior", "gt_depth", "name", "scene"):
        v = getattr(args, opt)
        if v is not None and len(v) != n:
            raise SystemExit(f"--{opt.replace('_', '-')} needs one value per --image ({n}), got {len(v)}")
    if args.independent and args.checkpoint is not None:
        raise SystemExit("--independent runs do not checkpoint; drop --checkpoint (or run the images separately)")
    if args.fast and not args.independent:
        raise SystemExit("--fast applies to --independent runs only")
    model = build_model(args, cfg)
    if args.independent:
        from .batched import BatchedTrainer
        trainer = BatchedTrainer(model, log_every=args.log_every, progress=args.progress, fast=args.fast)
    else:
        trainer = Trainer(model, log_every=args.log_every, progress=args.progress)
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
                                   gt_encoding=args.gt_encoding))
        if args.scene:
            targets[-1].scene = load_scene(args.scene[i])
    if cfg.projection == "oracle" and not args.scene:
        raise SystemExit("--projection oracle needs --scene (the synthetic test set's JSON records)")
    if args.independent:
        # K independent models in one batch; each image's outputs as its own run writes them
        if len({t.name for t in targets}) != n:
            raise SystemExit(f"--independent writes --out/<name>/ per image; names are not unique: "
                             f"{[t.name for t in targets]}")
        result = trainer.fit(targets)
        for i, t in enumerate(targets):
            write_result(result.image(i), 0, args.out / t.name,
                         save_model=result.states[i] if args.save_model else None)
        log.info("done: %s in %.1f s (%d independent models, one batch)", ", ".join(result.names),
                 result.seconds, n)
        return 0
    result = trainer.fit(targets, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                         stop_after=args.stop_after)
    if result.interrupted:
        log.warning("stopped after %d iterations; checkpoint %s", result.iterations, args.checkpoint)
        return 3
    for i, t in enumerate(targets):
        out = args.out if n == 1 else args.out / t.name
        write_result(result, i, out, save_model=model.nets_state() if args.save_model else None)
    if args.checkpoint is not None and not args.keep_checkpoint:
        args.checkpoint.unlink(missing_ok=True)  # only needed to resume an unfinished run
    log.info("done: %s in %.1f s", ", ".join(result.names), result.seconds)
    return 0


def cmd_prior(args: argparse.Namespace) -> int:
    """Build a shape prior from a mask / confidence map."""
    from .data import load_mask, save_npy, save_png
    from .priors import make_prior

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


def cmd_pretrain_depth(args: argparse.Namespace) -> int:
    """Pre-fit the depth net D to the priors of one or more images; write an official pretrain file."""
    from .data import load_array, load_image
    from .io import atomic_torch_save
    from .networks import build_networks
    from .trainer import GAN2Shape, MethodConfig, fit_depth_to_prior

    if len(args.image) != len(args.prior):
        raise SystemExit("--image and --prior need the same number of files")
    cfg = MethodConfig(image_size=args.image_size, seed=args.seed, lr=args.lr)
    torch.manual_seed(args.seed)
    images = torch.cat([load_image(p, args.image_size)[0] for p in args.image])
    priors = torch.cat([load_array(p, args.image_size) for p in args.prior])

    class _DepthOnly(torch.nn.Module):  # the depth part of GAN2Shape, without GAN or renderer
        def __init__(self):
            super().__init__()
            self.cfg = cfg
            self.nets = build_networks(cfg.image_size)
        predict_depth = GAN2Shape.predict_depth

    m = _DepthOnly()
    r = fit_depth_to_prior(m, images, priors, args.iters, args.tol, batch_size=args.batch_size)
    atomic_torch_save({"netD": m.nets["netD"].state_dict(), **r}, args.out)
    log.info("prior fit MSE %.3g after %d iterations", r["prior_mse"], r["prior_iters"])
    return 0


# Modules that register their own stage subcommands through ``add_cli(subparsers)``.
STAGE_MODULES: tuple[str, ...] = ("gan2shape.viz", "gan2shape.train_gan", "gan2shape.evaluate", "gan2shape.segmenter",
                                  "gan2shape.parsing", "gan2shape.download", "gan2shape.invert",
                                  "gan2shape.synthetic", "gan2shape.pretrain")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    p = argparse.ArgumentParser(prog="gan2shape", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    for name in STAGE_MODULES:
        importlib.import_module(name).add_cli(sub)

    r = sub.add_parser("reconstruct", help=cmd_reconstruct.__doc__)
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
    r.add_argument("--scene", nargs="+", type=Path, help="synthetic scene records (.json; for --projection oracle)")
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--checkpoint", type=Path, help="resumable training checkpoint")
    r.add_argument("--checkpoint-every", type=int, default=500)
    r.add_argument("--keep-checkpoint", action="store_true", help="keep the checkpoint after a finished run")
    r.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)
    r.add_argument("--log-every", type=int, default=50)
    r.add_argument("--save-model", action="store_true", help="also write the trained nets (model.pth)")
    r.add_argument("--progress", action="store_true", help="tqdm progress bar")
    r.add_argument("--independent", action="store_true",
                   help="several --image: train one independent model per image, all in one batch (as separate "
                        "runs would, outputs in --out/<name>/); default: one model shared by the group")
    r.add_argument("--fast", action="store_true",
                   help="with --independent: TF32 and bf16 autocast of the frozen GAN (default: exact fp32)")
    _add_method_flags(r)
    _add_model_flags(r)
    r.set_defaults(func=cmd_reconstruct)

    q = sub.add_parser("prior", help=cmd_prior.__doc__)
    q.add_argument("--name", required=True)
    q.add_argument("--mask", type=Path)
    q.add_argument("--confidence", type=Path)
    q.add_argument("--image-size", type=int, required=True)
    q.add_argument("--category", default="car")
    q.add_argument("--near", type=float, default=0.91)
    q.add_argument("--far", type=float, default=1.02)
    q.add_argument("--compat", action="store_true", help="reproduce the replication's out-of-range values")
    q.add_argument("--adjust", default="original", choices=["original", "replication"])
    q.add_argument("--out", required=True, type=Path)
    q.add_argument("--png", type=Path)
    q.set_defaults(func=cmd_prior)

    d = sub.add_parser("pretrain-depth", help=cmd_pretrain_depth.__doc__)
    d.add_argument("--image", nargs="+", required=True, type=Path)
    d.add_argument("--prior", nargs="+", required=True, type=Path)
    d.add_argument("--image-size", type=int, required=True)
    d.add_argument("--iters", type=int, default=1000)
    d.add_argument("--tol", type=float)
    d.add_argument("--batch-size", type=int)
    d.add_argument("--lr", type=float, default=1e-4)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", required=True, type=Path)
    d.set_defaults(func=cmd_pretrain_depth)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    torch.manual_seed(getattr(args, "seed", None) or 0)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
