"""What the method stages share: argparse types that validate numbers, checks of inputs and outputs
made before any model is built, the method and model flag groups, the config they resolve to, model
construction, target loading and the per-image result files."""

from __future__ import annotations

import argparse
import logging
import math
import os
from dataclasses import replace
from pathlib import Path

import torch

log = logging.getLogger("gan2shape")


# -- argparse types: every numeric flag is checked when the command line is parsed -------------------
def _number(kind, s: str, low: float | None, strict: bool, what: str):
    try:
        v = kind(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {s!r}")
    if low is not None and (v <= low if strict else v < low):
        raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
    return v


def positive_int(s: str) -> int:
    """An integer ≥ 1."""
    return _number(int, s, 0, True, "an integer >= 1")


def nonneg_int(s: str) -> int:
    """An integer ≥ 0."""
    return _number(int, s, 0, False, "an integer >= 0")


def positive_float(s: str) -> float:
    """A finite number > 0."""
    return _number(float, s, 0.0, True, "a number > 0")


def nonneg_float(s: str) -> float:
    """A finite number ≥ 0."""
    return _number(float, s, 0.0, False, "a number >= 0")


def finite_float(s: str) -> float:
    """Any finite number."""
    return _number(float, s, None, False, "a number")


def stage_iters(s: str) -> tuple[int, int, int]:
    """``N1,N2,N3``: three iteration counts ≥ 0."""
    parts = s.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected N1,N2,N3 (three integers >= 0), got {s!r}")
    return tuple(_number(int, v.strip(), 0, False, "N1,N2,N3 (three integers >= 0)") for v in parts)


# -- checks made before any model is built ----------------------------------------------------------
def check_input(path: Path | None, flag: str) -> None:
    """``path`` (given with ``flag``) must be an existing file."""
    if path is not None and not Path(path).is_file():
        raise SystemExit(f"{flag} {path}: file not found")


def _check_writable_parent(path: Path, flag: str) -> None:
    parent = path.parent
    while not parent.exists():  # the nearest folder that exists must let us create the rest
        parent = parent.parent
    if not parent.is_dir():
        raise SystemExit(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SystemExit(f"{flag} {path}: folder {parent} is not writable")


def check_output_file(path: Path | None, flag: str) -> None:
    """``path`` (an output file given with ``flag``) can be written: not a folder, in a writable
    folder. Stale temporaries of it from a killed run are removed."""
    if path is None:
        return
    from ..io import sweep_stale

    path = Path(path)
    if path.is_dir():
        raise SystemExit(f"{flag} {path}: is a folder; expected a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise SystemExit(f"{flag} {path}: exists and is not writable")
    _check_writable_parent(path, flag)
    sweep_stale(path)


def check_output_dir(path: Path | None, flag: str) -> None:
    """``path`` (an output folder given with ``flag``) can be created or written: not an existing
    file, writable. Stale temporaries of it from a killed run are removed."""
    if path is None:
        return
    from ..io import sweep_stale

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SystemExit(f"{flag} {path}: exists and is a file; expected a folder")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise SystemExit(f"{flag} {path}: folder is not writable")
    _check_writable_parent(path, flag)
    sweep_stale(path)


def check_model_args(args: argparse.Namespace) -> None:
    """The model files exist and the perceptual loss has what it needs (before anything is loaded)."""
    check_input(args.gan, "--gan")
    check_input(args.view_mvn, "--view-mvn")
    check_input(args.light_mvn, "--light-mvn")
    if args.perceptual == "lpips_vgg" and args.vgg is None:
        raise SystemExit("--perceptual lpips_vgg needs --vgg (torchvision's vgg16-397923af.pth); "
                         "or use --perceptual discriminator / none")
    check_input(args.vgg, "--vgg")
    check_input(args.pretrain, "--pretrain")


def bool_flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction,
                   default=None, help=help + " (default: preset)")


def add_method_flags(p: argparse.ArgumentParser) -> None:
    from ..method.config import PRESETS, SCHEDULES

    g = p.add_argument_group("method (default: the preset's value)")
    g.add_argument("--preset", default="car", choices=sorted(PRESETS), help="dataset preset of the original configs")
    g.add_argument("--image-size", type=positive_int, help="working resolution S")
    g.add_argument("--np", dest="n_p", type=positive_int, help="N_p: pseudo/projected samples per iteration")
    g.add_argument("--collect-iters", type=positive_int, help="no-grad step-2 forwards filling the step-3 pool")
    g.add_argument("--schedule", choices=sorted(SCHEDULES) + ["init_iterations"], help="stage schedule")
    g.add_argument("--num-stages", type=positive_int, help="keep only the first K stages of the schedule")
    g.add_argument("--stage-iters", type=stage_iters, help="N1,N2,N3: override the iteration counts of every stage")
    g.add_argument("--prior-iters", type=nonneg_int, help="depth pre-fit iterations (0: none)")
    g.add_argument("--prior-tol", type=nonneg_float, help="stop the pre-fit once its MSE is below this")
    g.add_argument("--crop", type=nonneg_int, help="centre crop before resizing (cat/synface: 170; 0: none)")
    g.add_argument("--lam-perc", type=nonneg_float, help="perceptual weight (original 0.5, replication 1)")
    g.add_argument("--lr", type=positive_float, help="Adam learning rate of every network (original 1e-4)")
    g.add_argument("--weight-decay", type=nonneg_float, help="Adam L2 weight decay (original 5e-4)")
    g.add_argument("--depth-lr-step3", type=nonneg_float,
                   help="our option: learning rate of the depth net in step 3 (default: --lr, as the original)")
    g.add_argument("--f1-d", type=nonneg_int, help="mapping layers after the offset injection point (F1_d)")
    g.add_argument("--view-scale", type=finite_float, help="yaw scale of sampled views")
    g.add_argument("--step3-pool", choices=["original", "last_batch"], help="step-3 projected samples")
    g.add_argument("--optimizers", choices=["recreate", "persistent"], help="optimiser policy")
    g.add_argument("--optimizer", choices=["adam", "radam"],
                   help="adam (original) | radam: rectified Adam, no lr·sign(g) first step after each re-creation")
    g.add_argument("--projection", choices=["gan", "pseudo", "oracle", "mesh_oracle"],
                   help="diagnostic: step 3 sees the pseudo samples ('pseudo', no GAN information), the "
                        "ground truth rendered by the method's own renderer like them ('oracle', a perfect GAN; "
                        "needs --scene), or the v1 scene mesh ('mesh_oracle', model-mismatched)")
    g.add_argument("--step3-viewlight", choices=["predicted", "pseudo"],
                   help="diagnostic: step 3 renders each projected sample in V(Q), L(Q) ('predicted', the method) or "
                        "in the view and light of the pseudo sample it was projected from ('pseudo'; with "
                        "--projection oracle the true ones)")
    g.add_argument("--vl-warmup", type=nonneg_int,
                   help="our option: N step-3 iterations training only V and L (D, A frozen) before the first step 3")
    g.add_argument("--net-width", type=positive_float,
                   help="our option: channel multiplier of D, A, V, L, E (1: the original; a pretrain file needs "
                        "the width it was trained with)")
    g.add_argument("--seed", type=nonneg_int, help="random seed")
    g.add_argument("--raster-bin-size", type=nonneg_int,
                   help="pytorch3d bin size (default: naive on the CPU, pytorch3d's bin size on CUDA; 0: naive)")
    g.add_argument("--raster-max-faces-per-bin", type=positive_int,
                   help="faces per bin (default: the fullest bin, counted per call, never overflows); a value that "
                        "would overflow is an error")
    bool_flag(g, "relative-enc", "encode E(x) − E(G(w))")
    bool_flag(g, "use-mask", "use the object mask for pseudo samples")


def add_checkpoint_flags(p: argparse.ArgumentParser, every: int) -> None:
    """``--checkpoint`` (a resumable training file), ``--checkpoint-every``, ``--keep-checkpoint`` and the
    tests' hidden ``--stop-after`` (iterations of this call)."""
    p.add_argument("--checkpoint", type=Path, help="resumable training checkpoint (an interrupted run resumes from it)")
    p.add_argument("--checkpoint-every", type=positive_int, default=every, help="iterations between checkpoints")
    p.add_argument("--keep-checkpoint", action="store_true", help="keep the checkpoint after a finished run")
    p.add_argument("--stop-after", type=nonneg_int, help=argparse.SUPPRESS)


def method_config(args: argparse.Namespace):
    """Build the :class:`MethodConfig` from the preset and the flags that were given."""
    from ..method.config import SCHEDULES, Stage, init_iterations_schedule, preset

    names = ["image_size", "n_p", "collect_iters", "prior_iters", "prior_tol", "crop", "lam_perc", "lr",
             "weight_decay", "depth_lr_step3", "f1_d",
             "view_scale", "step3_pool", "optimizers", "optimizer", "projection", "step3_viewlight", "vl_warmup", "net_width", "joint_streams",
             "seed", "relative_enc", "use_mask", "raster_bin_size", "raster_max_faces_per_bin"]
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
        sched = (sched + [sched[-1]] * args.num_stages)[:args.num_stages]
    if args.stage_iters:
        n1, n2, n3 = args.stage_iters
        sched = [replace(s, n1=n1, n2=n2 if s.n2 else 0, n3=n3 if s.n3 else 0) for s in sched]
    cfg.schedule = [s if isinstance(s, Stage) else Stage(**s) for s in sched]
    return cfg


def add_mode_flags(p: argparse.ArgumentParser) -> None:
    """``--mode faithful|fast`` (and its alias ``--fast``): the training loop's kernels (docs/speed.md)."""
    p.add_argument("--mode", choices=["faithful", "fast"], default="faithful",
                   help="faithful: exact fp32 (default); fast: the same loop with bf16 autocast of the frozen GAN, "
                        "perceptual net and encoders, efficient StyleGAN2 ops, TF32 (never in the geometry), "
                        "channels-last, and host syncs only every --log-every iterations (docs/speed.md)")
    p.add_argument("--fast", dest="mode", action="store_const", const="fast", help="alias of --mode fast")


def add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--gan", required=True, type=Path, help="StyleGAN2 checkpoint (official rosinality format)")
    g.add_argument("--view-mvn", required=True, type=Path, help="view MVN file {'mean': [6], 'cov': [6,6]}")
    g.add_argument("--light-mvn", required=True, type=Path, help="light MVN file {'mean': [4], 'cov': [4,4]}")
    g.add_argument("--perceptual", default="discriminator", choices=["lpips_vgg", "discriminator", "none"],
                   help="perceptual loss: LPIPS-VGG (needs --vgg), the GAN discriminator's features, or none")
    g.add_argument("--vgg", type=Path, help="torchvision VGG16 weights vgg16-397923af.pth (for lpips_vgg)")
    g.add_argument("--pretrain", type=Path, help="official pretrain file (netD/netA/netV/netL/netEnc)")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def build_model(args: argparse.Namespace, cfg):
    """Load the GAN, the perceptual net and the view/light distributions; build the model."""
    from ..method.losses import PerceptualLoss
    from ..method.sampling import ViewLightDistribution
    from ..gan.stylegan2 import load_stylegan2
    from ..diagnostics import install_projection
    from ..method.model import GAN2Shape

    ck = load_stylegan2(args.gan, device="cpu")
    if not 0 <= cfg.f1_d <= ck.generator.n_mlp:
        raise SystemExit(f"--gan {args.gan}: its mapping network has {ck.generator.n_mlp} layers, fewer than "
                         f"F1_d = {cfg.f1_d} (preset {args.preset} or --f1-d); a GAN of another architecture? "
                         f"(set --f1-d <= {ck.generator.n_mlp})")
    perceptual = PerceptualLoss(args.perceptual, vgg_path=args.vgg, discriminator=ck.discriminator)
    vl = ViewLightDistribution.from_files(args.view_mvn, args.light_mvn)
    return install_projection(GAN2Shape(cfg, ck.generator, ck.discriminator, perceptual, vl).to(args.device))


def load_target(name: str, image: Path, latent: Path, cfg, style_dim: int, mask: Path | None = None,
                prior: Path | None = None, gt_depth: Path | None = None, prior_name: str | None = None,
                category: str = "car", confidence: Path | None = None, gt_encoding: str = "unsup3d",
                n_latent: int | None = None):
    """Read one image and what belongs to it into a :class:`Target` (a W+ latent must have
    ``n_latent`` layers when given)."""
    from ..data import load_array, load_depth, load_image, load_mask
    from ..method.priors import make_prior
    from ..gan.stylegan2 import load_latent
    from ..method.model import Target

    img, origin = load_image(image, cfg.image_size, cfg.crop)
    t = Target(name=name, image=img, latent=load_latent(latent, style_dim, n_latent), origin_size=origin)
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

    from ..world.scenes import SceneParams

    try:
        return SceneParams.from_dict(json.loads(Path(path).read_text())["params"])
    except FileNotFoundError:
        raise SystemExit(f"{path}: file not found")
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{path}: not a synthetic scene record ({type(e).__name__}: {e})")


def resolved_config(args: argparse.Namespace, cfg) -> dict:
    """The configuration a run actually used: the resolved method config and every flag."""
    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v if v is None or isinstance(v, (bool, int, float, str)) else str(v)

    flags = {k: plain(v) for k, v in sorted(vars(args).items()) if k != "func"}
    return {"command": getattr(args, "command", None), "method": cfg.to_dict(), "flags": flags}


def write_result(result, index: int, out: Path, renderer=None, save_model: dict | None = None,
                 config: dict | None = None) -> None:
    """Write one image's depth, albedo, view, light, metrics, previews and the run's resolved
    ``config.json`` into the folder ``out`` (all or nothing: through a temporary folder renamed
    into place)."""
    from ..io import atomic_dir

    with atomic_dir(out) as tmp:
        _write_result_files(result, index, tmp, save_model, config)


def _write_result_files(result, i: int, out: Path, save_model: dict | None, config: dict | None) -> None:
    from ..data import save_json, save_npy, save_png
    from ..method.renderer import light_to_physical, view_to_physical

    if config is not None:
        save_json(config, out / "config.json")

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
        from ..io import atomic_torch_save
        atomic_torch_save(save_model, out / "model.pth")
