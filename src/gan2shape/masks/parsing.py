"""Object masks and confidences of real images from the official parsers (METHOD §7, EXTENSIONS §1.1).

Per category (:data:`SPECS`): which parser, its input size, its input normalisation and which
labels make the object. Pipeline (:func:`parse`):

1. Enlarge the ``B×3×S×S`` image in [-1, 1] bilinearly (``align_corners=False``) to the parser
   size (512 BiSeNet, 473 PSPNet).
2. Normalise: ``faithful=True`` copies the original (none for BiSeNet and the church PSPNet — the
   [-1, 1] image goes in as it is; ImageNet mean/std on [0, 1] for car/cat); ``faithful=False``
   applies the parser's proper ImageNet normalisation to every category.
3. Run the net in eval mode (BiSeNet: main output); labels = argmax over classes. With
   ``rule="replication"`` the face hair channel (17) is dropped before the argmax.
4. Mask at parser size by :func:`label_map_to_mask` (original: face 1 / 0.5 / 0 per label; the
   replication: face labels 1..13), then shrunk to S with area averaging (soft borders).
5. Confidence at parser size, shrunk the same way: ``"softmax"`` (default) = summed softmax
   probability of the object class(es); ``"logit_minmax"`` (the replication's compat mode) = raw
   logit of the class channel(s) (faces: sum of channels 1..12) min-max normalised per image.
6. An image with an all-zero mask gets an all-ones mask and a warning (``empty_fallback``).
"""

from __future__ import annotations

import argparse
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io import CheckpointError, safe_torch_load
from ..utils import resize
from .bisenet import BiSeNet
from .pspnet import PSPNet

logger = logging.getLogger("gan2shape.masks")

CATEGORIES = {"face", "synface", "car", "cat", "church", "horse"}
RULES = ("original", "replication")
CONFIDENCE_MODES = ("softmax", "logit_minmax")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

HAIR = 17  # CelebAMask-HQ hair label
FACE_HALF = (14, 15, 17, 18)  # neck, necklace, hair, hat: 0.5 in the original face mask
_FACE = tuple(range(1, 14))  # skin … lower lip


@dataclass(frozen=True)
class ParserSpec:
    """How one category is parsed.

    ``normalize`` is the original's (faithful) input normalisation; ``faithful=False`` always uses
    ImageNet. ``classes``: labels that make the object (mask union, softmax confidence sum);
    ``compat_classes``: logit channels summed by the replication's ``logit_minmax`` confidence.
    """

    net: str  # 'bisenet' | 'pspnet_voc' | 'pspnet_ade20k'
    n_classes: int
    input_size: int
    normalize: str  # 'none' | 'imagenet'
    classes: tuple[int, ...]
    compat_classes: tuple[int, ...]
    half_classes: tuple[int, ...] = ()  # original face rule: weight 0.5

    def normalization(self, faithful: bool = True) -> str:
        return self.normalize if faithful else "imagenet"


SPECS: dict[str, ParserSpec] = {
    "face": ParserSpec("bisenet", 19, 512, "none", _FACE, tuple(range(1, 13)), FACE_HALF),
    "synface": ParserSpec("bisenet", 19, 512, "none", tuple(range(1, 15)), tuple(range(1, 15))),
    "car": ParserSpec("pspnet_voc", 21, 473, "imagenet", (7,), (7,)),
    "cat": ParserSpec("pspnet_voc", 21, 473, "imagenet", (8,), (8,)),
    "church": ParserSpec("pspnet_ade20k", 150, 473, "none", (1,), (1,)),
    "horse": ParserSpec("pspnet_voc", 21, 473, "none", (13,), (13,)),
}


def spec(category: str) -> ParserSpec:
    if category not in SPECS:
        raise ValueError(f"unknown parsing category {category!r}; expected one of {sorted(CATEGORIES)}")
    return SPECS[category]


def build_parser_net(category: str, device: str | torch.device = "cpu", use_aux: bool = True) -> nn.Module:
    """The (randomly initialised) parser network of ``category``, in eval mode."""
    s = spec(category)
    with torch.device(device):
        net = BiSeNet(s.n_classes) if s.net == "bisenet" else PSPNet(s.n_classes, use_aux=use_aux)
    return net.eval()


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def _state_dict_of(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: expected a state_dict or {{'state_dict': ...}}, got {type(obj).__name__}")
    sd = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        sd[k[len("module."):] if k.startswith("module.") else k] = v
    return sd


def load_parser(category: str, checkpoint_path, device: str | torch.device = "cpu") -> nn.Module:
    """Load the official parser of ``category`` (bare state_dict or ``{'state_dict': ...}``, optional
    ``module.`` prefix) strictly; frozen, eval mode, on ``device``. A PSPNet file without the
    auxiliary head is accepted (the head is then left out). Raises :class:`CheckpointError` naming
    the file and the first mismatched keys."""
    path = Path(checkpoint_path)
    sd = _state_dict_of(safe_torch_load(path), path)
    s = spec(category)
    has_aux = any(k.startswith("aux.") for k in sd)
    net = build_parser_net(category, "meta", use_aux=has_aux)  # no init cost, no allocation
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {want[k]})" for k in want
             if k in sd and tuple(sd[k].shape) != want[k]]
    if missing or unexpected or wrong:
        parts = []
        for what, lst in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if lst:
                more = f" (+{len(lst) - 5} more)" if len(lst) > 5 else ""
                parts.append(f"{len(lst)} {what}: {', '.join(lst[:5])}{more}")
        raise CheckpointError(f"{path}: not a {s.net} checkpoint for {category!r} "
                              f"({s.n_classes} classes): " + "; ".join(parts))
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    try:
        net.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:  # pragma: no cover -- the checks above catch layout errors first
        raise CheckpointError(f"{path}: {e}") from e
    net = net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------

def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def logits_to_labels(logits: torch.Tensor, category: str, rule: str = "original") -> torch.Tensor:
    """Argmax labels ``B×1×H×W`` of ``B×C×H×W`` logits; the replication's face rule drops the hair
    channel before the argmax (hair pixels fall to their second-best class)."""
    _check_rule(rule)
    s = spec(category)
    if logits.dim() != 4 or logits.shape[1] != s.n_classes:
        raise ValueError(f"{category}: expected logits B×{s.n_classes}×H×W, got {tuple(logits.shape)}")
    if rule == "replication" and category == "face":
        logits = logits.clone()
        logits[:, HAIR] = float("-inf")
    return logits.argmax(1, keepdim=True)


def label_map_to_mask(labels: torch.Tensor, category: str, rule: str = "original") -> torch.Tensor:
    """Float mask (same shape as ``labels``) from a label map.

    original: face 1 on 1..13, 0.5 on 14, 15, 17, 18, 0 on 0 and 16; synface 1 on 1..14; car 7;
    cat 8; church 1 (ADE20K building); horse 13. replication: face 1 on 1..13 (hair must have been
    dropped by :func:`logits_to_labels`); other categories as the original.
    """
    _check_rule(rule)
    s = spec(category)
    labels = labels.long()
    mask = torch.isin(labels, torch.tensor(s.classes, device=labels.device)).float()
    if rule == "original" and s.half_classes:
        mask = mask + 0.5 * torch.isin(labels, torch.tensor(s.half_classes, device=labels.device)).float()
    return mask


def confidence_map(logits: torch.Tensor, category: str, mode: str = "softmax") -> torch.Tensor:
    """``B×1×H×W`` confidence in [0, 1] at the logits' resolution (see the module docstring)."""
    if mode not in CONFIDENCE_MODES:
        raise ValueError(f"confidence must be one of {CONFIDENCE_MODES}, got {mode!r}")
    s = spec(category)
    logits = logits.float()
    if mode == "softmax":
        return logits.softmax(1)[:, list(s.classes)].sum(1, keepdim=True).clamp(0, 1)
    z = logits[:, list(s.compat_classes)].sum(1, keepdim=True)
    lo = z.amin(dim=(2, 3), keepdim=True)
    span = z.amax(dim=(2, 3), keepdim=True) - lo
    # a constant map has no range: confidence 0
    return torch.where(span > 0, (z - lo) / span.clamp(min=torch.finfo(z.dtype).tiny), torch.zeros_like(z))


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------

def normalize_input(x: torch.Tensor, mode: str) -> torch.Tensor:
    """[-1, 1] image → parser input: as it is (``'none'``) or [0, 1] then ImageNet mean/std."""
    if mode == "none":
        return x
    if mode != "imagenet":
        raise ValueError(f"normalize must be 'none' or 'imagenet', got {mode!r}")
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x + 1) / 2 - mean) / std


@torch.no_grad()
def parser_logits(net: nn.Module, category: str, images: torch.Tensor, faithful: bool = True,
                  input_size: int | None = None) -> torch.Tensor:
    """Raw class logits ``B×C×P×P`` at parser resolution ``P`` (the main head for BiSeNet)."""
    s = spec(category)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be B×3×S×S in [-1, 1], got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    size = input_size or s.input_size
    dev = next(net.parameters()).device
    x = images.to(dev, torch.float32)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = normalize_input(x, s.normalization(faithful))
    was_training = net.training
    net.eval()
    try:
        out = net(x)
    finally:
        net.train(was_training)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.shape[1] != s.n_classes:
        raise ValueError(f"{category}: parser returned {out.shape[1]} classes, expected {s.n_classes}")
    return out.float()


def class_probabilities(net: nn.Module, category: str, images: torch.Tensor, faithful: bool = False,
                        input_size: int | None = None) -> torch.Tensor:
    """The REC parser interface: per-pixel class probabilities ``B×C×P×P`` (properly normalised
    input by default)."""
    return parser_logits(net, category, images, faithful, input_size).softmax(1)


@torch.no_grad()
def parse(net: nn.Module, category: str, images: torch.Tensor, faithful: bool = True, input_size: int | None = None,
          rule: str = "original", confidence: str = "softmax",
          empty_fallback: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Object mask and confidence, both ``B×1×S×S`` float32 in [0, 1] on the images' device."""
    _check_rule(rule)
    if confidence not in CONFIDENCE_MODES:
        raise ValueError(f"confidence must be one of {CONFIDENCE_MODES}, got {confidence!r}")
    S = tuple(images.shape[-2:])
    logits = parser_logits(net, category, images, faithful, input_size)
    mask = label_map_to_mask(logits_to_labels(logits, category, rule), category, rule)
    conf = confidence_map(logits, category, confidence)
    # area averaging when shrinking → soft borders
    mask = resize(mask, S).clamp(0, 1).to(images.device)
    conf = resize(conf, S).clamp(0, 1).to(images.device)
    if empty_fallback:
        empty = mask.flatten(1).amax(1) <= 0
        if empty.any():
            idx = empty.nonzero().flatten().tolist()
            warnings.warn(f"parse({category}): no object pixel in image(s) {idx}; using an all-ones mask",
                          stacklevel=3)  # the caller of parse (past torch.no_grad's wrapper)
            logger.warning("parse(%s): empty object mask for image(s) %s; using all ones", category, idx)
            mask[empty] = 1.0
    return mask, conf


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def cmd_segment_real(args: argparse.Namespace) -> int:
    """Parse real images with the official parser: ``<name>_mask.png`` and ``<name>_conf.npy``."""
    from ..data import write_segmentations

    net = load_parser(args.category, args.checkpoint, args.device)
    out = Path(args.out_dir)
    stems = write_segmentations(args.images, args.image_size, out, lambda x: parse(
        net, args.category, x, faithful=args.faithful, input_size=args.input_size, rule=args.rule,
        confidence=args.confidence, empty_fallback=args.empty_fallback))
    logger.info("segment-real: %d image(s) of %s into %s", len(stems), args.category, out)
    return 0


def add_cli(subparsers) -> None:
    """Register ``segment-real``."""
    s = subparsers.add_parser("segment-real", help=cmd_segment_real.__doc__)
    s.add_argument("--category", required=True, choices=sorted(CATEGORIES))
    s.add_argument("--checkpoint", required=True, type=Path,
                   help="bisenet.pth (face/synface), pspnet_voc.pth (car/cat/horse) or pspnet_ade20k.pth (church)")
    s.add_argument("--images", nargs="+", required=True, type=Path)
    s.add_argument("--image-size", type=int, help="working resolution S (default: the image's width)")
    s.add_argument("--out-dir", required=True, type=Path)
    s.add_argument("--confidence", default="softmax", choices=CONFIDENCE_MODES,
                   help="softmax probability (default) or the replication's min-max normalised logit")
    s.add_argument("--faithful", action=argparse.BooleanOptionalAction, default=True,
                   help="copy the original's input normalisation (none for BiSeNet/church); "
                        "--no-faithful: ImageNet normalisation for every parser")
    s.add_argument("--rule", default="original", choices=RULES, help="face mask rule (METHOD §7 or EXTENSIONS §1.1)")
    s.add_argument("--input-size", type=int, help="parser resolution (default 512 BiSeNet / 473 PSPNet)")
    s.add_argument("--empty-fallback", action=argparse.BooleanOptionalAction, default=True,
                   help="all-ones mask when no object pixel is found")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_segment_real)
