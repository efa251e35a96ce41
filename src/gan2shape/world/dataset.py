"""The held-out test set on disk: the 16-bit depth PNG codec, writing and reading the set.

Layout (``save_test_set``): ``<out>/<family>/list.txt`` and per image ``<name>.png`` (RGB 8-bit),
``<name>_depth.png`` (16-bit grey: p = round((d − 0.8)/0.4·65535), decoded as d = 0.8 + 0.4·p/65535,
error ≤ 3.1e-6; the background code 49151 decodes to exactly 1.1), ``<name>_normal.png`` (RGB 8-bit,
(n + 1)/2), ``<name>_mask.png`` (grey 8-bit coverage) and ``<name>.json`` (all parameters, the view,
the light direction and the depth encoding).
World v2 (format_version 2) adds the canonical frame's ``<name>_canon_depth.png`` (16-bit, same
code) and ``<name>_albedo.png`` (RGB 8-bit, (a + 1)/2); its ``_mask.png`` is binary (the canonical
object mask warped like the method's masks) and ``_normal.png`` the normals of the rendered depth.
Note: these depth PNGs are *not* in the unsup3d convention that :func:`gan2shape.data.load_depth`
assumes (1.1 − 0.2·p); read them with :func:`load_test_set` or :func:`decode_depth_png`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..io import atomic_path, atomic_write_text
from .render import FAR_DEPTH, FOV, ROT_CENTER, render_batch
from .scenes import ALL_FAMILIES, V2_FAMILIES, SceneParams, sample_params

__all__ = ["save_test_set", "load_test_set", "encode_depth_png", "decode_depth_png"]

# 16-bit depth PNG encoding
DEPTH_PNG_LO, DEPTH_PNG_HI = 0.8, 1.2
_DEPTH_SCALE = 65535.0
_BG_CODE = int(round((FAR_DEPTH - DEPTH_PNG_LO) / (DEPTH_PNG_HI - DEPTH_PNG_LO) * _DEPTH_SCALE))


def encode_depth_png(depth: Tensor, path: str | Path) -> None:
    """Write depth ``S×S`` as a 16-bit grey PNG: p = round((d − 0.8)/0.4 · 65535) (atomic)."""
    from PIL import Image

    d = depth.detach().double().cpu().numpy()
    if d.ndim != 2 or not np.isfinite(d).all() or d.min() < DEPTH_PNG_LO or d.max() > DEPTH_PNG_HI:
        raise ValueError(f"{path}: depth must be a finite 2-D map in [{DEPTH_PNG_LO}, {DEPTH_PNG_HI}]")
    code = np.round((d - DEPTH_PNG_LO) / (DEPTH_PNG_HI - DEPTH_PNG_LO) * _DEPTH_SCALE).astype(np.uint16)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(code).save(tmp, format="PNG")


def decode_depth_png(path: str | Path) -> Tensor:
    """Read a depth PNG written by :func:`encode_depth_png` as float32 ``S×S`` (background exactly 1.1)."""
    a = _read_png(path, ("I;16", "I"))
    if a.ndim != 2:
        raise ValueError(f"{path}: depth PNG must be single-channel 16-bit")
    d = DEPTH_PNG_LO + a.astype(np.float64) / _DEPTH_SCALE * (DEPTH_PNG_HI - DEPTH_PNG_LO)
    d[a == _BG_CODE] = FAR_DEPTH
    return torch.from_numpy(d.astype(np.float32))


def _read_png(path: str | Path, modes: tuple[str, ...]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in modes:
                raise ValueError(f"{path}: image mode {img.mode!r}, expected one of {modes}")
            return np.asarray(img).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable PNG ({e})") from e


def _write_png8(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _to8(x: Tensor) -> np.ndarray:
    """[0, 1] → uint8 (round half up)."""
    return (x.detach().float().cpu().clamp(0, 1) * 255).round().byte().numpy()


def save_test_set(out_dir: str | Path, family: str, n: int, seed: int, size: int = 64, device="cpu",
                  supersample: int = 4, batch: int = 32) -> Path:
    """Render and write the held-out set of ``family`` to ``out_dir/<family>/`` (format: module doc).

    Every file is written atomically; ``list.txt`` is written last, so an interrupted run leaves no
    list naming missing images. Returns the family folder.
    """
    folder = Path(out_dir) / family
    folder.mkdir(parents=True, exist_ok=True)
    params = sample_params(family, n, seed)
    names = []
    v2 = family in V2_FAMILIES
    for i0 in range(0, n, batch):
        r = render_batch(params[i0:i0 + batch], size, device, supersample)
        for j, p in enumerate(params[i0:i0 + batch]):
            name = f"{family}_{p.seed}_{p.index:05d}"
            names.append(name)
            _write_png8(_to8((r["image"][j] + 1) / 2).transpose(1, 2, 0), folder / f"{name}.png")
            encode_depth_png(r["depth"][j], folder / f"{name}_depth.png")
            _write_png8(_to8((r["normals"][j] + 1) / 2), folder / f"{name}_normal.png")
            _write_png8(_to8(r["mask"][j, 0]), folder / f"{name}_mask.png")
            extra: dict[str, Any] = {}
            if v2:
                encode_depth_png(r["canon_depth"][j], folder / f"{name}_canon_depth.png")
                _write_png8(_to8((r["albedo"][j] + 1) / 2).transpose(1, 2, 0), folder / f"{name}_albedo.png")
                extra = dict(world="v2", canonical_files=dict(depth=f"{name}_canon_depth.png",
                                                              albedo=f"{name}_albedo.png"),
                             canonical_background_depth=float(r["canon_depth"][j, size // 2, 0]),
                             renderer="gan2shape.method.renderer.Renderer (faithful), METHOD §3.7")
            meta = dict(
                format_version=2 if v2 else 1, name=name, size=size, supersample=supersample, fov=FOV,
                rot_center=[0.0, 0.0, ROT_CENTER], params=p.to_dict(), view=p.view,
                light_direction=p.light_direction,
                depth_encoding=dict(format="png16", lo=DEPTH_PNG_LO, hi=DEPTH_PNG_HI, scale=_DEPTH_SCALE,
                                    formula="d = lo + (hi - lo) * p / scale", background=FAR_DEPTH,
                                    background_code=_BG_CODE),
                files=dict(image=f"{name}.png", depth=f"{name}_depth.png", normal=f"{name}_normal.png",
                           mask=f"{name}_mask.png"), **extra)
            atomic_write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", folder / f"{name}.json")
    atomic_write_text("\n".join(names) + "\n", folder / "list.txt")
    return folder


def _load_record(folder: Path, name: str) -> dict[str, Any]:
    jpath = folder / f"{name}.json"
    if not jpath.is_file():
        raise FileNotFoundError(f"{jpath}: file not found")
    try:
        meta = json.loads(jpath.read_text())
        params = SceneParams.from_dict(meta["params"])
        size = int(meta["size"])
        enc = meta["depth_encoding"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{jpath}: invalid test-set record ({type(e).__name__}: {e})") from e
    if enc.get("format") != "png16" or (enc.get("lo"), enc.get("hi")) != (DEPTH_PNG_LO, DEPTH_PNG_HI):
        raise ValueError(f"{jpath}: unsupported depth encoding {enc}")
    paths = {k: folder / f"{name}{suf}.png" for k, suf in
             (("image", ""), ("depth", "_depth"), ("normal", "_normal"), ("mask", "_mask"))}
    img = _read_png(paths["image"], ("RGB",))
    nrm = _read_png(paths["normal"], ("RGB",))
    msk = _read_png(paths["mask"], ("L",))
    depth = decode_depth_png(paths["depth"])
    for k, a in (("image", img), ("normal", nrm), ("mask", msk), ("depth", depth)):
        if tuple(a.shape[:2]) != (size, size):
            raise ValueError(f"{paths[k]}: size {tuple(a.shape[:2])}, expected {size}x{size} (from {jpath.name})")
    normals = torch.from_numpy(nrm).float() / 255 * 2 - 1
    rec = dict(name=name, family=params.family, params=params, meta=meta,
               image=torch.from_numpy(img).permute(2, 0, 1).float() / 255 * 2 - 1,
               depth=depth, normals=normals / normals.norm(dim=-1, keepdim=True).clamp(min=1e-6),
               mask=torch.from_numpy(msk).float()[None] / 255, paths={**paths, "json": jpath})
    if "canonical_files" in meta:  # world v2: the canonical truth
        cpaths = {k: folder / v for k, v in meta["canonical_files"].items()}
        rec["canon_depth"] = decode_depth_png(cpaths["depth"])
        rec["albedo"] = torch.from_numpy(_read_png(cpaths["albedo"], ("RGB",))).permute(2, 0, 1).float() / 255 * 2 - 1
        rec["paths"].update({f"canon_{k}": v for k, v in cpaths.items()})
    return rec


def load_test_set(directory: str | Path) -> list[dict[str, Any]]:
    """Read a held-out set: ``directory`` is a family folder (with ``list.txt``) or the output root
    holding family folders. Each record: name, family, params (:class:`SceneParams`), meta (the
    JSON), image 3×S×S, depth S×S, normals S×S×3 (unit, decoded from 8 bits), mask 1×S×S, paths;
    world v2 also canon_depth S×S and albedo 3×S×S (canonical frame).
    Missing or corrupt files raise an error naming the file."""
    directory = Path(directory)
    if (directory / "list.txt").is_file():
        folders = [directory]
    else:
        folders = [directory / f for f in ALL_FAMILIES if (directory / f / "list.txt").is_file()]
        if not folders:
            raise FileNotFoundError(f"{directory / 'list.txt'}: file not found (no test set in {directory})")
    records = []
    for folder in folders:
        names = [ln.strip() for ln in (folder / "list.txt").read_text().splitlines() if ln.strip()]
        if not names:
            raise ValueError(f"{folder / 'list.txt'}: empty list")
        records += [_load_record(folder, name) for name in names]
    return records

