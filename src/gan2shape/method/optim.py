"""The method's optimisers: Adam with classic L2 weight decay, re-created at every step switch (original)
or one persistent optimiser per step (replication) (METHOD §1.1; EXTENSIONS §2.1)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .config import STEP_NETS, MethodConfig


def make_optimizer(params, cfg: MethodConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """Adam with classic L2 weight decay (not AdamW), as every optimiser of the method.

    ``cfg.optimizer = "radam"`` (our option, not the original's) uses rectified Adam with the same
    lr, betas and decay. Why: the method re-creates its optimisers at every step switch, and a fresh
    Adam's first update is lr·sign(g) for every weight. At a converged depth net these signs are
    coherent, so that one update moves the whole depth map: from a depth pre-fitted to the ground
    truth, one step-3 update takes SIDE from 0.28 to 2.5 ×10⁻² (one step on the pre-fit loss itself:
    to 5.1), erasing the prior before the projected samples can act. RAdam takes plain momentum
    steps, proportional to the gradient, until its second-moment estimate is reliable.
    """
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "radam":
        return torch.optim.RAdam(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def step_optimizers(nets: nn.ModuleDict, step: int, cfg: MethodConfig, persistent: dict | None = None,
                    names: Sequence[str] | None = None) -> dict[str, torch.optim.Optimizer]:
    """The optimisers of ``step`` (0 = depth pre-fit) over the nets it trains (``names``, default
    ``STEP_NETS[step]``): one fresh optimiser per net, or with ``persistent`` (a dict kept by the
    caller) one optimiser per step over all of ``STEP_NETS[step]``, created on first use and kept
    across stages (replication); nets outside ``names`` then get no gradient and are not updated."""

    def lr(name: str) -> float:  # the option of a slower depth net in step 3 (None: every net at lr)
        return cfg.depth_lr_step3 if step == 3 and name == "netD" and cfg.depth_lr_step3 is not None else cfg.lr

    if persistent is not None:
        if step not in persistent:
            groups = [{"params": list(nets[n].parameters()), "lr": lr(n)} for n in STEP_NETS[step]]
            persistent[step] = make_optimizer(groups, cfg)
        return {"all": persistent[step]}
    return {n: make_optimizer(nets[n].parameters(), cfg, lr(n)) for n in (names or STEP_NETS[step])}
