"""Checking the extracted ``checkpoints/`` and ``data/`` trees per dataset (part of
``gan2shape.download``)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping, Sequence

from ..io import CheckpointError, safe_torch_load
from .fetch import load_manifest

# --------------------------------------------------------------------------------------------
# layout verification
# --------------------------------------------------------------------------------------------

def _check_checkpoint(path: Path, role: str, checks: Mapping) -> list[str]:
    """Problems of one checkpoint file for its role (gan, mvn_view, mvn_light, pspnet, bisenet, pretrain)."""
    if not path.is_file():
        return [f"{path}: missing ({role})"]
    try:
        obj = safe_torch_load(path)
    except CheckpointError as e:
        return [str(e)]
    rule = checks.get(role, {})
    if not isinstance(obj, Mapping):
        return [f"{path}: expected a dict ({role}), got {type(obj).__name__}"]
    if not obj:
        return [f"{path}: empty dict ({role})"]
    problems = [f"{path}: missing key {k!r} ({role} needs {', '.join(rule['keys'])})"
                for k in rule.get("keys", []) if k not in obj]
    dim = rule.get("dim")
    if dim and not problems:
        mean, cov = obj["mean"], obj["cov"]
        if tuple(getattr(mean, "shape", ())) != (dim,):
            problems.append(f"{path}: 'mean' has shape {tuple(getattr(mean, 'shape', ()))}, expected ({dim},)")
        if tuple(getattr(cov, "shape", ())) != (dim, dim):
            problems.append(f"{path}: 'cov' has shape {tuple(getattr(cov, 'shape', ()))}, expected ({dim}, {dim})")
    return problems


def _first_existing(cands: Sequence[Path]) -> Path | None:
    return next((c for c in cands if c.is_file()), None)


def _check_list(root: Path, list_file: Path, spec: Mapping) -> list[str]:
    """For every line of ``list_file``: the image, its latent and (if ``depth``) its depth file."""
    problems: list[str] = []
    img_dir = root / spec.get("images", ".")
    lat_dir = root / spec.get("latents", "latents")
    lines = list_file.read_text().splitlines()
    entries = [(i, ln.split()[0]) for i, ln in enumerate(lines, 1) if ln.strip()]
    if not entries:
        return [f"{list_file}: empty list"]
    for lineno, token in entries:
        where = f"{list_file}:{lineno}"
        # the first token is relative to the image folder (tolerate it being relative to the list's folder)
        cands = [img_dir / token, root / token]
        image = _first_existing(cands)
        if image is None:
            problems.append(f"{where}: image {cands[0]} missing")
        stem = str(PurePosixPath(token).with_suffix(".pt"))
        lat = [lat_dir / PurePosixPath(stem).name, lat_dir / stem]
        if _first_existing(lat) is None:
            problems.append(f"{where}: latent {lat[0]} missing")
        if spec.get("depth"):
            # GT depth: the image path with every 'image' replaced by 'depth' (below the list's folder)
            base = image or cands[0]
            depth = root / str(base.relative_to(root)).replace("image", "depth")
            if not depth.is_file():
                problems.append(f"{where}: depth {depth} missing")
    return problems


def verify_layout(root: str | os.PathLike, dataset: str | Iterable[str] = "all", *, checkpoints: bool = True,
                  data: bool = True, manifest: Mapping | None = None) -> list[str]:
    """Problems (strings naming files) of the ``checkpoints/`` and ``data/`` trees under ``root``
    for ``dataset`` (a name, several, or ``all``); empty when everything is in place."""
    manifest = manifest or load_manifest()
    root = Path(root)
    layouts = manifest["layouts"]
    names = list(layouts) if dataset == "all" else [dataset] if isinstance(dataset, str) else list(dataset)
    if "all" in names:
        names = list(layouts)
    unknown = [n for n in names if n not in layouts]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; known: {', '.join(layouts)}")
    problems: list[str] = []
    seen: set[Path] = set()
    for ds in names:
        lay = layouts[ds]
        if checkpoints:
            for role, paths in lay.get("checkpoints", {}).items():
                for p in paths:
                    if (root / p) not in seen:
                        seen.add(root / p)
                        problems += _check_checkpoint(root / p, role, manifest.get("checks", {}))
        if data:
            for spec in lay.get("data", []):
                droot = root / spec["root"]
                if not droot.is_dir():
                    problems.append(f"{droot}: missing folder ({ds} data)")
                    continue
                lists = [droot / n for n in spec["lists"]]
                lists += sorted(p for p in droot.glob("list*.txt") if p not in lists)
                for lf in lists:
                    if not lf.is_file():
                        problems.append(f"{lf}: missing list file ({ds})")
                    elif lf not in seen:
                        seen.add(lf)
                        problems += _check_list(droot, lf, spec)
    return problems
