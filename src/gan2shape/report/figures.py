"""Per-image outputs of one reconstruction, and the ``gan2shape figures`` stage command.

``gan2shape figures`` turns one reconstruct folder (+ its input image, prior and ground-truth
depth when given) into the files of :func:`write_image_outputs`: colour maps, the comparison
input | prior | GAN2Shape depth | ground truth | error, relighting and rotation GIFs, meshes, a
panel, and ``run.json`` (name, prior, the reconstruction's metrics and training log), so the
report reads everything about an image from its figure folder.

``gan2shape comparison-figure`` puts several reconstructions in one figure, one row per image
(:func:`comparison_figure`: input | prior | depth | ground truth | error | relit | rotated).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data import save_json
from .frames import (canonical_texture, colorize, depth_to_color, normals_to_image, relight_frames,
                     rotate_frames, rotation_loop, save_gif, save_rgb, shading_image)
from .meshes import save_mesh_obj, save_mesh_ply
from .plots import image_grid, image_panel

# |log-depth error| (the quantity whose masked std is SIDE) mapped to the full colour range of error.png
ERROR_MAX = 0.05
# per-image files in report order: (file, caption); those absent (no prior, no ground truth) are skipped
FIGURE_FILES = (("input.png", "input"), ("prior.png", "prior"), ("depth_view.png", "GAN2Shape depth"),
                ("gt.png", "ground truth"), ("error.png", "|error|"), ("normal.png", "normals"),
                ("albedo.png", "albedo"), ("shading.png", "shape"), ("recon.png", "re-rendered"),
                ("relight.gif", "relit"), ("rotate.gif", "rotated"))
MESH_FILES = ("mesh.obj", "mesh.ply")
RUN_FILE = "run.json"


def read_json(path: Path):
    """Parsed JSON of ``path``, with the path in the error when missing or invalid."""
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
    vj, lj = read_json(rd / "view.json"), read_json(rd / "light.json")
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




def comparison_maps(recon_depth: Tensor, prior: Tensor | None = None, gt: Tensor | None = None,
                    max_valid_depth: float = 1.2) -> dict[str, Tensor]:
    """Colour maps (``3×S×S`` in [0, 1]) of the input-view depth, the prior and the ground truth on
    one shared scale (the ground truth's range when given, else the depth's), and with ground truth
    error.png: |δ − mean δ| with δ = log depth − log gt inside the evaluation mask (its masked RMS is
    SIDE), 0 → ``ERROR_MAX``, grey outside the mask."""
    from ..method.metrics import depth_metrics

    d = recon_depth.reshape(recon_depth.shape[-2:]).float().cpu()
    ref = d if gt is None else gt.reshape(d.shape).float().cpu()
    lo, hi = float(ref.min()), float(ref.max())
    out = {"depth_view.png": depth_to_color(d, lo, hi)}
    if prior is not None:
        out["prior.png"] = depth_to_color(prior.reshape(d.shape).float().cpu(), lo, hi)
    if gt is not None:
        g = ref
        out["gt.png"] = depth_to_color(g, lo, hi)
        m = depth_metrics(d[None], g[None], max_valid_depth=max_valid_depth)["mask"][0].bool()
        delta = torch.log(d) - torch.log(g)
        err = (delta - delta[m].mean()).abs() if m.any() else torch.zeros_like(d)
        out["error.png"] = torch.where(m, colorize(err, 0.0, ERROR_MAX), torch.full_like(out["gt.png"], 0.5))
    return out


def write_image_outputs(result_dir: str | Path, input_image_path: str | Path | None = None,
                        out_dir: str | Path | None = None, image_size: int | None = None,
                        device: str = "cpu", n_frames: int | None = None, max_yaw_deg: float = 70.0,
                        max_pitch_deg: float = 20.0, lights: str = "original", crop: int | None = None,
                        fps: float = 6, upscale: int | None = None, prior_path: str | Path | None = None,
                        prior_name: str | None = None, gt_path: str | Path | None = None,
                        gt_encoding: str = "unsup3d") -> dict[str, Path]:
    """Figures of one reconstruct folder, written to ``out_dir`` (default ``result_dir/figures``):
    input.png; the input-view comparison depth_view.png, prior.png (with ``prior_path``), gt.png
    and error.png (with ``gt_path``) of :func:`comparison_maps`; the canonical maps depth.png,
    normal.png, albedo.png, shading.png (shape image), recon.png (the texture re-rendered in the
    input view); relight.gif (§1.8 lights); rotate.gif (a loop starting in the input view:
    ``n_frames`` yaw frames within ±``max_yaw_deg``, default 9, then max(3, ⌈n/2⌉) pitch frames
    within ±``max_pitch_deg``, default 5); mesh.obj/.mtl/.png, mesh.ply; panel.png; and run.json
    {name, prior, metrics, log} from the folder's metrics.json and log.json. Returns {file name: path}."""
    from ..data import load_array, load_depth
    from ..method.renderer import Renderer

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
    maps: dict[str, Tensor] = {}
    if input_image_path is not None:
        from ..data import load_image

        maps["input.png"] = (load_image(input_image_path, S, crop)[0][0] + 1) / 2
    prior = load_array(prior_path, S) if prior_path is not None else None
    gt = load_depth(gt_path, S, crop, encoding=gt_encoding) if gt_path is not None else None
    maps.update(comparison_maps(load_array(rd / "recon_depth.npy", S), prior, gt))
    maps["depth.png"] = depth_to_color(depth[0])
    maps["normal.png"] = normals_to_image(normals)
    maps["albedo.png"] = (albedo[0].cpu() + 1) / 2
    maps["shading.png"] = shading_image(normals)
    with torch.no_grad():
        recon, _, _ = renderer.render(texture, depth, view)
    maps["recon.png"] = (recon[0].cpu() + 1) / 2
    for name, img in maps.items():
        files[name] = save_rgb(img, out / name, (0.0, 1.0))
    captions = dict(FIGURE_FILES)
    shown = [n for n, _ in FIGURE_FILES if n in maps]
    files["panel.png"] = image_panel([maps[n] for n in shown], [captions[n] for n in shown], out / "panel.png")

    relit = relight_frames(renderer, depth, albedo, view, k_a, k_d, lights=lights)
    files["relight.gif"] = save_gif(relit, out / "relight.gif", fps=fps, upscale=up)
    n_yaw = n_frames or 9
    n_pitch = 5 if n_frames is None else max(3, math.ceil(n_frames / 2))
    views = rotation_loop(rec["view"], n_yaw, max_yaw_deg, n_pitch, max_pitch_deg).to(dev)
    rot = rotate_frames(mesh_renderer, depth, albedo, k_a, k_d, direction, views, colors=texture)
    files["rotate.gif"] = save_gif(rot, out / "rotate.gif", fps=fps, upscale=up)

    mesh = save_mesh_obj(depth[0].cpu(), renderer, texture[0].cpu(), out / "mesh.obj")
    files.update({p.name: p for p in mesh.values()})
    files["mesh.ply"] = save_mesh_ply(depth[0].cpu(), renderer, texture[0].cpu(), out / "mesh.ply")

    metrics = read_json(rd / "metrics.json") if (rd / "metrics.json").is_file() else {}
    log = read_json(rd / "log.json") if (rd / "log.json").is_file() else []
    save_json({"name": str(metrics.get("name", rd.name)), "prior": prior_name or "", "metrics": metrics,
               "log": log if isinstance(log, list) else []}, out / RUN_FILE)
    files[RUN_FILE] = out / RUN_FILE
    return files


# the light of the relit column of comparison_figure: (dx, dy, r) of ORIGINAL_RELIGHT, from the left
COMPARISON_LIGHT = (-1.5, 0.0, 0.3)


def comparison_figure(result_dirs: list[str | Path], images: list[str | Path], gts: list[str | Path],
                      path: str | Path, priors: list[str | Path] | None = None, names: list[str] | None = None,
                      image_size: int | None = None, gt_encoding: str = "unsup3d", max_yaw_deg: float = 45.0,
                      label: str = "GAN2Shape depth", device: str = "cpu") -> Path:
    """One row per reconstruction: input | prior (with ``priors``) | input-view depth | ground truth |
    error (:func:`comparison_maps`) | relit in the input view (light :data:`COMPARISON_LIGHT`) |
    the canonical shape rotated by −/+``max_yaw_deg``; each row labelled with its name, SIDE (×10⁻²)
    and MAD (degrees)."""
    from ..data import load_array, load_depth, load_image
    from ..method.renderer import Renderer
    from .evaluate import evaluate_method

    n = len(result_dirs)
    for what, v in (("images", images), ("gts", gts), ("priors", priors), ("names", names)):
        if v is not None and len(v) != n:
            raise ValueError(f"{path}: {n} result folders but {len(v)} {what}")
    rows, labels = [], []
    for i, rd in enumerate(result_dirs):
        rd = Path(rd)
        rec = load_reconstruction(rd, image_size)
        S, dev = rec["size"], torch.device(device)
        depth, albedo, view = rec["depth"].to(dev), rec["albedo"].to(dev), rec["view"].to(dev)
        recon_depth = load_array(rd / "recon_depth.npy", S)
        gt = load_depth(gts[i], S, encoding=gt_encoding)
        prior = load_array(priors[i], S) if priors is not None else None
        maps = comparison_maps(recon_depth, prior, gt)
        renderer, mesh_renderer = Renderer(S).to(dev), Renderer(S, faithful=False).to(dev)
        relit = relight_frames(renderer, depth, albedo, view, rec["k_a"], rec["k_d"], lights=[COMPARISON_LIGHT])
        views = rec["view"].repeat(2, 1)
        views[:, 1] += torch.deg2rad(torch.tensor([-max_yaw_deg, max_yaw_deg]))
        texture = canonical_texture(renderer, depth, albedo, rec["k_a"], rec["k_d"], rec["direction"].to(dev))
        rot = rotate_frames(mesh_renderer, depth, albedo, rec["k_a"], rec["k_d"], rec["direction"].to(dev),
                            views.to(dev), colors=texture)
        row = [(load_image(images[i], S)[0][0] + 1) / 2]
        row += [maps["prior.png"]] if prior is not None else []
        row += [maps["depth_view.png"], maps["gt.png"], maps["error.png"],
                (relit[0].cpu() + 1) / 2, (rot[0].cpu() + 1) / 2, (rot[1].cpu() + 1) / 2]
        rows.append(row)
        m = evaluate_method({"x": recon_depth}, {"x": gt}, allow_failed=True)[0]
        labels.append(f"{names[i] if names else rd.name}\nSIDE {m['side']:.2f}  MAD {m['mad']:.1f}°")
    titles = ["input"] + (["prior"] if priors is not None else []) + [label, "ground truth", "|error|", "relit",
                                                                       f"rotated −{max_yaw_deg:g}°",
                                                                       f"rotated +{max_yaw_deg:g}°"]
    return image_grid(rows, titles, path, row_labels=labels)


def cmd_comparison_figure(args: argparse.Namespace) -> int:
    """One figure of several reconstructions: per image input | prior | depth | ground truth | error | relit |
    rotated."""
    from ..stages.common import check_output_file

    check_output_file(args.out, "--out")
    path = comparison_figure(args.result_dir, args.image, args.gt_depth, args.out, priors=args.prior_depth,
                             names=args.name, image_size=args.image_size, gt_encoding=args.gt_encoding,
                             max_yaw_deg=args.max_yaw, label=args.label, device=args.device)
    print(f"wrote {path}")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    """Figures, GIFs, meshes and run.json of one reconstruction."""
    crop = args.crop
    if crop is None and args.preset:  # the preset's crop, as in `gan2shape reconstruct --preset`
        from ..method.config import preset

        crop = preset(args.preset).crop
    files = write_image_outputs(args.result_dir, args.image, args.out_dir, args.image_size, args.device,
                                n_frames=args.n_frames, max_yaw_deg=args.max_yaw, lights=args.lights,
                                crop=crop or None, prior_path=args.prior_depth, prior_name=args.prior_name,
                                gt_path=args.gt_depth, gt_encoding=args.gt_encoding)
    print(f"wrote {len(files)} files to {Path(next(iter(files.values()))).parent}")
    return 0


def add_cli(sub) -> None:
    """Register ``gan2shape figures``."""
    p = sub.add_parser("figures", help=cmd_figures.__doc__)
    p.add_argument("--result-dir", required=True, type=Path, help="a `gan2shape reconstruct` image folder")
    p.add_argument("--image", type=Path, help="the input image (for input.png and the panel)")
    p.add_argument("--out-dir", type=Path, help="output folder (default: RESULT_DIR/figures)")
    p.add_argument("--image-size", type=int, help="working size (default: that of depth.npy)")
    p.add_argument("--preset", help="method preset of the reconstruction (for its crop, as in reconstruct)")
    p.add_argument("--crop", type=int, help="centre crop of the input image and ground truth (default: the "
                   "preset's; 0: none), as in reconstruct")
    p.add_argument("--prior-depth", type=Path, help="the prior depth map (.npy) the reconstruction started from")
    p.add_argument("--prior-name", help="the prior's name, recorded in run.json (the report's row label)")
    p.add_argument("--gt-depth", type=Path, help="ground-truth depth (.npy or depth PNG): gt.png and error.png")
    p.add_argument("--gt-encoding", default="unsup3d", choices=["unsup3d", "synthetic"],
                   help="depth PNG encoding of --gt-depth")
    p.add_argument("--n-frames", type=int, help="yaw frames of rotate.gif (default: the original 9 + 5 pitch)")
    p.add_argument("--max-yaw", type=float, default=70.0, help="yaw range in degrees (original: 45 car/church/horse)")
    p.add_argument("--lights", default="original", choices=["original", "circle"], help="relighting set")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_figures)

    c = sub.add_parser("comparison-figure", help=cmd_comparison_figure.__doc__)
    c.add_argument("--result-dir", nargs="+", required=True, type=Path, help="`gan2shape reconstruct` image folders")
    c.add_argument("--image", nargs="+", required=True, type=Path, help="their input images (same order)")
    c.add_argument("--gt-depth", nargs="+", required=True, type=Path, help="their ground-truth depth (.npy or PNG)")
    c.add_argument("--gt-encoding", default="unsup3d", choices=["unsup3d", "synthetic"],
                   help="depth PNG encoding of --gt-depth")
    c.add_argument("--prior-depth", nargs="+", type=Path, help="the priors the runs started from (.npy; a column)")
    c.add_argument("--name", nargs="+", help="row labels (default: the folder names)")
    c.add_argument("--label", default="GAN2Shape depth", help="title of the depth column")
    c.add_argument("--image-size", type=int, help="working size (default: that of depth.npy)")
    c.add_argument("--max-yaw", type=float, default=45.0, help="yaw of the rotated columns, degrees")
    c.add_argument("--device", default="cpu")
    c.add_argument("--out", required=True, type=Path, help="the PNG to write")
    c.set_defaults(func=cmd_comparison_figure)
