"""How far does ONE optimiser update move a pre-fitted depth net? (diagnostic of README "Results")

Loads a ``reconstruct --checkpoint`` file written at the start of step 3 (``--stop-after`` = pre-fit
+ step 1 + step 2 iterations) and, from the same weights each time, applies one update of a freshly
created optimiser to the depth net D alone under several losses: the step-3 loss, the target's
step-1 loss, the pre-fit MSE to the prior, and a random gradient (incoherent signs). Prints SIDE
(×10⁻²) and MAD of the target's depth before and after, and the mean/max depth change.

    python bench/diag_first_step.py --checkpoint ck.pth --args-file args.txt [--lr 1e-4 1e-5]

``args.txt`` holds the ``gan2shape reconstruct`` flags of that run (one image, with --gt-depth).
"""

import argparse

import torch
import torch.nn.functional as F

from gan2shape.cli import build_parser
from gan2shape.io import safe_torch_load
from gan2shape.method.config import NET_NAMES
from gan2shape.method.group import TargetState
from gan2shape.stages.common import build_model, load_target, method_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--args-file", required=True)
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-4, 1e-5])
    ap.add_argument("--optimizer", choices=["adam", "radam"], nargs="+", default=["adam", "radam"])
    a = ap.parse_args()
    args = build_parser().parse_args(["reconstruct", *open(a.args_file).read().split(), "--out", "unused"])
    cfg = method_config(args)
    model = build_model(args, cfg)
    target = load_target("target", args.image[0], args.latent[0], cfg, model.G.style_dim, prior=args.prior[0],
                         gt_depth=args.gt_depth[0], gt_encoding=args.gt_encoding)
    saved = safe_torch_load(a.checkpoint)
    model.load_state_dict(saved["model"])
    start = {k: v.clone() for k, v in model.nets["netD"].state_dict().items()}
    state = TargetState.new(model.device)
    state.load_state_dict(saved["targets"][0])
    target.gan_image = model.gan_image(target)
    proj, pmask = state.pool.images[:cfg.n_p], state.pool.masks[:cfg.n_p]

    def accuracy():
        with torch.no_grad():
            out = model.step1(target)
        return out.metrics["side"] * 100, out.metrics["mad"], out.depth

    side0, mad0, depth0 = accuracy()
    print(f"start: SIDE {side0:.3f} MAD {mad0:.1f}")
    losses = {
        "step3": lambda: model.step3(target, proj, pmask)[0],
        "target_step1": lambda: model.step1(target, grad_nets=("netD",)).loss,
        "prior_mse": lambda: F.mse_loss(model.predict_depth(target.image, border=False), target.prior),
        "random": None,
    }
    torch.manual_seed(0)
    for name, loss_fn in losses.items():
        for opt_name in a.optimizer:
            for lr in a.lr:
                model.nets["netD"].load_state_dict(start)
                for n in NET_NAMES:
                    model.nets[n].zero_grad(set_to_none=True)
                cls = torch.optim.RAdam if opt_name == "radam" else torch.optim.Adam
                opt = cls(model.nets["netD"].parameters(), lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
                if loss_fn is None:
                    for p in model.nets["netD"].parameters():
                        p.grad = torch.randn_like(p)
                else:
                    loss_fn().backward()
                opt.step()
                side, mad, depth = accuracy()
                d = (depth - depth0).abs()
                print(f"{name:13s} {opt_name:5s} lr {lr:.0e}: SIDE {side:.3f} MAD {mad:.1f} "
                      f"|Δdepth| mean {d.mean():.5f} max {d.max():.4f}")


if __name__ == "__main__":
    main()
