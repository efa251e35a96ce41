"""Figures of a reconstruction (METHOD §1.8, §3.8): colour-mapped depth, normals, the original's
"shape" image, relighting and rotation sequences (GIF), textured mesh export (OBJ/MTL/PNG, PLY),
matplotlib/seaborn plots of metrics and losses, and a static HTML report.

Stage commands (registered through :func:`add_cli`):

* ``gan2shape figures`` -- one reconstruct folder (+ its input image) → the files of
  :func:`write_image_outputs`.
* ``gan2shape report`` -- metrics JSON/CSV of ``gan2shape evaluate`` + figure folders → one
  self-contained HTML page (relative links only, no external resources).

Conventions: images are ``3×H×W`` (or ``N×3×H×W`` frame stacks) in [−1, 1] unless a function says
[0, 1]; depth ``S×S`` (or ``1×S×S`` where a renderer is called); normals ``S×S×3`` (pointing away
from the camera, §3.6). Every file is written through :mod:`gan2shape.io`'s atomic helpers.

Mesh export (§1.8): vertices are the canonical depth lifted to 3-D (§3.2), mapped to
(x, −y, 1 − z)·100 (y up, the camera on the +z side). The OBJ follows the original: S² grid
vertices plus one vertex at the centre of every pixel quad (mean of its 4 corners), 4 triangles
per quad fanning around the centre, i.e. S² + (S−1)² vertices and 4(S−1)² faces, counter-clockwise
seen from the camera; UVs (c/(S−1), 1 − r/(S−1)); per-vertex normals = §3.6 normals with x
negated (the camera-facing normal in mesh coordinates), centre normals = renormalised mean. The
PLY uses the S² grid vertices only and the renderer's 2 triangles per quad (§3.3), with colours.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import html
import io
import itertools
import json
import math
import os
import platform
import warnings
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import quote

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..io import atomic_path, atomic_write_text

__all__ = [
    "ORIGINAL_RELIGHT",
    "circular_lights",
    "depth_to_color",
    "normals_to_image",
    "shading_image",
    "canonical_texture",
    "relight_frames",
    "rotate_frames",
    "save_gif",
    "mesh_vertices",
    "save_mesh_obj",
    "save_mesh_ply",
    "image_panel",
    "write_image_outputs",
    "plot_metrics",
    "plot_losses",
    "write_report",
    "add_cli",
]

# §1.8: 20 relighting conditions (dx, dy, strength r); direction = normalize([dx, dy, 1]).
# Order: r outermost, then dy, then dx (dx varies fastest, so a GIF sweeps left → right).
ORIGINAL_RELIGHT: tuple[tuple[float, float, float], ...] = tuple(
    (dx, dy, r) for r in (0.3, 0.6) for dy in (0.0, 0.6) for dx in (-1.5, -0.7, 0.0, 0.7, 1.5))

# names of the per-image files written by write_image_outputs (and shown by the report)
FIGURE_FILES = ("input.png", "depth.png", "normal.png", "albedo.png", "shading.png", "recon.png",
                "relight.gif", "rotate.gif")
MESH_FILES = ("mesh.obj", "mesh.ply")


# --------------------------------------------------------------------------------------------
# maps → images
# --------------------------------------------------------------------------------------------

def _mpl():
    """matplotlib with the non-interactive Agg backend."""
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    return matplotlib


def depth_to_color(depth: Tensor, lo: float | None = None, hi: float | None = None,
                   cmap: str = "magma") -> Tensor:
    """Colour-mapped depth ``3×S×S`` in [0, 1]; near (small depth) = bright end of ``cmap``.
    ``lo``/``hi`` default to the map's min/max."""
    d = depth.detach().float().cpu().reshape(depth.shape[-2:])
    lo = float(d.min()) if lo is None else float(lo)
    hi = float(d.max()) if hi is None else float(hi)
    t = ((hi - d) / max(hi - lo, 1e-8)).clamp(0, 1)
    lut = _mpl().colormaps[cmap](np.linspace(0, 1, 256))[:, :3]  # 256×3
    idx = (t * 255).round().long()
    return torch.from_numpy(lut).float()[idx].permute(2, 0, 1).contiguous()


def normals_to_image(normals: Tensor) -> Tensor:
    """Normals ``S×S×3`` (or ``1×S×S×3``) → ``3×S×S`` in [0, 1] as (n + 1)/2."""
    n = normals.detach().float().cpu().reshape(*normals.shape[-3:])
    return ((n + 1) / 2).clamp(0, 1).permute(2, 0, 1).contiguous()


def shading_image(normals: Tensor, light_dir: Sequence[float] | Tensor = (0.0, 0.0, 1.0)) -> Tensor:
    """The original's "shape" image (§1.8): 0.7·max(0, n·l) replicated to ``3×S×S`` (in [0, 1])."""
    n = normals.detach().float().cpu().reshape(*normals.shape[-3:])
    l = torch.as_tensor(light_dir, dtype=torch.float32).reshape(3)
    l = l / l.norm().clamp(min=1e-8)
    s = 0.7 * (n * l).sum(-1).clamp(min=0)
    return s.unsqueeze(0).expand(3, -1, -1).contiguous()


def _as_batch(x, ref: Tensor) -> Tensor:
    return torch.as_tensor(x, dtype=ref.dtype, device=ref.device).reshape(-1)


def canonical_texture(renderer, depth: Tensor, albedo: Tensor, k_a, k_d, light_dir) -> Tensor:
    """Canonical texture ``1×3×S×S`` = albedo shaded by the recovered light (§3.6)."""
    from ..method.renderer import compose_texture, shade

    depth = depth.reshape(1, *depth.shape[-2:])
    albedo = albedo.reshape(1, 3, *albedo.shape[-2:]).to(depth)
    d = torch.as_tensor(light_dir, dtype=depth.dtype, device=depth.device).reshape(1, 3)
    d = d / d.norm(dim=1, keepdim=True).clamp(min=1e-8)
    shading, _ = shade(renderer.normals(depth), _as_batch(k_a, depth), _as_batch(k_d, depth), d)
    return compose_texture(albedo, shading)


def circular_lights(n: int = 24, radius: float = 1.0, strength: float = 0.3) -> list[tuple[float, float, float]]:
    """A smooth relighting sweep: (dx, dy) on a circle of ``radius``, constant strength r."""
    return [(radius * math.cos(2 * math.pi * i / n), radius * math.sin(2 * math.pi * i / n), strength)
            for i in range(n)]


@torch.no_grad()
def relight_frames(renderer, depth: Tensor, albedo: Tensor, view: Tensor, k_a, k_d,
                   lights: str | Iterable[Sequence[float]] = "original", n_frames: int = 24) -> Tensor:
    """Relit renders in the input ``view`` (§1.8): for each light (dx, dy, r), direction
    normalize([dx, dy, 1]) and shading = k_a − 0.6·r + (k_d + r)·max(0, n·dir), the texture
    inverse-warped into the view like the reconstruction. ``lights``: "original" (the 20 of
    :data:`ORIGINAL_RELIGHT`), "circle" (:func:`circular_lights` with ``n_frames``) or a list of
    (dx, dy, r). Returns ``N×3×S×S`` in [−1, 1]."""
    from ..method.renderer import compose_texture

    if isinstance(lights, str):
        if lights == "original":
            lights = ORIGINAL_RELIGHT
        elif lights == "circle":
            lights = circular_lights(n_frames)
        else:
            raise ValueError(f"lights must be 'original', 'circle' or a list of (dx, dy, r), got {lights!r}")
    L = torch.as_tensor([list(x) for x in lights], dtype=depth.dtype, device=depth.device)
    if L.dim() != 2 or L.shape[1] != 3:
        raise ValueError(f"lights must be (dx, dy, r) triples, got shape {tuple(L.shape)}")
    depth = depth.reshape(1, *depth.shape[-2:])
    albedo = albedo.reshape(1, 3, *albedo.shape[-2:]).to(depth)
    view = view.reshape(1, 6).to(depth)
    k_a, k_d = _as_batch(k_a, depth)[:1], _as_batch(k_d, depth)[:1]
    dirs = torch.cat([L[:, :2], torch.ones_like(L[:, :1])], 1)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    n = renderer.normals(depth)  # 1×S×S×3
    s_diff = torch.einsum("bhwk,nk->nhw", n, dirs).clamp(min=0).unsqueeze(1)  # N×1×S×S
    r = L[:, 2].view(-1, 1, 1, 1)
    shading = k_a - 0.6 * r + (k_d + r) * s_diff
    textures = compose_texture(albedo, shading)
    # one view for all lights: the warp grid is computed once
    recon_depth = renderer.warp_canon_depth(depth, view)
    grid = renderer.inverse_warp_grid(recon_depth, view).to(textures.dtype)
    out = F.grid_sample(textures, grid.expand(len(L), -1, -1, -1), mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    return out.clamp(-1, 1)


@torch.no_grad()
def rotate_frames(renderer, depth: Tensor, albedo: Tensor, k_a, k_d, light_dir, views: Tensor,
                  colors: Tensor | None = None, batch: int = 8) -> Tensor:
    """The canonical shape seen from physical ``views`` (``N×6``, rotation about the rotation
    centre), rasterised as a vertex-coloured mesh with a white background (§3.8). Colours: the
    canonical texture (albedo shaded by the recovered light) unless ``colors`` (``1×3×S×S`` in
    [−1, 1], e.g. a normal or shape image) is given. Returns ``N×3×S×S`` in [−1, 1]."""
    depth = depth.reshape(1, *depth.shape[-2:])
    if colors is None:
        colors = canonical_texture(renderer, depth, albedo, k_a, k_d, light_dir)
    colors = colors.reshape(1, 3, *depth.shape[-2:]).to(depth)
    views = views.reshape(-1, 6).to(depth)
    out = []
    for i in range(0, len(views), batch):
        v = views[i:i + batch]
        out.append(renderer.render_mesh_colors(depth.expand(len(v), -1, -1),
                                               colors.expand(len(v), -1, -1, -1), v, background=1.0))
    return torch.cat(out, 0)


# --------------------------------------------------------------------------------------------
# writing images, GIFs, meshes
# --------------------------------------------------------------------------------------------

def _to_uint8(img: Tensor, value_range=(-1.0, 1.0)) -> np.ndarray:
    """``3×H×W`` / ``1×H×W`` / ``H×W`` → ``H×W×3`` uint8."""
    x = img.detach().float().cpu()
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    lo, hi = value_range
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    return x.mul(255).round().byte().permute(1, 2, 0).numpy()


def _save_rgb(img: Tensor, path: str | Path, value_range=(0.0, 1.0)) -> Path:
    from PIL import Image

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(_to_uint8(img, value_range)).save(tmp, format="PNG")
    return path


def save_gif(frames: Tensor, path: str | Path, fps: float = 10, upscale: int = 4, mode: str = "bilinear",
             value_range=(-1.0, 1.0)) -> Path:
    """Write ``N×3×H×W`` frames as a looping GIF (atomic), enlarged ``upscale`` times
    (``mode`` "bilinear" or "nearest") so that small renders are viewable."""
    from PIL import Image

    x = frames.detach().float().cpu()
    if x.dim() != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise ValueError(f"{path}: expected N×3×H×W frames, got shape {tuple(x.shape)}")
    if upscale and upscale != 1:
        kw = {"align_corners": False} if mode == "bilinear" else {}
        x = F.interpolate(x, scale_factor=upscale, mode=mode, **kw)
    images = [Image.fromarray(_to_uint8(f, value_range)) for f in x]
    path = Path(path)
    with atomic_path(path, suffix=".gif") as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(int(round(1000 / fps)), 10), loop=0, optimize=False)
    return path


def mesh_vertices(depth: Tensor, renderer) -> Tensor:
    """Canonical depth ``S×S`` lifted to 3-D (§3.2) in the export convention (x, −y, 1 − z)·100,
    ``S×S×3``."""
    d = depth.detach().reshape(1, *depth.shape[-2:]).float()
    P = renderer.depth_to_3d(d)[0]
    return torch.stack([P[..., 0], -P[..., 1], 1 - P[..., 2]], -1) * 100


def _fmt_rows(prefix: str, a: np.ndarray, fmt: str) -> str:
    buf = io.StringIO()
    np.savetxt(buf, a, fmt=fmt)
    return "".join(f"{prefix} {line}\n" for line in buf.getvalue().splitlines())


def save_mesh_obj(depth: Tensor, renderer, texture: Tensor, path_obj: str | Path) -> dict[str, Path]:
    """Textured OBJ of the canonical depth (§1.8): ``path_obj`` + ``.mtl`` + ``.png`` (the texture,
    ``3×S×S`` in [−1, 1]) next to it. S² grid vertices + (S−1)² quad centres, 4 triangles per
    quad (see the module docstring). Returns the three paths."""
    path_obj = Path(path_obj)
    path_mtl, path_png = path_obj.with_suffix(".mtl"), path_obj.with_suffix(".png")
    S = depth.shape[-1]
    V = mesh_vertices(depth, renderer)  # S×S×3
    n = renderer.normals(depth.detach().reshape(1, S, S).float())[0]
    N = torch.stack([-n[..., 0], n[..., 1], n[..., 2]], -1)
    r = torch.arange(S, dtype=torch.float32)
    rr, cc = torch.meshgrid(r, r, indexing="ij")
    UV = torch.stack([cc / (S - 1), 1 - rr / (S - 1)], -1)

    def centres(x: Tensor) -> Tensor:  # mean of each quad's 4 corners, (S−1)²×k
        return ((x[:-1, :-1] + x[:-1, 1:] + x[1:, :-1] + x[1:, 1:]) / 4).reshape(-1, x.shape[-1])

    Nc = centres(N)
    Nc = Nc / Nc.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    verts = torch.cat([V.reshape(-1, 3), centres(V)], 0).numpy()
    uvs = torch.cat([UV.reshape(-1, 2), centres(UV)], 0).numpy()
    norms = torch.cat([N.reshape(-1, 3), Nc], 0).numpy()
    # 1-based indices: grid vertex r·S + c + 1, centre of quad (r, c) S² + r·(S−1) + c + 1
    idx = torch.arange(S * S).view(S, S) + 1
    tl, tr, bl, br = (idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1),
                      idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1))
    c = torch.arange((S - 1) ** 2) + S * S + 1
    # counter-clockwise seen from the camera (mesh y points up): TL → BL → BR → TR around C
    tris = torch.stack([torch.stack([c, tl, bl], 1), torch.stack([c, bl, br], 1),
                        torch.stack([c, br, tr], 1), torch.stack([c, tr, tl], 1)], 1).reshape(-1, 3)
    t = tris.numpy()
    faces = np.stack([t, t, t], -1).reshape(len(t), 9)
    text = (f"# gan2shape mesh: {S}x{S} depth map, {len(verts)} vertices, {len(t)} faces\n"
            f"mtllib {path_mtl.name}\n"
            + _fmt_rows("v", verts, "%.6f") + _fmt_rows("vt", uvs, "%.6f") + _fmt_rows("vn", norms, "%.6f")
            + "usemtl material_0\n"
            + _fmt_rows("f", faces, "%d/%d/%d %d/%d/%d %d/%d/%d"))
    _save_rgb(texture.reshape(3, S, S), path_png, (-1.0, 1.0))
    atomic_write_text("newmtl material_0\nKa 1.0 1.0 1.0\nKd 1.0 1.0 1.0\nKs 0.0 0.0 0.0\nd 1.0\n"
                      f"illum 1\nmap_Kd {path_png.name}\n", path_mtl)
    atomic_write_text(text, path_obj)  # last: an existing .obj implies its .mtl and .png
    return {"obj": path_obj, "mtl": path_mtl, "png": path_png}


def save_mesh_ply(depth: Tensor, renderer, colors: Tensor, path: str | Path, binary: bool = False) -> Path:
    """PLY of the canonical depth with per-vertex colours (``3×S×S`` in [−1, 1]) and normals:
    S² vertices (export convention), 2(S−1)² triangles (§3.3 grid, counter-clockwise from the
    camera). ASCII unless ``binary`` (little endian)."""
    from ..method.renderer import grid_faces

    S = depth.shape[-1]
    V = mesh_vertices(depth, renderer).reshape(-1, 3).numpy().astype(np.float32)
    n = renderer.normals(depth.detach().reshape(1, S, S).float())[0]
    Nm = torch.stack([-n[..., 0], n[..., 1], n[..., 2]], -1).reshape(-1, 3).numpy().astype(np.float32)
    C = _to_uint8(colors.reshape(3, S, S)).reshape(-1, 3)
    faces = grid_faces(S).numpy().astype(np.int32)
    header = ("ply\n" + ("format binary_little_endian 1.0\n" if binary else "format ascii 1.0\n")
              + "comment gan2shape canonical depth mesh\n"
              + f"element vertex {len(V)}\n"
              + "property float x\nproperty float y\nproperty float z\n"
              + "property float nx\nproperty float ny\nproperty float nz\n"
              + "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              + f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    path = Path(path)
    if binary:
        vdt = np.dtype([("p", "<f4", 3), ("n", "<f4", 3), ("c", "u1", 3)])
        va = np.empty(len(V), vdt)
        va["p"], va["n"], va["c"] = V, Nm, C
        fdt = np.dtype([("k", "u1"), ("i", "<i4", 3)])
        fa = np.empty(len(faces), fdt)
        fa["k"], fa["i"] = 3, faces
        data = header.encode("ascii") + va.tobytes() + fa.tobytes()
    else:
        buf = io.StringIO()
        np.savetxt(buf, np.concatenate([V, Nm], 1), fmt="%.6f")
        vlines = [f"{a} {c[0]} {c[1]} {c[2]}" for a, c in zip(buf.getvalue().splitlines(), C.tolist())]
        buf = io.StringIO()
        np.savetxt(buf, faces, fmt="3 %d %d %d")
        data = (header + "\n".join(vlines) + "\n" + buf.getvalue()).encode("ascii")
    with atomic_path(path, suffix=".ply") as tmp:
        tmp.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------
# figures (matplotlib / seaborn)
# --------------------------------------------------------------------------------------------

def _save_fig(fig, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def _figure(w: float, h: float):
    _mpl()
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def image_panel(images: Sequence[Tensor], titles: Sequence[str], path: str | Path, dpi: int = 100) -> Path:
    """One-row figure of ``3×H×W`` (or ``H×W``) images in [0, 1] with titles."""
    if len(images) != len(titles):
        raise ValueError(f"{path}: {len(images)} images but {len(titles)} titles")
    fig = _figure(2.2 * max(len(images), 1), 2.5)
    axes = fig.subplots(1, max(len(images), 1), squeeze=False)[0]
    for ax, img, title in zip(axes, images, titles):
        ax.imshow(_to_uint8(img, (0.0, 1.0)), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    return _save_fig(fig, path, dpi)


def _metric_frame(rows: Sequence[dict]):
    import pandas as pd

    df = pd.DataFrame(list(rows))
    for k in ("method", "side", "mad"):
        if k not in df.columns:
            raise ValueError(f"metric rows need a {k!r} column (got {list(df.columns)})")
    if "dataset" not in df.columns:
        df["dataset"] = ""
    df["dataset"] = df["dataset"].fillna("").astype(str).replace("", "all")
    df["method"] = df["method"].astype(str)
    for k in ("side", "mad"):
        df[k] = pd.to_numeric(df[k], errors="coerce")
    return df


def plot_metrics(rows: Sequence[dict], path_side: str | Path, path_mad: str | Path) -> tuple[Path, Path]:
    """Box + strip plots of per-image SIDE (×10⁻²) and MAD (degrees) per method, hue = dataset."""
    import seaborn as sns

    df = _metric_frame(rows)
    hue = "dataset" if df["dataset"].nunique() > 1 else None
    out = []
    for key, label, path in (("side", "SIDE (×10⁻²)", path_side), ("mad", "MAD (degrees)", path_mad)):
        d = df[np.isfinite(df[key])]
        fig = _figure(max(4.0, 1.3 * df["method"].nunique() + 2), 3.6)
        ax = fig.subplots()
        if len(d):
            with warnings.catch_warnings():  # seaborn 0.13.2 passes matplotlib 3.11's deprecated `vert`
                warnings.filterwarnings("ignore", message=".*vert: bool.*")
                sns.boxplot(data=d, x="method", y=key, hue=hue, ax=ax, showfliers=False)
            dots = {"color": "0.2"} if hue is None else {"palette": ["0.2"] * d[hue].nunique()}
            sns.stripplot(data=d, x="method", y=key, hue=hue, ax=ax, dodge=hue is not None,
                          size=3, alpha=0.6, legend=False, **dots)
        else:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(label)
        ax.set_xlabel("")
        ax.tick_params(axis="x", labelrotation=20)
        out.append(_save_fig(fig, path))
    return out[0], out[1]


def plot_losses(logs: dict[str, list[dict]], path: str | Path) -> Path:
    """Total loss per iteration, one line per image, coloured by step (1/2/3)."""
    import pandas as pd
    import seaborn as sns

    recs = [{"image": name, "iteration": int(e["iteration"]), "loss": float(e["loss"]),
             "step": f"step {int(e['step'])}"}
            for name, log in logs.items() for e in log
            if isinstance(e, dict) and "loss" in e and int(e.get("step", 0)) in (1, 2, 3)
            and math.isfinite(float(e["loss"]))]
    fig = _figure(6.0, 3.6)
    ax = fig.subplots()
    if recs:
        df = pd.DataFrame(recs)
        # break each image's line where the step changes (segments of consecutive entries)
        df["segment"] = df["image"] + ":" + (df["step"] != df["step"].shift()).cumsum().astype(str)
        sns.lineplot(data=df, x="iteration", y="loss", hue="step", hue_order=sorted(df["step"].unique()),
                     units="segment", estimator=None, ax=ax, marker="o", markersize=3, linewidth=1)
        if (df["loss"] > 0).all():
            ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no loss entries", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    return _save_fig(fig, path)


# --------------------------------------------------------------------------------------------
# per-image outputs
# --------------------------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def _read_npy(path: Path, ndim: int) -> Tensor:
    from ..data import read_npy

    a = np.asarray(read_npy(path), dtype=np.float32)
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    if a.ndim != ndim or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{path}: expected a square {ndim}-D array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{path}: contains NaN or Inf")
    return torch.from_numpy(a)


def _json_vec(d: dict, key: str, n: int, path: Path) -> list[float]:
    v = d.get(key)
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise ValueError(f"{path}: expected {key!r} to be a list of {n} numbers, got {v!r}")
    return [float(x) for x in v]


def load_reconstruction(result_dir: str | Path, image_size: int | None = None) -> dict:
    """depth ``1×S×S``, albedo ``1×3×S×S``, physical view ``1×6`` and light (k_a, k_d, dir) of a
    reconstruct folder, resized to ``image_size`` when given."""
    from ..utils import resize

    rd = Path(result_dir)
    depth = _read_npy(rd / "depth.npy", 2)
    albedo = _read_npy(rd / "albedo.npy", 3)
    if albedo.shape[0] != 3 or albedo.shape[-1] != depth.shape[-1]:
        raise ValueError(f"{rd / 'albedo.npy'}: shape {tuple(albedo.shape)} does not match depth "
                         f"{tuple(depth.shape)} (expected 3×S×S)")
    vj, lj = _read_json(rd / "view.json"), _read_json(rd / "light.json")
    view = torch.tensor([_json_vec(vj, "rotation_rad", 3, rd / "view.json")
                         + _json_vec(vj, "translation", 3, rd / "view.json")])
    for k in ("ambient", "diffuse"):
        if not isinstance(lj.get(k), (int, float)):
            raise ValueError(f"{rd / 'light.json'}: expected a number for {k!r}, got {lj.get(k)!r}")
    direction = torch.tensor(_json_vec(lj, "direction", 3, rd / "light.json"))
    S = image_size or depth.shape[-1]
    return {"depth": resize(depth[None, None], S)[:, 0], "albedo": resize(albedo[None], S),
            "view": view, "k_a": float(lj["ambient"]), "k_d": float(lj["diffuse"]),
            "direction": direction, "size": S}


def write_image_outputs(result_dir: str | Path, input_image_path: str | Path | None = None,
                        out_dir: str | Path | None = None, image_size: int | None = None,
                        device: str = "cpu", n_frames: int | None = None, max_yaw_deg: float = 70.0,
                        max_pitch_deg: float = 20.0, lights: str = "original", crop: int | None = None,
                        fps: float = 6, upscale: int | None = None) -> dict[str, Path]:
    """Figures of one reconstruct folder, written to ``out_dir`` (default ``result_dir/figures``):
    input.png, depth.png (colour map), normal.png, albedo.png, shading.png (shape image), recon.png
    (the texture re-rendered in the input view) -- all of the canonical maps --, relight.gif
    (§1.8 lights), rotate.gif (``n_frames`` yaw angles in ±``max_yaw_deg``, default 9, then
    max(3, ⌈n/2⌉) pitch angles in ±``max_pitch_deg``, default 5), mesh.obj/.mtl/.png, mesh.ply,
    panel.png. Returns {file name: path}."""
    from ..method.renderer import Renderer
    from ..method.sampling import rotation_sweep

    rd = Path(result_dir)
    out = Path(out_dir) if out_dir is not None else rd / "figures"
    rec = load_reconstruction(rd, image_size)
    S = rec["size"]
    dev = torch.device(device)
    depth, albedo, view = rec["depth"].to(dev), rec["albedo"].to(dev), rec["view"].to(dev)
    k_a, k_d, direction = rec["k_a"], rec["k_d"], rec["direction"].to(dev)
    renderer = Renderer(S).to(dev)  # as in training: the relit/recon renders match the reconstruction
    mesh_renderer = Renderer(S, faithful=False).to(dev)  # rotations: pixels centred on the vertices
    up = upscale or max(1, 256 // S)
    files: dict[str, Path] = {}

    normals = renderer.normals(depth)[0]
    texture = canonical_texture(renderer, depth, albedo, k_a, k_d, direction)
    panel, titles = [], []
    if input_image_path is not None:
        from ..data import load_image

        img, _ = load_image(input_image_path, S, crop)
        files["input.png"] = _save_rgb(img[0], out / "input.png", (-1.0, 1.0))
        panel.append((img[0] + 1) / 2)
        titles.append("input")
    maps = {
        "depth.png": ("depth", depth_to_color(depth[0])),
        "normal.png": ("normal", normals_to_image(normals)),
        "albedo.png": ("albedo", (albedo[0].cpu() + 1) / 2),
        "shading.png": ("shape", shading_image(normals)),
    }
    with torch.no_grad():
        recon, _, _ = renderer.render(texture, depth, view)
    maps["recon.png"] = ("reconstruction", (recon[0].cpu() + 1) / 2)
    for name, (title, img) in maps.items():
        files[name] = _save_rgb(img, out / name, (0.0, 1.0))
        panel.append(img)
        titles.append(title)
    files["panel.png"] = image_panel(panel, titles, out / "panel.png")

    relit = relight_frames(renderer, depth, albedo, view, k_a, k_d, lights=lights)
    files["relight.gif"] = save_gif(relit, out / "relight.gif", fps=fps, upscale=up)
    n_yaw = n_frames or 9
    n_pitch = 5 if n_frames is None else max(3, math.ceil(n_frames / 2))
    views = rotation_sweep(n_yaw, max_yaw_deg, n_pitch, max_pitch_deg).to(dev)
    rot = rotate_frames(mesh_renderer, depth, albedo, k_a, k_d, direction, views,
                        colors=texture)
    files["rotate.gif"] = save_gif(rot, out / "rotate.gif", fps=fps, upscale=up)

    mesh = save_mesh_obj(depth[0].cpu(), renderer, texture[0].cpu(), out / "mesh.obj")
    files.update({p.name: p for p in mesh.values()})
    files["mesh.ply"] = save_mesh_ply(depth[0].cpu(), renderer, texture[0].cpu(), out / "mesh.ply")
    return files


# --------------------------------------------------------------------------------------------
# HTML report
# --------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222}
h1{margin-bottom:.2em} .meta{color:#666;font-size:.9em;margin-bottom:1.5em}
table{border-collapse:collapse;margin:.5em 0 1.5em} th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.figs img{max-width:48%;margin:.3em;border:1px solid #ddd}
.row{display:flex;flex-wrap:wrap;align-items:flex-start;gap:.4em;margin:.6em 0;padding:.4em;border-top:1px solid #eee}
.row figure{margin:0;text-align:center;font-size:.8em} .row img{width:128px;height:128px;image-rendering:pixelated}
.name{width:12em;font-size:.85em} .name b{font-size:1.1em}
"""


def _default_machine() -> str:
    parts = [platform.platform(), f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(0))
    else:
        parts.append(f"CPU ({os.cpu_count()} cores)")
    return ", ".join(parts)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.3f}"
    return html.escape(str(v))


def _summary_table(summaries: dict | Sequence[dict]) -> str:
    """Table of ``gan2shape evaluate`` JSON summaries ({dataset, images, methods: {label: stats}})."""
    if isinstance(summaries, dict):
        summaries = [summaries]
    head = ("<tr><th class=l>dataset</th><th class=l>method</th><th>n</th><th>SIDE (×10⁻²)</th>"
            "<th>MAD (deg)</th><th>MAD, unit normals (deg)</th></tr>")
    body = []
    for s in summaries:
        for label, m in (s.get("methods") or {}).items():
            def ms(k):
                a, b = m.get(f"{k}_mean"), m.get(f"{k}_std")
                return "–" if a is None else f"{_fmt(float(a))} ± {_fmt(float(b if b is not None else math.nan))}"
            body.append(f"<tr><td class=l>{_fmt(s.get('dataset', ''))}</td><td class=l>{_fmt(label)}</td>"
                        f"<td>{_fmt(m.get('n', ''))}</td><td>{ms('side')}</td><td>{ms('mad')}</td>"
                        f"<td>{ms('mad_unit')}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _generic_table(t: dict) -> str:
    cols = t.get("columns", [])
    head = "".join(f"<th>{_fmt(c)}</th>" for c in cols)
    rows = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in t.get("rows", []))
    return f"<table><tr>{head}</tr>{rows}</table>"


def _image_row(entry, base: Path) -> str:
    """One image: its figure files (those that exist) and mesh links, with per-image metrics."""
    if not isinstance(entry, dict):
        entry = {"dir": entry}
    d = Path(entry["dir"])
    name = entry.get("name") or (d.parent.name if d.name == "figures" else d.name)
    metrics = entry.get("metrics") or {}

    def rel(p: Path) -> str:
        return quote(Path(os.path.relpath(p.resolve(), base.resolve())).as_posix())

    cells = [f"<div class=name><b>{html.escape(str(name))}</b><br>"]
    for k in ("seconds", "iterations", "side", "mad"):
        if k in metrics and isinstance(metrics[k], (int, float)):
            cells.append(f"{k}: {_fmt(float(metrics[k]) if isinstance(metrics[k], float) else metrics[k])}<br>")
    links = [f'<a href="{rel(d / f)}">{f}</a>' for f in MESH_FILES if (d / f).is_file()]
    if links:
        cells.append("mesh: " + " · ".join(links))
    cells.append("</div>")
    for f in FIGURE_FILES:
        if (d / f).is_file():
            cells.append(f'<figure><img src="{rel(d / f)}" alt="{html.escape(name)} {f}">'
                         f"<figcaption>{f.rsplit('.', 1)[0]}</figcaption></figure>")
    return f"<div class=row>{''.join(cells)}</div>"


def write_report(out_html: str | Path, sections: Sequence[dict], title: str = "GAN2Shape results",
                 date: str | None = None, machine: str | None = None) -> Path:
    """A static, self-contained HTML page (inline CSS, relative links, nothing external).

    Each section is a dict with ``title`` and one of: ``summary`` (one or a list of
    ``gan2shape evaluate`` JSON dicts → metrics table), ``table`` ({columns, rows}), ``figures``
    (image paths), ``images`` (figure folders of :func:`write_image_outputs`, or dicts
    {dir, name, metrics}), ``text`` (a paragraph). Paths are made relative to the HTML file."""
    out = Path(out_html)
    base = out.parent
    base.mkdir(parents=True, exist_ok=True)
    date = date or _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    machine = machine or _default_machine()
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<div class=meta>{html.escape(date)} · {html.escape(machine)}</div>"]
    for sec in sections:
        if sec.get("title"):
            parts.append(f"<h2>{html.escape(str(sec['title']))}</h2>")
        if sec.get("text"):
            parts.append(f"<p>{html.escape(str(sec['text']))}</p>")
        if sec.get("summary") is not None:
            parts.append(_summary_table(sec["summary"]))
        if sec.get("table") is not None:
            parts.append(_generic_table(sec["table"]))
        if sec.get("figures"):
            imgs = []
            for p in sec["figures"]:
                p = Path(p)
                if not p.is_file():
                    raise FileNotFoundError(f"{p}: figure for the report not found")
                r = quote(Path(os.path.relpath(p.resolve(), base.resolve())).as_posix())
                imgs.append(f'<a href="{r}"><img src="{r}" alt="{html.escape(p.stem)}"></a>')
            parts.append(f"<div class=figs>{''.join(imgs)}</div>")
        for entry in sec.get("images") or []:
            parts.append(_image_row(entry, base))
    parts.append("</body></html>\n")
    atomic_write_text("\n".join(parts), out)
    return out


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def cmd_figures(args: argparse.Namespace) -> int:
    """Figures, GIFs and meshes of one reconstruction."""
    files = write_image_outputs(args.result_dir, args.image, args.out_dir, args.image_size, args.device,
                                n_frames=args.n_frames, max_yaw_deg=args.max_yaw, lights=args.lights,
                                crop=args.crop)
    print(f"wrote {len(files)} files to {Path(next(iter(files.values()))).parent}")
    return 0


def _figure_dir(d: Path) -> tuple[Path, Path]:
    """(folder with the figure files, reconstruct folder with log/metrics) of a --image-dirs entry."""
    if (d / "figures" / "panel.png").is_file():
        return d / "figures", d
    if (d / "log.json").is_file() or (d / "metrics.json").is_file():
        return d, d
    return d, d.parent


def _read_csv_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cmd_report(args: argparse.Namespace) -> int:
    """Static HTML report: metrics table and plots, loss curves and per-image figures."""
    out = Path(args.out)
    assets = out.parent / f"{out.stem}_files"
    sections: list[dict] = []
    if args.metrics_json:
        sections.append({"title": "Shape accuracy", "summary": [_read_json(Path(p)) for p in args.metrics_json]})
    if args.metrics_csv:
        rows = list(itertools.chain.from_iterable(_read_csv_rows(Path(p)) for p in args.metrics_csv))
        if rows:
            side, mad = plot_metrics(rows, assets / "side.png", assets / "mad.png")
            sections.append({"title": "Per-image SIDE and MAD", "figures": [side, mad]})
    entries, logs = [], {}
    for d in args.image_dirs or []:
        fig_dir, res_dir = _figure_dir(Path(d))
        name = res_dir.name
        metrics = _read_json(res_dir / "metrics.json") if (res_dir / "metrics.json").is_file() else {}
        name = str(metrics.get("name", name))
        if (res_dir / "log.json").is_file():
            log = _read_json(res_dir / "log.json")
            if isinstance(log, list):
                logs[name] = log
        entries.append({"dir": fig_dir, "name": name, "metrics": metrics})
    if logs:
        sections.append({"title": "Training losses", "figures": [plot_losses(logs, assets / "losses.png")]})
    if entries:
        sections.append({"title": "Images", "images": entries})
    write_report(out, sections, title=args.title)
    print(f"wrote {out}")
    return 0


def add_cli(sub) -> None:
    """Register ``gan2shape figures`` and ``gan2shape report``."""
    p = sub.add_parser("figures", help=cmd_figures.__doc__)
    p.add_argument("--result-dir", required=True, type=Path, help="a `gan2shape reconstruct` image folder")
    p.add_argument("--image", type=Path, help="the input image (for input.png and the panel)")
    p.add_argument("--out-dir", type=Path, help="output folder (default: RESULT_DIR/figures)")
    p.add_argument("--image-size", type=int, help="working size (default: that of depth.npy)")
    p.add_argument("--crop", type=int, help="centre crop of the input image, as in reconstruct")
    p.add_argument("--n-frames", type=int, help="yaw frames of rotate.gif (default: the original 9 + 5 pitch)")
    p.add_argument("--max-yaw", type=float, default=70.0, help="yaw range in degrees (original: 45 car/church/horse)")
    p.add_argument("--lights", default="original", choices=["original", "circle"], help="relighting set")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_figures)

    r = sub.add_parser("report", help=cmd_report.__doc__)
    r.add_argument("--metrics-json", nargs="*", type=Path, default=[], help="`gan2shape evaluate --out-json` files")
    r.add_argument("--metrics-csv", nargs="*", type=Path, default=[], help="`gan2shape evaluate --out-csv` files")
    r.add_argument("--image-dirs", nargs="*", type=Path, default=[],
                   help="figure folders (or reconstruct folders holding a figures/ subfolder)")
    r.add_argument("--out", required=True, type=Path, help="output HTML; plots go to <stem>_files/ beside it")
    r.add_argument("--title", default="GAN2Shape results")
    r.set_defaults(func=cmd_report)
