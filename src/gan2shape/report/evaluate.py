"""Shape accuracy against ground truth: SIDE and MAD per image and per method (METHOD §8).

Predictions are depth maps *in the input view* (``recon_depth.npy`` of a reconstruction, a prior
map, or a constant); ground truth comes from a test set with depth. Each method is given as
``LABEL=PATTERN`` where ``PATTERN`` contains ``{name}`` (the image name), e.g.
``gan2shape=results/reconstruct/face/{name}/recon_depth.npy``; ``LABEL=constant`` is the
constant-depth baseline and ``LABEL=average`` the paper's average ground-truth depth
(:func:`average_depth` of the evaluated images). A pattern may contain ``*`` (one folder level
whose name the caller does not know, e.g. the group folder of a run that shared one model over
several images); it must match exactly one file per image.

A prediction with NaN or Inf values (or whose metrics are not finite) is an error naming the file;
with ``--allow-failed`` it is counted as failed instead: ``n`` counts the images the means are over,
``n_failed`` and ``failed`` the others, and the CSV marks their rows ``status=failed``.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import logging
import math
from pathlib import Path

import torch

from ..data import load_array, load_depth, save_json
from ..io import atomic_write_text
from ..method.metrics import depth_metrics
from ..method.renderer import Renderer

log = logging.getLogger("gan2shape")
METRICS = ("side", "mad", "mad_unit", "mae", "mse")


def evaluate_method(preds: dict[str, torch.Tensor | None], gts: dict[str, torch.Tensor],
                    max_valid_depth: float = 1.2, sources: dict[str, str] | None = None,
                    allow_failed: bool = False) -> list[dict]:
    """Per-image SIDE (×100, as papers report it) and MAD (degrees; ``mad`` = original protocol with
    its near-unit normals, ``mad_unit`` = true angle) of ``preds`` (1×S×S each).

    A non-finite prediction or metric raises ``ValueError`` naming ``sources[name]`` (the file);
    with ``allow_failed`` its row gets ``status: failed`` and NaN metrics instead (a ``None``
    prediction is such a failure)."""
    rows = []
    renderers: dict[int, Renderer] = {}
    sources = sources or {}
    for name, gt in gts.items():
        if name not in preds:
            raise KeyError(f"no prediction for image {name!r}")
        pred = preds[name]
        where = sources.get(name, name)
        if pred is None or not torch.isfinite(pred).all():
            if not allow_failed:
                raise ValueError(f"{where}: prediction has NaN/Inf values (--allow-failed counts it as failed)")
            log.warning("%s: prediction has NaN/Inf values; counted as failed", where)
            rows.append({"image": name, **{k: math.nan for k in METRICS}, "status": "failed"})
            continue
        s = gt.shape[-1]
        if pred.shape[-1] != s:
            raise ValueError(f"{name}: prediction is {pred.shape[-1]} px, ground truth {s} px")
        r = renderers.setdefault(s, Renderer(s))
        m = depth_metrics(pred.reshape(1, s, s).float(), gt.reshape(1, s, s).float(), r.normals,
                          max_valid_depth=max_valid_depth)
        row = {"image": name, "side": 100 * float(m["side"][0]), "mad": float(m["mad"][0]),
               "mad_unit": float(m["mad_unit"][0]), "mae": float(m["mae"][0]), "mse": float(m["mse"][0]),
               "status": "ok"}
        bad = [k for k in METRICS if not math.isfinite(row[k])]
        if bad:
            if not allow_failed:
                raise ValueError(f"{where}: non-finite {', '.join(bad)} (empty ground-truth mask or a degenerate "
                                 f"prediction; --allow-failed counts it as failed)")
            log.warning("%s: non-finite %s; counted as failed", where, ", ".join(bad))
            row.update({k: math.nan for k in METRICS}, status="failed")
        rows.append(row)
    return rows


def average_depth(gts: torch.Tensor) -> torch.Tensor:
    """The paper's "average GT depth" baseline of ``gts`` (``B×S×S`` or ``B×1×S×S``): per pixel, the
    mean ground-truth depth over the images where that pixel is object (nearer than the image's
    background, its maximum), else the mean background depth. Returns ``S×S``."""
    d = gts.reshape(gts.shape[0], *gts.shape[-2:]).double()
    far = d.flatten(1).amax(1).view(-1, 1, 1)
    obj = d < far
    mean = (d * obj).sum(0) / obj.sum(0).clamp(min=1)
    return torch.where(obj.any(0), mean, far.mean()).to(gts.dtype)


def summarize(rows: list[dict]) -> dict:
    """Mean and (population) standard deviation of SIDE and MAD over the images that did not fail
    (``n``); failed images are counted in ``n_failed`` and named in ``failed``."""
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    out: dict = {"n": len(ok), "n_failed": len(rows) - len(ok),
                 "failed": [r["image"] for r in rows if r.get("status", "ok") != "ok"]}
    for k in ("side", "mad", "mad_unit"):
        v = torch.tensor([r[k] for r in ok], dtype=torch.float64)
        if not torch.isfinite(v).all():
            raise ValueError(f"non-finite {k} among the images counted as evaluated")
        out[f"{k}_mean"] = float(v.mean()) if len(v) else math.nan
        out[f"{k}_std"] = float(v.std(unbiased=False)) if len(v) else math.nan
    return out


def plot_depth_comparison(names: list[str], images: list, preds: list[torch.Tensor], gts: list[torch.Tensor],
                          label: str, path: str | Path) -> None:
    """One row per image: input, recovered depth, ground truth, |error| inside the GT mask."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path
    from ..method.metrics import gt_mask

    n = len(names)
    fig, axes = plt.subplots(n, 4, figsize=(8, 2.1 * n), squeeze=False)
    for i, (name, img, pred, gt) in enumerate(zip(names, images, preds, gts)):
        m = gt_mask(gt.reshape(1, *gt.shape[-2:]))[0].bool()
        lo, hi = float(gt.reshape(-1)[m.reshape(-1)].min()) - 0.02, float(gt.max())
        err = torch.where(m, (pred.reshape(m.shape) - gt.reshape(m.shape)).abs(), torch.zeros_like(m, dtype=torch.float))
        panels = [(img, "input", None), (pred.reshape(m.shape), label, "viridis_r"),
                  (gt.reshape(m.shape), "ground truth", "viridis_r"), (err, "|error|", "magma")]
        for j, (x, title, cmap) in enumerate(panels):
            ax = axes[i, j]
            if cmap is None:
                ax.imshow(x)
            elif title == "|error|":
                ax.imshow(x.numpy(), cmap=cmap, vmin=0, vmax=0.05)
            else:
                ax.imshow(x.numpy(), cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(title if i == 0 else "", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(name, fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def _pred_path(pattern: str, name: str) -> Path:
    """The prediction file of image ``name``: ``pattern`` with ``{name}`` filled in; a ``*`` in it
    must match exactly one file (else the error names the pattern)."""
    path = pattern.format(name=name)
    if "*" not in path:
        return Path(path)
    found = sorted(glob.glob(path))
    if len(found) != 1:
        raise FileNotFoundError(f"{path}: {'no file matches' if not found else f'{len(found)} files match'} "
                                f"(expected exactly one: {', '.join(found[:3])})")
    return Path(found[0])


def _read_pred(pattern: str, name: str, size: int) -> torch.Tensor:
    return load_array(_pred_path(pattern, name), size)


def _predictions(label: str, pattern: str, names: list[str], gts: dict[str, torch.Tensor],
                 size: int) -> dict[str, torch.Tensor]:
    """{image: 1×S×S depth} of one ``--method LABEL=PATTERN``."""
    if pattern == "constant":
        return {n: torch.ones(1, size, size) for n in names}
    if pattern == "average":
        avg = average_depth(torch.stack([gts[n] for n in names]))[None]
        return {n: avg for n in names}
    if "{name}" not in pattern:
        raise SystemExit(f"--method {label}: the pattern must contain {{name}}")
    return {n: _read_pred(pattern, n, size) for n in names}


def cmd_evaluate(args: argparse.Namespace) -> int:
    """SIDE/MAD of each method against the ground-truth depth of a test set."""
    from ..stages.common import check_input, check_output_file

    check_input(args.list, "--list")
    for path, flag in ((args.out_json, "--out-json"), (args.out_csv, "--out-csv"), (args.figure, "--figure")):
        check_output_file(path, flag)
    names = [n for n in Path(args.list).read_text().split() if n]
    if not names:
        raise SystemExit(f"{args.list}: no image names")
    gts = {n: load_depth(Path(args.gt.format(name=n)), args.image_size, encoding=args.gt_encoding) for n in names}
    methods: dict[str, list[dict]] = {}
    for spec in args.method:
        if "=" not in spec:
            raise SystemExit(f"--method expects LABEL=PATTERN, got {spec!r}")
        label, pattern = spec.split("=", 1)
        preds = _predictions(label, pattern, names, gts, args.image_size)
        sources = {n: label if pattern in ("constant", "average") else f"{label}: {_pred_path(pattern, n)}"
                   for n in names}
        methods[label] = evaluate_method(preds, gts, sources=sources, allow_failed=args.allow_failed)
    summary = {label: summarize(rows) for label, rows in methods.items()}
    save_json({"dataset": args.dataset, "images": len(names), "methods": summary}, args.out_json)
    if args.out_csv is not None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["dataset", "method", "image", *METRICS, "status"])
        w.writeheader()
        for label, rows in methods.items():
            for r in rows:
                w.writerow({"dataset": args.dataset, "method": label, **r})
        atomic_write_text(buf.getvalue(), args.out_csv)
    if args.figure is not None:
        from PIL import Image

        label = args.method[-1].split("=", 1)[0]
        pattern = args.method[-1].split("=", 1)[1]
        shown = names[:args.figure_images]
        by_name = _predictions(label, pattern, names, gts, args.image_size)
        preds = [by_name[n] for n in shown]
        images = [Image.open(args.image.format(name=n)).convert("RGB") if args.image else
                  Image.new("RGB", (args.image_size, args.image_size)) for n in shown]
        plot_depth_comparison(shown, images, preds, [gts[n] for n in shown], label, args.figure)
    for label, s in summary.items():
        failed = f", {s['n_failed']} failed: {' '.join(s['failed'])}" if s["n_failed"] else ""
        print(f"{args.dataset:>14s} {label:>20s}  SIDE {s['side_mean']:.3f} ± {s['side_std']:.3f} (×1e-2)"
              f"  MAD {s['mad_mean']:.2f} ± {s['mad_std']:.2f} deg (true angle {s['mad_unit_mean']:.2f})"
              f"  (n={s['n']}{failed})")
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    """The run's headline numbers: accuracy of the main method, every method's table, seconds per image."""
    import json

    runs = []
    for path in args.runs:
        try:
            runs.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as e:
            raise SystemExit(f"{path}: unreadable run metrics ({e})")
    seconds = [r["seconds"] for r in runs if "seconds" in r]
    out: dict = {"dataset": args.dataset, "preset": args.preset, "np": args.np, "runs": len(runs),
                 "seconds_per_image": sum(seconds) / len(seconds) if seconds else math.nan}
    if args.evaluation is not None:
        ev = json.loads(Path(args.evaluation).read_text())
        methods = ev["methods"]
        if args.main not in methods:
            raise SystemExit(f"{args.evaluation}: no method {args.main!r} (have {sorted(methods)})")
        out.update({k: methods[args.main][k] for k in ("side_mean", "side_std", "mad_mean", "mad_std")})
        out["main_method"] = args.main
        out["methods"] = methods
    save_json(out, args.out)
    return 0


def add_cli(sub) -> None:
    from ..stages.common import positive_int

    s = sub.add_parser("summarize", help=cmd_summarize.__doc__)
    s.add_argument("--runs", nargs="+", required=True, type=Path, help="reconstruct metrics.json files")
    s.add_argument("--evaluation", type=Path, help="`gan2shape evaluate --out-json` file")
    s.add_argument("--dataset", required=True)
    s.add_argument("--preset", required=True)
    s.add_argument("--np", type=positive_int, required=True)
    s.add_argument("--main", required=True, help="method whose SIDE/MAD are the headline numbers")
    s.add_argument("--out", required=True, type=Path)
    s.set_defaults(func=cmd_summarize)

    p = sub.add_parser("evaluate", help=cmd_evaluate.__doc__)
    p.add_argument("--list", required=True, type=Path, help="file with one image name per line")
    p.add_argument("--gt", required=True, help="ground-truth depth pattern with {name} (.npy or depth PNG)")
    p.add_argument("--gt-encoding", default="unsup3d", choices=["unsup3d", "synthetic"],
                   help="depth PNG encoding (.npy files hold absolute depth)")
    p.add_argument("--method", nargs="+", required=True,
                   help="LABEL=PATTERN with {name} (a * matches one unknown folder), LABEL=constant, or "
                        "LABEL=average (the per-pixel mean ground-truth depth of the evaluated images)")
    p.add_argument("--image-size", type=positive_int, required=True)
    p.add_argument("--dataset", default="")
    p.add_argument("--out-json", required=True, type=Path)
    p.add_argument("--out-csv", type=Path)
    p.add_argument("--figure", type=Path, help="PNG: input | depth of the LAST method | ground truth | error")
    p.add_argument("--figure-images", type=positive_int, default=6)
    p.add_argument("--allow-failed", action="store_true",
                   help="count a prediction with NaN/Inf (or non-finite metrics) as failed instead of stopping")
    p.add_argument("--image", help="input image pattern with {name} (for the figure)")
    p.set_defaults(func=cmd_evaluate)
