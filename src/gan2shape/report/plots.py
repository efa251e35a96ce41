"""Matplotlib/seaborn figures of a run: one-row image panels, per-image SIDE/MAD distributions per
method, and training curves (loss, SIDE and MAD per logged iteration). PNGs written atomically."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import Tensor

from ..io import atomic_path
from .frames import mpl, to_uint8


def _save_fig(fig, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def _figure(w: float, h: float):
    mpl()
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def image_panel(images: Sequence[Tensor], titles: Sequence[str], path: str | Path, dpi: int = 100) -> Path:
    """One-row figure of ``3×H×W`` (or ``H×W``) images in [0, 1] with titles."""
    return image_grid([images], titles, path, dpi=dpi)


def image_grid(rows: Sequence[Sequence[Tensor]], titles: Sequence[str], path: str | Path,
               row_labels: Sequence[str] | None = None, dpi: int = 100) -> Path:
    """A grid of ``3×H×W`` (or ``H×W``) images in [0, 1]: one list per row, ``titles`` over the
    columns (first row), ``row_labels`` left of the rows."""
    n_cols = len(titles)
    if any(len(r) != len(titles) for r in rows):
        raise ValueError(f"{path}: every row needs {len(titles)} images (one per title), got "
                         f"{[len(r) for r in rows]}")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"{path}: {len(rows)} rows but {len(row_labels)} row labels")
    fig = _figure(2.2 * max(n_cols, 1), 2.5 * max(len(rows), 1))
    axes = fig.subplots(max(len(rows), 1), max(n_cols, 1), squeeze=False)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            ax = axes[i, j]
            ax.imshow(to_uint8(img, (0.0, 1.0)), interpolation="nearest")
            if i == 0:
                ax.set_title(titles[j], fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
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
    for key, label, path in (("side", "SIDE (×10⁻²), lower is better", path_side),
                              ("mad", "MAD (degrees), lower is better", path_mad)):
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


# (log key, y label, log scale, factor) of the panels of plot_training_curves; logs hold SIDE as a
# fraction, the report shows it ×10⁻² like `gan2shape evaluate`
CURVES = (("loss", "total loss", True, 1.0), ("side", "SIDE (×10⁻²) ↓", False, 100.0),
          ("mad", "MAD (degrees) ↓", False, 1.0))


def curve_records(runs: Sequence[dict]) -> list[dict]:
    """Long-form rows {image, prior, step, iteration, loss/side/mad} of training logs.

    ``runs``: dicts {image, prior, log} with ``log`` a reconstruct ``log.json`` list; entries of
    steps 1–3 only (step 0 is the prior pre-fit), non-finite values dropped, SIDE ×100."""
    recs = []
    for run in runs:
        for e in run["log"]:
            if not isinstance(e, dict) or int(e.get("step", 0)) not in (1, 2, 3):
                continue
            vals = {k: f * float(e[k]) for k, _, _, f in CURVES
                    if isinstance(e.get(k), (int, float)) and math.isfinite(float(e[k]))}
            if vals:
                recs.append({"image": str(run["image"]), "prior": str(run["prior"]), "step": int(e["step"]),
                             "iteration": int(e["iteration"]), **vals})
    return recs


def plot_training_curves(runs: Sequence[dict], path: str | Path) -> Path:
    """Loss (log scale), and SIDE and MAD where logged (ground truth known), per iteration: one line
    per image and prior, coloured by prior, broken where the step changes (see :func:`curve_records`)."""
    import pandas as pd
    import seaborn as sns

    recs = curve_records(runs)
    df = pd.DataFrame(recs)
    keys = [c for c in CURVES if len(df) and c[0] in df.columns and df[c[0]].notna().any()] or CURVES[:1]
    fig = _figure(5.0 * len(keys), 3.6)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    if len(df):
        # one line segment per image, prior and run of consecutive entries of the same step
        df["segment"] = (df["image"] + ":" + df["prior"] + ":"
                         + (df["step"] != df["step"].shift()).cumsum().astype(str))
        priors = sorted(df["prior"].unique())
    for ax, (key, label, log, _) in zip(axes, keys):
        d = df[df[key].notna()] if len(df) and key in df.columns else df
        if len(d):
            sns.lineplot(data=d, x="iteration", y=key, hue="prior", hue_order=priors, units="segment",
                         estimator=None, ax=ax, marker="o", markersize=5, linewidth=1.2, legend=key == keys[0][0])
            if log and (d[key] > 0).all():
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no logged iterations", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
    return _save_fig(fig, path)
