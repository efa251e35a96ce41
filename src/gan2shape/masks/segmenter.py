"""A small object segmenter trained on renders: the synthetic world's stand-in for BiSeNet/PSPNet.

For real data the shape priors start from a semantic parse of the input image (EXTENSIONS §1.1,
METHOD §7): a *soft object mask* (binary mask at parser resolution, area-shrunk to S) and a
per-pixel *confidence* of the object class. :func:`segment` produces both in exactly that way from
a tiny U-Net (:class:`SegNet`) trained by :func:`train_segmenter` on rendered images with known
coverage masks, so ``gan2shape.method.priors.make_prior(name, mask=..., confidence=...)`` is fed the same
kind of maps as on real data.

Input convention: images ``B×3×S×S`` in [-1, 1] are fed to the net as they are (the net is trained
on that range, so there is no ImageNet normalisation to forget).

Confidence definitions (option ``confidence``):

* ``"softmax"`` (default, the REC of EXTENSIONS §1.1): softmax probability of the object
  class(es), computed at parser resolution and shrunk to S.
* ``"logit_minmax"`` (compat, the replication's IMPL): raw pre-softmax logit of the object
  class (summed over the classes when several are given, as for faces), min-max normalised over
  each image's map at parser resolution, then shrunk to S. A constant map gives 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io import CheckpointError, atomic_torch_save, safe_torch_load
from ..utils import resize

logger = logging.getLogger("gan2shape.masks.segmenter")

CONFIDENCE_MODES = ("softmax", "logit_minmax")
_CONFIG_KEYS = ("n_classes", "width", "depth")


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------

def _block(cin: int, cout: int) -> nn.Sequential:
    """Two 3×3 conv + GroupNorm + ReLU (GroupNorm: no batch statistics, train = eval)."""
    g = math.gcd(8, cout)
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(g, cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(g, cout), nn.ReLU(inplace=True),
    )


class SegNet(nn.Module):
    """Tiny U-Net: ``depth`` resolution levels with ``width·2^i`` channels (16-32-64 by default).

    Input ``B×3×H×W`` in [-1, 1] (any H, W); output ``B×n_classes×H×W`` logits. Class 0 is
    background, class 1 the object (two classes by default).
    """

    def __init__(self, n_classes: int = 2, width: int = 16, depth: int = 3):
        super().__init__()
        if n_classes < 2 or width < 1 or depth < 1:
            raise ValueError(f"SegNet needs n_classes >= 2, width >= 1, depth >= 1 "
                             f"(got {n_classes}, {width}, {depth})")
        self.config = {"n_classes": int(n_classes), "width": int(width), "depth": int(depth)}
        ch = [width * 2 ** i for i in range(depth)]
        self.down = nn.ModuleList([_block(3, ch[0])] + [_block(ch[i - 1], ch[i]) for i in range(1, depth)])
        # Decoder level i fuses the upsampled level i+1 with the skip of level i.
        self.up = nn.ModuleList([_block(ch[i + 1] + ch[i], ch[i]) for i in range(depth - 1)])
        self.head = nn.Conv2d(ch[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, blk in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = blk(x)
            skips.append(x)
        for i in range(len(self.up) - 1, -1, -1):
            s = skips[i]
            x = F.interpolate(x, size=s.shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, s], dim=1))
        return self.head(x)


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------

def _as_images(x, what: str = "images") -> torch.Tensor:
    """``N×3×S×S`` float in [-1, 1] (uint8 0..255 is mapped to [-1, 1])."""
    x = torch.as_tensor(x)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{what}: expected N×3×H×W, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    x = x.float()
    if not torch.isfinite(x).all() or x.min() < -1.0 - 1e-4 or x.max() > 1.0 + 1e-4:
        raise ValueError(f"{what}: float images must be finite and lie in [-1, 1]")
    return x.clamp(-1, 1)


def _as_masks(m, n: int, size: tuple[int, int], what: str = "masks") -> torch.Tensor:
    """``N×1×S×S`` float in [0, 1] (``N×S×S`` accepted; uint8 is divided by 255)."""
    m = torch.as_tensor(m)
    if m.dim() == 3:
        m = m.unsqueeze(1)
    if m.dim() != 4 or m.shape[1] != 1 or m.shape[0] != n or tuple(m.shape[-2:]) != tuple(size):
        raise ValueError(f"{what}: expected {n}×1×{size[0]}×{size[1]}, got shape {tuple(m.shape)}")
    if m.dtype == torch.uint8:
        return m.float() / 255.0
    m = m.float()
    if not torch.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise ValueError(f"{what}: mask values must lie in [0, 1]")
    return m


def _soft_targets(m: torch.Tensor, n_classes: int, object_class: int) -> torch.Tensor:
    """Per-pixel class probabilities: ``m`` on the object class, ``1 − m`` on background (0)."""
    t = torch.zeros(m.shape[0], n_classes, *m.shape[-2:], dtype=m.dtype, device=m.device)
    t[:, 0] = 1.0 - m[:, 0]
    t[:, object_class] = m[:, 0]
    return t


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def _evaluate(net: SegNet, x: torch.Tensor, m: torch.Tensor, object_class: int, batch_size: int,
              device) -> dict:
    """Soft cross-entropy, pooled IoU (Σ∩/Σ∪ over the set) and mean per-image IoU of the object
    class: prediction = argmax == object_class, ground truth = mask >= 0.5."""
    net.eval()
    n_cls = net.config["n_classes"]
    loss_sum, inter_all, union_all, ious = 0.0, 0.0, 0.0, []
    for i in range(0, x.shape[0], batch_size):
        xb, mb = x[i:i + batch_size].to(device), m[i:i + batch_size].to(device)
        logits = net(xb)
        loss_sum += float(F.cross_entropy(logits, _soft_targets(mb, n_cls, object_class), reduction="sum"))
        pred = logits.argmax(1) == object_class
        gt = mb[:, 0] >= 0.5
        inter = (pred & gt).flatten(1).sum(1).double()
        union = (pred | gt).flatten(1).sum(1).double()
        inter_all += float(inter.sum())
        union_all += float(union.sum())
        # An image with neither predicted nor true object counts as a perfect match.
        ious += torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).tolist()
    npx = x.shape[0] * x.shape[-2] * x.shape[-1]
    return {"loss": loss_sum / npx, "iou": inter_all / union_all if union_all > 0 else 1.0,
            "miou": float(np.mean(ious))}


def _augment(x: torch.Tensor, m: torch.Tensor, gen: torch.Generator, jitter: float):
    """Random horizontal flips and a small brightness/contrast jitter (images stay in [-1, 1])."""
    n = x.shape[0]
    flip = (torch.rand(n, generator=gen) < 0.5).view(n, 1, 1, 1).to(x.device)
    x = torch.where(flip, x.flip(-1), x)
    m = torch.where(flip, m.flip(-1), m)
    if jitter > 0:
        gain = 1.0 + jitter * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
        shift = jitter * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
        x = (x * gain.to(x.device) + shift.to(x.device)).clamp(-1, 1)
    return x, m


def train_segmenter(images, masks, epochs: int = 20, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
                    device: str | torch.device = "cpu", val_fraction: float = 0.1,
                    log: Callable[[str], None] | None = None, *, n_classes: int = 2, width: int = 16,
                    depth: int = 3, object_class: int = 1, jitter: float = 0.1) -> tuple[SegNet, dict]:
    """Train a :class:`SegNet` on ``images`` (``N×3×S×S`` in [-1, 1] or uint8) and soft coverage
    ``masks`` (``N×1×S×S`` in [0, 1]).

    Loss: cross-entropy against *soft* targets (object = m, background = 1 − m). Rendered
    coverage is fractional only on the outline; soft targets make the softmax probability a
    calibrated estimate of coverage (so the default confidence means something), while its
    argmax still reproduces the binarised mask (m >= 0.5). Adam with a cosine learning-rate decay.
    A seeded random ``val_fraction`` of the images is held out (at least one when N >= 2).

    Returns the net (eval mode, on ``device``) and a history dict: per-epoch ``train_loss``,
    ``val_loss``, ``val_iou`` (pooled object IoU over the validation set) and ``val_miou`` (mean
    per-image IoU), plus ``n_train``, ``n_val``, ``seconds``. Validation entries are ``None``
    when nothing is held out.
    """
    say = log or logger.info
    x = _as_images(images)
    m = _as_masks(masks, x.shape[0], tuple(x.shape[-2:]))
    if not 0 < object_class < n_classes:
        raise ValueError(f"object_class must be in 1..{n_classes - 1}, got {object_class}")
    if epochs < 0 or batch_size < 1 or not 0 <= val_fraction < 1:
        raise ValueError("need epochs >= 0, batch_size >= 1 and 0 <= val_fraction < 1")
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    n_val = min(n - 1, max(1, round(val_fraction * n))) if (val_fraction > 0 and n >= 2) else 0
    vi, ti = perm[:n_val], perm[n_val:]
    xt, mt, xv, mv = x[ti], m[ti], x[vi], m[vi]

    with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
        torch.manual_seed(seed)
        net = SegNet(n_classes, width, depth)
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(ti) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))

    hist = {"train_loss": [], "val_loss": [], "val_iou": [], "val_miou": [], "n_train": len(ti),
            "n_val": n_val, "object_class": object_class}
    t0 = time.time()
    for ep in range(epochs):
        net.train()
        order = torch.randperm(len(ti), generator=gen)
        loss_sum = 0.0
        for k in range(steps_per_epoch):
            idx = order[k * batch_size:(k + 1) * batch_size]
            xb, mb = _augment(xt[idx], mt[idx], gen, jitter)
            xb, mb = xb.to(device), mb.to(device)
            loss = F.cross_entropy(net(xb), _soft_targets(mb, n_classes, object_class))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
        hist["train_loss"].append(loss_sum / len(ti))
        if n_val:
            ev = _evaluate(net, xv, mv, object_class, batch_size, device)
            hist["val_loss"].append(ev["loss"])
            hist["val_iou"].append(ev["iou"])
            hist["val_miou"].append(ev["miou"])
            say(f"segmenter epoch {ep + 1}/{epochs}: train {hist['train_loss'][-1]:.4f} "
                f"val {ev['loss']:.4f} IoU {ev['iou']:.4f} (per-image {ev['miou']:.4f})")
        else:
            for k in ("val_loss", "val_iou", "val_miou"):
                hist[k].append(None)
            say(f"segmenter epoch {ep + 1}/{epochs}: train {hist['train_loss'][-1]:.4f}")
    hist["seconds"] = time.time() - t0
    return net.eval(), hist


# --------------------------------------------------------------------------------------------
# Inference: mask and confidence pipelines (EXTENSIONS §1.1)
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def segment(net: SegNet, images, object_class: int | Sequence[int] = 1, *, parser_size: int | None = None,
            confidence: str = "softmax", empty_fallback: bool = True,
            chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Object mask and confidence, both ``B×1×S×S`` float32 in [0, 1] on the images' device.

    1. With ``parser_size``, enlarge the image bilinearly to the parser resolution.
    2. Run the net; mask = (argmax ∈ object_class) at that resolution (hard {0, 1}).
    3. Confidence at that resolution (see the module docstring for the two modes).
    4. Shrink both back to S with area interpolation: the mask becomes soft at the borders.
    5. ``empty_fallback``: an image with no object pixel gets an all-ones mask and a warning
       (the pipeline's rule).

    ``object_class`` may be a list of classes (their union for the mask, the sum of their
    logits/probabilities for the confidence, as the face parser does with labels 1..12).
    """
    if confidence not in CONFIDENCE_MODES:
        raise ValueError(f"confidence must be one of {CONFIDENCE_MODES}, got {confidence!r}")
    classes = [int(object_class)] if isinstance(object_class, (int, np.integer)) else [int(c) for c in object_class]
    n_cls = net.config["n_classes"] if hasattr(net, "config") else None
    if not classes or (n_cls is not None and any(not 0 <= c < n_cls for c in classes)):
        raise ValueError(f"object_class {object_class!r} outside 0..{(n_cls or 0) - 1}")
    x = _as_images(images)
    out_device = x.device
    S = tuple(x.shape[-2:])
    dev = next(net.parameters()).device
    was_training = net.training
    net.eval()
    masks, confs = [], []
    try:
        for i in range(0, x.shape[0], chunk):
            xb = x[i:i + chunk].to(dev)
            if parser_size is not None and (parser_size, parser_size) != S:
                xb = resize(xb, parser_size)  # bilinear when enlarging
            logits = net(xb).float()
            label = logits.argmax(1, keepdim=True)
            mask = torch.zeros_like(label, dtype=torch.bool)
            for c in classes:
                mask |= label == c
            if confidence == "softmax":
                conf = logits.softmax(1)[:, classes].sum(1, keepdim=True).clamp(0, 1)
            else:
                z = logits[:, classes].sum(1, keepdim=True)
                lo = z.amin(dim=(2, 3), keepdim=True)
                span = z.amax(dim=(2, 3), keepdim=True) - lo
                conf = torch.where(span > 0, (z - lo) / span.clamp(min=torch.finfo(z.dtype).tiny),
                                   torch.zeros_like(z))
            masks.append(resize(mask.float(), S).clamp(0, 1))  # area when shrinking → soft borders
            confs.append(resize(conf, S).clamp(0, 1))
    finally:
        net.train(was_training)
    mask, conf = torch.cat(masks).to(out_device), torch.cat(confs).to(out_device)
    if empty_fallback:
        empty = mask.flatten(1).amax(1) <= 0
        if empty.any():
            idx = empty.nonzero().flatten().tolist()
            warnings.warn(f"segment: no pixel of class {object_class} in image(s) {idx}; "
                          "using an all-ones mask", stacklevel=2)
            logger.warning("segment: empty object mask for image(s) %s; using all ones", idx)
            mask[empty] = 1.0
    return mask, conf


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def save_segmenter(path, net: SegNet, meta: dict | None = None) -> None:
    """Atomically write ``{'state_dict', 'config', 'meta'}``; ``meta`` must be JSON-like."""
    meta = dict(meta or {})
    try:
        meta = json.loads(json.dumps(meta))  # plain types only, so weights_only loading accepts it
    except (TypeError, ValueError) as e:
        raise ValueError(f"save_segmenter: meta must be JSON-serialisable ({e})") from e
    sd = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    atomic_torch_save({"state_dict": sd, "config": dict(net.config), "meta": meta}, path)


def load_segmenter(path, device: str | torch.device = "cpu") -> SegNet:
    """Load a checkpoint of :func:`save_segmenter` (strict); the net is in eval mode with its
    ``meta`` attached. Raises :class:`CheckpointError` naming the file on any layout problem."""
    obj = safe_torch_load(path, map_location="cpu")
    if not isinstance(obj, dict) or "state_dict" not in obj or "config" not in obj:
        raise CheckpointError(f"{path}: not a segmenter checkpoint (needs 'state_dict' and 'config')")
    cfg = obj["config"]
    if not isinstance(cfg, dict) or any(not isinstance(cfg.get(k), int) for k in _CONFIG_KEYS):
        raise CheckpointError(f"{path}: segmenter config must hold integers {_CONFIG_KEYS}, got {cfg!r}")
    sd = obj["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: 'state_dict' must map names to tensors")
    try:
        net = SegNet(**{k: cfg[k] for k in _CONFIG_KEYS})
    except ValueError as e:
        raise CheckpointError(f"{path}: bad segmenter config: {e}") from e
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: segmenter weights do not match config {cfg}: {e}") from e
    net.meta = obj.get("meta", {})
    return net.to(device).eval()


# --------------------------------------------------------------------------------------------
# Data for the CLI
# --------------------------------------------------------------------------------------------

def load_training_data(path, image_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` (``N×3×S×S`` in [-1, 1]) and ``masks`` (``N×1×S×S``) from an ``.npz`` with arrays
    ``images``/``masks``, or from a folder of ``<name>.png`` + ``<name>_mask.png`` pairs."""
    from ..data import load_image, load_mask

    path = Path(path)
    if path.is_dir():
        mask_files = sorted(path.glob("*_mask.png"))
        if not mask_files:
            raise ValueError(f"{path}: no <name>_mask.png files")
        xs, ms = [], []
        for mf in mask_files:
            img = mf.with_name(mf.name[:-len("_mask.png")] + ".png")
            if not img.is_file():
                raise ValueError(f"{mf}: image {img.name} is missing")
            size = image_size
            if size is None:
                from PIL import Image
                with Image.open(img) as im:
                    size = im.size[0]
            x, _ = load_image(img, size)
            xs.append(x)
            ms.append(load_mask(mf, size))
        try:
            return torch.cat(xs), torch.cat(ms)
        except RuntimeError as e:
            raise ValueError(f"{path}: images differ in size; pass --image-size ({e})") from e
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 -- BadZipFile, EOFError, pickle refusal, ...
        raise ValueError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from e
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: expected an .npz archive with 'images' and 'masks', got a single array")
    with z:
        if "images" not in z.files or "masks" not in z.files:
            raise ValueError(f"{path}: .npz needs arrays 'images' and 'masks' (has {sorted(z.files)})")
        try:
            images, masks = z["images"], z["masks"]
        except Exception as e:  # noqa: BLE001 -- truncated member
            raise ValueError(f"{path}: unreadable array in .npz ({type(e).__name__}: {e})") from e
    try:
        x = _as_images(torch.from_numpy(np.ascontiguousarray(images)), f"{path}: images")
        m = _as_masks(torch.from_numpy(np.ascontiguousarray(masks)), x.shape[0], tuple(x.shape[-2:]),
                      f"{path}: masks")
    except TypeError as e:
        raise ValueError(f"{path}: unsupported array dtype ({e})") from e
    if image_size is not None and image_size != x.shape[-1]:
        x, m = resize(x, image_size).clamp(-1, 1), resize(m, image_size).clamp(0, 1)
    return x, m


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def cmd_train_segmenter(args: argparse.Namespace) -> int:
    """Train the render segmenter and write its checkpoint (and optionally the history JSON)."""
    from ..data import save_json

    parts = [load_training_data(d, args.image_size) for d in args.data]
    x, m = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    net, hist = train_segmenter(x, m, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                device=args.device, val_fraction=args.val_fraction, width=args.width,
                                depth=args.depth)
    last = lambda k: hist[k][-1] if hist[k] else None  # noqa: E731
    meta = {"data": [str(d) for d in args.data], "n_images": int(x.shape[0]), "image_size": int(x.shape[-1]),
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
            "val_fraction": args.val_fraction, "n_train": hist["n_train"], "n_val": hist["n_val"],
            "train_loss": last("train_loss"), "val_loss": last("val_loss"), "val_iou": last("val_iou"),
            "val_miou": last("val_miou"), "loss": "soft cross-entropy", "input_range": "[-1, 1]"}
    save_segmenter(args.out, net.cpu(), meta)
    if args.history:
        save_json(hist, args.history)
    logger.info("segmenter written to %s (val IoU %s)", args.out, meta["val_iou"])
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    """Segment images with a trained segmenter: ``<name>_mask.png`` and ``<name>_conf.npy``."""
    from ..data import write_segmentations

    net = load_segmenter(args.checkpoint, args.device)
    out = Path(args.out_dir)
    stems = write_segmentations(args.images, args.image_size, out, lambda x: segment(
        net, x, args.object_class, parser_size=args.parser_size, confidence=args.confidence))
    logger.info("segmented %d image(s) into %s", len(stems), out)
    return 0


def add_cli(subparsers) -> None:
    """Register ``train-segmenter`` and ``segment``."""
    t = subparsers.add_parser("train-segmenter", help=cmd_train_segmenter.__doc__)
    t.add_argument("--data", required=True, type=Path, nargs="+",
                   help=".npz with images N×3×S×S ([-1,1] float or uint8) and masks N×1×S×S, "
                        "or a folder of <name>.png + <name>_mask.png")
    t.add_argument("--image-size", type=int, help="resize the data to S (default: as stored)")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--val-fraction", type=float, default=0.1)
    t.add_argument("--width", type=int, default=16, help="channels of the first U-Net level")
    t.add_argument("--depth", type=int, default=3, help="U-Net resolution levels")
    t.add_argument("--out", required=True, type=Path, help="checkpoint to write")
    t.add_argument("--history", type=Path, help="training history JSON")
    t.set_defaults(func=cmd_train_segmenter)

    s = subparsers.add_parser("segment", help=cmd_segment.__doc__)
    s.add_argument("--checkpoint", required=True, type=Path)
    s.add_argument("--images", nargs="+", required=True, type=Path)
    s.add_argument("--out-dir", required=True, type=Path)
    s.add_argument("--image-size", type=int, help="working resolution S (default: the image's width)")
    s.add_argument("--parser-size", type=int, help="run the net at this resolution (soft mask borders)")
    s.add_argument("--confidence", default="softmax", choices=CONFIDENCE_MODES)
    s.add_argument("--object-class", type=int, default=1)
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_segment)
