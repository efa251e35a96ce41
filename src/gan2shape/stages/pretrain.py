"""``gan2shape pretrain``: joint pre-training of D, A, V, L, E over many images (METHOD §1.5, §8.1).

The original synface protocol starts every instance-specific run from ``synface_pretrain.pth``, a
model trained jointly on 200 training images (one image per iteration). Without it the view and
light networks start untrained, and one short synface stage (500/500/200) cannot teach them.
This stage writes such a file in the official key layout; ``--nets`` keeps a subset (e.g. without
netD, so that each instance run pre-fits its depth net to its own prior) and ``--half`` stores the
weights in float16 (they are loaded back into float32 networks).
"""

from __future__ import annotations

import argparse
import logging
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
    from .common import build_model, check_input, check_model_args, check_output_file, load_target, method_config
    from ..io import atomic_torch_save
    from ..method.pretrain import fit_joint
    from ..method.trainer import Trainer

    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    bad = sorted(set(nets) - set(NET_NAMES))
    if bad or not nets:
        raise SystemExit(f"--nets: unknown {bad} (choose from {', '.join(NET_NAMES)})")
    rows = _read_list(args.list)
    cfg = method_config(args)
    for img, lat, prior in rows:
        for f in (img, lat, prior):
            check_input(f, f"{args.list}:")
    check_model_args(args)
    check_output_file(args.out, "--out")
    check_output_file(args.log, "--log")
    if cfg.step3_pool == "original" and cfg.collect_iters < 2 * len(rows):
        raise SystemExit(f"--collect-iters {cfg.collect_iters} is below twice the number of images ({len(rows)})")
    model = build_model(args, cfg)
    trainer = Trainer(model, log_every=args.log_every, progress=args.progress)
    if args.pretrain is not None:
        trainer.load_pretrain(args.pretrain)
    targets = [load_target(img.stem, img, lat, cfg, model.G.style_dim, prior=prior, n_latent=model.G.n_latent)
               for img, lat, prior in rows]
    result = fit_joint(trainer, targets)
    state = model.nets_state()
    out = {k: {n: (t.half() if args.half and t.is_floating_point() else t) for n, t in state[k].items()}
           for k in nets}
    atomic_torch_save({**out, "iteration": result.iterations, "config": cfg.to_dict(),
                       "names": [t.name for t in targets], "seconds": result.seconds}, args.out)
    from ..data import save_json
    from .common import resolved_config
    save_json(resolved_config(args, cfg), args.out.with_name(args.out.stem + ".config.json"))
    if args.log is not None:
        from ..data import save_json
        save_json(result.log, args.log)
    log.info("pre-trained %s on %d images: %d iterations in %.1f s -> %s", ",".join(nets), len(targets),
             result.iterations, result.seconds, args.out)
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    from .common import add_method_flags, add_model_flags, positive_int

    p = subparsers.add_parser("pretrain", help=cmd_pretrain.__doc__)
    p.add_argument("--list", required=True, type=Path,
                   help="text file, one 'image latent [prior]' per line (the first image's prior seeds netD)")
    p.add_argument("--nets", default=",".join(NET_NAMES), help="networks to write (comma-separated)")
    p.add_argument("--half", action="store_true", help="store float16 weights (half the file size)")
    p.add_argument("--out", required=True, type=Path, help="pretrain file (official keys netD, netA, ...)")
    p.add_argument("--log", type=Path, help="training log (JSON)")
    p.add_argument("--log-every", type=positive_int, default=100)
    p.add_argument("--progress", action="store_true")
    add_method_flags(p)
    add_model_flags(p)
    p.set_defaults(func=cmd_pretrain)
    return p
