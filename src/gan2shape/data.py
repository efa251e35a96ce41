"""Reading inputs (images, masks, depth maps, arrays) with validation, and writing outputs atomically.

Conventions (METHOD §1.7): images are read as RGB, optionally centre-cropped, resized to S (PIL
bilinear on the shorter side) and mapped to [-1, 1]; ground-truth depth PNGs follow the unsup3d
convention depth = 1.1 − 0.2·p (white = near); ``.npy`` depth maps hold absolute depth.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .io import atomic_path, atomic_write_text
from .utils import center_crop, resize

log = logging.getLogger("gan2shape")


def _open_image(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e
    return img


def load_image(path: str | Path, size: int, crop: int | None = None) -> tuple[torch.Tensor, int]:
    """An RGB image as ``1×3×S×S`` in [-1, 1], and its original width (``origin_size``).

    Conversions (grayscale or palette to RGB, a dropped alpha channel, a resize other than
    the crop's) are logged as warnings naming the file."""
    img = _open_image(path)
    if img.mode not in ("RGB", "RGBA", "L", "P"):
        raise ValueError(f"{path}: unsupported image mode {img.mode!r} (expected RGB)")
    w, h = img.size
    if w != h:
        raise ValueError(f"{path}: image is {w}x{h}; GAN2Shape expects square images")
    if img.mode == "RGBA" or (img.mode == "P" and "transparency" in img.info):
        alpha = np.asarray(img.convert("RGBA"))[..., 3]
        if (alpha < 255).any():
            log.warning("%s: alpha channel dropped (%.1f%% of the pixels not opaque; their colour is used as is)",
                        path, 100.0 * float((alpha < 255).mean()))
    elif img.mode in ("L", "P"):
        log.warning("%s: %s image converted to RGB", path, "grayscale" if img.mode == "L" else "palette")
    img = img.convert("RGB")
    if crop is not None:
        if crop > w:
            raise ValueError(f"{path}: crop {crop} is larger than the image ({w} px)")
        left = int(round((w - crop) / 2.0))
        img = img.crop((left, left, left + crop, left + crop))
    if img.size[0] != size:
        if crop is None:
            log.warning("%s: resized from %d px to %d px", path, img.size[0], size)
        img = img.resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    return x * 2 - 1, w


def read_npy(path: str | Path) -> np.ndarray:
    """A ``.npy`` array (no pickles); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable .npy array ({e})") from e


def write_segmentations(paths, image_size: int | None, out_dir: str | Path, predict) -> list[str]:
    """Run ``predict(image 1×3×S×S) -> (mask 1×1×S×S, confidence 1×1×S×S)`` on every image and write
    ``<stem>_mask.png`` and ``<stem>_conf.npy`` (S = ``image_size`` or the file's own size)."""
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) != len(stems):
        raise SystemExit("--images have duplicate names; outputs would overwrite each other")
    out = Path(out_dir)
    for p, stem in zip(paths, stems):
        size = image_size
        if size is None:
            with Image.open(p) as im:
                size = im.size[0]
        x, _ = load_image(p, size)
        mask, conf = predict(x)
        save_png(mask[0], out / f"{stem}_mask.png", (0.0, 1.0))
        save_npy(conf[0, 0].float(), out / f"{stem}_conf.npy")
    return stems


def _load_map(path: str | Path) -> np.ndarray:
    """A single-channel map from ``.npy`` (float) or an image (first channel, scaled to [0, 1])."""
    path = Path(path)
    if path.suffix == ".npy":
        a = np.squeeze(read_npy(path))
        if a.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D map, got shape {a.shape}")
        return a.astype(np.float32)
    img = _open_image(path)
    a = np.asarray(img)
    if a.ndim == 3:
        a = a[..., 0]
    scale = 65535.0 if a.dtype == np.uint16 or img.mode.startswith("I") else 255.0
    return a.astype(np.float32) / scale


def load_mask(path: str | Path, size: int) -> torch.Tensor:
    """A soft mask ``1×1×S×S`` in [0, 1] (area-averaged when shrunk)."""
    a = _load_map(path)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise ValueError(f"{path}: mask values must lie in [0, 1] (got {a.min():.3g}..{a.max():.3g})")
    return resize(torch.from_numpy(a)[None, None], size).clamp(0, 1)


# PNG depth encodings, p = pixel value in [0, 1]: the unsup3d/synface convention (white = near) and
# the synthetic world's 16-bit one (see gan2shape.world.dataset.encode_depth_png).
DEPTH_ENCODINGS = {
    "unsup3d": lambda p: 1.1 - 0.2 * p,
    "synthetic": lambda p: 0.8 + 0.4 * p,
}


def load_depth(path: str | Path, size: int, crop: int | None = None, encoding: str = "unsup3d") -> torch.Tensor:
    """Ground-truth depth ``1×S×S``: ``.npy`` absolute depth, or a PNG decoded with ``encoding``
    (``unsup3d``: depth = 1.1 − 0.2·p; ``synthetic``: depth = 0.8 + 0.4·p)."""
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"unknown depth encoding {encoding!r}; choose one of {sorted(DEPTH_ENCODINGS)}")
    a = _load_map(path)
    if Path(path).suffix != ".npy":
        a = DEPTH_ENCODINGS[encoding](a.astype(np.float64)).astype(np.float32)
    if not np.isfinite(a).all() or a.min() <= 0:
        raise ValueError(f"{path}: depth must be finite and positive")
    t = torch.from_numpy(a)[None, None]
    if crop is not None:
        t = center_crop(t, crop)
    return resize(t, size)[:, 0]


def load_array(path: str | Path, size: int | None = None) -> torch.Tensor:
    """A ``.npy`` 2-D map as ``1×H×W`` (resized to S when given)."""
    a = _load_map(path)
    t = torch.from_numpy(a)[None, None]
    return (resize(t, size) if size else t)[:, 0]


def save_npy(array, path: str | Path) -> None:
    a = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, a)


def save_png(image: torch.Tensor, path: str | Path, value_range: tuple[float, float] = (-1.0, 1.0)) -> None:
    """Save ``3×H×W`` / ``1×H×W`` / ``H×W`` as an 8-bit PNG after mapping ``value_range`` to [0, 255]."""
    x = image.detach().float().cpu()
    if x.dim() == 4:
        x = x[0]
    if x.dim() == 3 and x.shape[0] in (1, 3):
        x = x.permute(1, 2, 0)
    lo, hi = value_range
    a = ((x - lo) / (hi - lo)).clamp(0, 1).mul(255).round().byte().numpy()
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(a).save(tmp, format="PNG")


def save_json(obj, path: str | Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)
