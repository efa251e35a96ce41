"""A group: K ≥ 1 images trained together, and each image's training state (METHOD §1.3, §5.6)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Sequence

import torch

from .model import Step1Output, Target
from .sampling import CanonicalState, ProjectionPool
from .stacked import stack_targets

_CANONICAL = ("depth", "albedo", "normals", "k_a", "k_d")


@dataclass
class TargetState:
    """One image's state across steps (checkpointed): what its last step-1 forward left for step 2,
    its canonical object mask, its pool of projected samples, its latest ground-truth metrics."""

    pool: ProjectionPool
    canonical: CanonicalState | None = None   # 1-image canonical depth, albedo, normals, k_a, k_d
    canon_mask: torch.Tensor | None = None    # 1×1×S×S object mask warped into the canonical frame
    last_metrics: dict | None = None

    @classmethod
    def new(cls, device) -> "TargetState":
        return cls(pool=ProjectionPool(device))

    def state_dict(self, keep_pool: bool = True) -> dict:
        c = self.canonical
        return {"canonical": None if c is None else {k: getattr(c, k) for k in _CANONICAL},
                "canon_mask": self.canon_mask, "last_metrics": self.last_metrics,
                "pool": self.pool.state_dict() if keep_pool else None}

    def load_state_dict(self, d: dict) -> None:
        self.canonical = None if d["canonical"] is None else CanonicalState(**d["canonical"])
        self.canon_mask = d["canon_mask"]
        self.last_metrics = d["last_metrics"]
        if d["pool"] is not None:
            self.pool.load_state_dict(d["pool"])


class Group:
    """K images and the model that trains them: a shared :class:`GAN2Shape`, or with ``independent``
    a :class:`StackedGAN2Shape` holding one model per image. ``target`` stacks the K targets;
    ``gens[i]`` is image i's random generator (all the same object when shared)."""

    def __init__(self, model, targets: Sequence[Target], states: Sequence[TargetState],
                 gens: Sequence[torch.Generator], independent: bool):
        if not (len(targets) == len(states) == len(gens)):
            raise ValueError(f"{len(targets)} targets, {len(states)} states and {len(gens)} generators")
        self.model = model
        self.targets = list(targets)
        self.states = list(states)
        self.gens = list(gens)
        self.independent = independent
        self.names = [t.name for t in targets]
        self._target: Target | None = None

    @property
    def target(self) -> Target:
        """The K targets stacked (built on first use: joint pre-training only ever trains subgroups)."""
        if self._target is None:
            self._target = self.targets[0] if len(self.targets) == 1 else stack_targets(self.targets)
        return self._target

    def prediction_target(self) -> Target:
        """The K targets stacked for the final predictions, which need no prior (joint pre-training
        gives a prior to the first image only)."""
        if len(self.targets) == 1 or all(t.prior is not None for t in self.targets):
            return self.target
        return stack_targets([replace(t, prior=None) for t in self.targets])

    def __len__(self) -> int:
        return len(self.targets)

    def subgroup(self, idx: Sequence[int]) -> "Group":
        """The images ``idx`` of a shared group (same model, same state objects)."""
        if self.independent:
            raise ValueError("independent models cannot be split into subgroups")
        return Group(self.model, [self.targets[i] for i in idx], [self.states[i] for i in idx],
                     [self.gens[i] for i in idx], False)

    def unique_gens(self) -> list[torch.Generator]:
        """The distinct generators, in order of first use (one when shared)."""
        out: list[torch.Generator] = []
        for g in self.gens:
            if all(g is not h for h in out):
                out.append(g)
        return out

    # -- the state the steps exchange --------------------------------------------------------------
    def set_canonical(self, out: Step1Output) -> None:
        """Keep each image's unflipped canonical quantities of a step-1 forward (detached)."""
        for i, st in enumerate(self.states):
            st.canonical = CanonicalState(*(getattr(out, key)[i:i + 1].detach() for key in _CANONICAL))

    def canonical(self, use_mask: bool) -> CanonicalState:
        """The K images' canonical states stacked, with their canonical masks when ``use_mask``."""
        parts = [st.canonical for st in self.states]
        if any(p is None for p in parts):
            raise RuntimeError(f"{', '.join(self.names)}: step 2 needs a step-1 forward first")
        state = parts[0] if len(parts) == 1 else CanonicalState(
            *(torch.cat([getattr(p, key) for p in parts]) for key in _CANONICAL))
        masks = [st.canon_mask for st in self.states]
        mask = None
        if use_mask and all(m is not None for m in masks):
            mask = masks[0] if len(masks) == 1 else torch.cat(masks)
        return replace(state, canon_mask=mask)

    def needs_canon_mask(self) -> bool:
        return any(st.canon_mask is None for st in self.states)

    def set_canon_mask(self, masks: torch.Tensor, only_missing: bool = False) -> None:
        for i, st in enumerate(self.states):
            if not only_missing or st.canon_mask is None:
                st.canon_mask = masks[i:i + 1]

    def set_metrics(self, image_metrics: list[dict] | None) -> None:
        if image_metrics:
            for st, m in zip(self.states, image_metrics):
                st.last_metrics = m

    def has_metrics(self) -> bool:
        return all(st.last_metrics for st in self.states)


def fingerprint(targets: Sequence[Target], initial_state: dict) -> str:
    """A hash of what a run starts from: every target's name and tensors, and the initial nets."""
    h = hashlib.sha256()

    def add(x):
        if x is None:
            h.update(b"-")
        elif isinstance(x, torch.Tensor):
            h.update(str((x.dtype, tuple(x.shape))).encode())
            h.update(x.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            for k in sorted(x):
                h.update(str(k).encode())
                add(x[k])
        else:
            h.update(repr(x).encode())

    for t in targets:
        add(t.name)
        for key in ("image", "latent", "mask", "prior", "gt_depth", "origin_size"):
            add(getattr(t, key))
    add(initial_state)
    return h.hexdigest()
