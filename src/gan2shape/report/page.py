"""The static HTML report of a run, and the ``gan2shape report`` stage command.

``gan2shape report`` reads the run summary (``gan2shape summarize``/``evaluate`` JSON), the
per-image metrics CSV of ``gan2shape evaluate`` and the figure folders of ``gan2shape figures``
(each with its ``run.json``), and writes one self-contained page (inline CSS, relative links,
nothing external): a smoke-run note, the run facts (seconds per image), the accuracy summary and
the per-image table (lower is better), metric plots, training curves (loss, SIDE and MAD per
iteration), one row per image and prior (input | prior | GAN2Shape depth | ground truth | error,
normals, albedo, shape, re-render, relit and rotated GIFs, meshes) and the parameters of the run.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import html
import itertools
import math
import os
import platform
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

from ..io import atomic_write_text
from .figures import FIGURE_FILES, MESH_FILES, RUN_FILE, read_json
from .plots import plot_metrics, plot_training_curves

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222}
h1{margin-bottom:.2em} .meta{color:#666;font-size:.9em;margin-bottom:1.5em}
table{border-collapse:collapse;margin:.5em 0 1.5em} th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left} tr.main td{background:#eef6ff} td b{color:#064}
.note{background:#fff6d6;border:1px solid #e0c060;padding:.6em 1em;margin:1em 0;max-width:60em}
.hint{color:#555;font-size:.9em;max-width:60em}
.figs img{max-width:48%;margin:.3em;border:1px solid #ddd} .figs img.wide{max-width:98%}
.row{display:flex;align-items:flex-start;gap:.3em;margin:.6em 0;padding:.4em;border-top:1px solid #eee;overflow-x:auto}
.row figure{margin:0;text-align:center;font-size:.8em} .row img{width:96px;height:96px;image-rendering:pixelated}
.name{flex:0 0 11em;font-size:.8em} .name b{font-size:1.1em} td{white-space:nowrap} #params td{text-align:left}
"""
# how each method label of `gan2shape evaluate` reads in the tables
_METHOD_TEXT = {"constant": "constant depth (baseline)"}
# starts that are not priors: the five nets of a joint pre-train (committed for synthetic data, released)
_START_TEXT = {"joint": "joint pre-train", "official": "released pre-train"}


def _default_machine() -> str:
    import torch

    parts = [platform.platform(), f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    parts.append(torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)")
    return ", ".join(parts)


def _fmt(v, digits: int = 3) -> str:
    """Numbers with ``digits`` decimals ("–" when missing or not finite), anything else escaped."""
    if isinstance(v, bool) or v is None:
        return "–" if v is None else str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else "–"
    return html.escape(str(v))


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def method_text(label: str) -> str:
    """Readable name of an evaluated method: ``prior-X`` → "X prior alone", ``gan2shape-X`` →
    "GAN2Shape from the X prior"; the starts that load a pre-train (``joint``, ``official``) are named
    as pre-trains."""
    kind, _, start = label.partition("-")
    what = _START_TEXT.get(start, f"{start} prior")
    if kind == "prior" and start:
        return f"{what} alone"
    if kind == "gan2shape" and start:
        return f"GAN2Shape from the {what}"
    return _METHOD_TEXT.get(label, label)


def _summary_table(summaries: dict | Sequence[dict]) -> str:
    """Accuracy table of ``gan2shape evaluate``/``summarize`` JSON ({dataset, methods: {label: stats},
    main_method?}): mean ± std per method, the best mean of each column in bold, the headline row marked."""
    summaries = [summaries] if isinstance(summaries, dict) else list(summaries)
    cols = (("side", "SIDE (×10⁻²) ↓"), ("mad", "MAD (degrees) ↓"), ("mad_unit", "MAD, unit normals (degrees) ↓"))
    head = ("<tr><th class=l>dataset</th><th class=l>method</th><th class=l>label</th><th>images</th>"
            + "".join(f"<th>{c}</th>" for _, c in cols) + "</tr>")
    body = []
    for s in summaries:
        methods = s.get("methods") or {}
        best = {k: min((_num(m.get(f"{k}_mean")) for m in methods.values()
                        if math.isfinite(_num(m.get(f"{k}_mean")))), default=math.nan) for k, _ in cols}
        for label, m in methods.items():
            cells = []
            for k, _ in cols:
                a, b = _num(m.get(f"{k}_mean")), _num(m.get(f"{k}_std"))
                text = f"{_fmt(a)} ± {_fmt(b)}" if math.isfinite(a) else "–"
                cells.append(f"<td data-key={k}_mean>{f'<b>{text}</b>' if a == best[k] else text}</td>")
            main = label == s.get("main_method")
            body.append(f"<tr{' class=main' if main else ''} data-method=\"{html.escape(label)}\">"
                        f"<td class=l>{_fmt(s.get('dataset', ''))}</td>"
                        f"<td class=l>{html.escape(method_text(label))}{' (headline)' if main else ''}</td>"
                        f"<td class=l><code>{html.escape(label)}</code></td><td>{_fmt(m.get('n', ''))}</td>"
                        + "".join(cells) + "</tr>")
    return f"<table id=summary>{head}{''.join(body)}</table>"


def _generic_table(t: dict) -> str:
    """{columns, rows[, id]} → a table; the first column left-aligned, numbers with 3 decimals."""
    cols = t.get("columns", [])
    ident = f" id={t['id']}" if t.get("id") else ""
    head = "".join(f"<th{' class=l' if i == 0 else ''}>{_fmt(c)}</th>" for i, c in enumerate(cols))
    rows = "".join("<tr>" + "".join(f"<td{' class=l' if i == 0 else ''}>{_fmt(v)}</td>" for i, v in enumerate(r))
                   + "</tr>" for r in t.get("rows", []))
    return f"<table{ident}><tr>{head}</tr>{rows}</table>"


def _rel(p: Path, base: Path) -> str:
    return quote(Path(os.path.relpath(Path(p).resolve(), base.resolve())).as_posix())


def _image_row(entry, base: Path) -> str:
    """One image and prior: name, prior, numbers (``metrics``: label → value), the figure files
    that exist in ``dir`` with captions, and mesh links."""
    if not isinstance(entry, dict):
        entry = {"dir": entry}
    d = Path(entry["dir"])
    name = str(entry.get("name") or d.name)
    cells = [f"<div class=name><b>{html.escape(name)}</b><br>"]
    if entry.get("prior"):
        start = str(entry["prior"])
        what = f"start: {_START_TEXT[start]}" if start in _START_TEXT else f"prior: {start}"
        cells.append(f"{html.escape(what)}<br>")
    for k, v in (entry.get("metrics") or {}).items():
        cells.append(f"{html.escape(str(k))}: {_fmt(v)}<br>")
    links = [f'<a href="{_rel(d / f, base)}">{f}</a>' for f in MESH_FILES if (d / f).is_file()]
    if links:
        cells.append("mesh: " + " · ".join(links))
    cells.append("</div>")
    label = f"{name} {entry.get('prior') or ''}".strip()
    for f, caption in FIGURE_FILES:
        if (d / f).is_file():
            r = _rel(d / f, base)
            cells.append(f'<figure><a href="{r}"><img src="{r}" alt="{html.escape(label)} {caption}"></a>'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return f"<div class=row>{''.join(cells)}</div>"


def write_report(out_html: str | Path, sections: Sequence[dict], title: str = "GAN2Shape results",
                 date: str | None = None, machine: str | None = None) -> Path:
    """A static, self-contained HTML page (inline CSS, relative links, nothing external).

    Each section is a dict with ``title`` and any of: ``note`` (a highlighted paragraph), ``text``
    (a paragraph), ``summary`` (one or a list of evaluate/summarize JSON dicts → accuracy table),
    ``table`` ({columns, rows[, id]}), ``figures`` (image paths; ``wide`` for full-width ones),
    ``images`` (figure folders of ``gan2shape figures`` or dicts {dir, name, prior, metrics}).
    Paths are made relative to the HTML file."""
    out = Path(out_html)
    base = out.parent
    base.mkdir(parents=True, exist_ok=True)
    date = date or _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    machine = machine or _default_machine()
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<div class=meta>report written {html.escape(date)} on {html.escape(machine)}</div>"]
    for sec in sections:
        if sec.get("title"):
            parts.append(f"<h2>{html.escape(str(sec['title']))}</h2>")
        if sec.get("note"):
            parts.append(f"<div class=note>{html.escape(str(sec['note']))}</div>")
        if sec.get("text"):
            parts.append(f"<p class=hint>{html.escape(str(sec['text']))}</p>")
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
                r = _rel(p, base)
                cls = " class=wide" if sec.get("wide") else ""
                imgs.append(f'<a href="{r}"><img{cls} src="{r}" alt="{html.escape(p.stem)}"></a>')
            parts.append(f"<div class=figs>{''.join(imgs)}</div>")
        for entry in sec.get("images") or []:
            parts.append(_image_row(entry, base))
    parts.append("</body></html>\n")
    atomic_write_text("\n".join(parts), out)
    return out


# --------------------------------------------------------------------------------------------
# gan2shape report
# --------------------------------------------------------------------------------------------

def _read_csv_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_run(fig_dir: Path) -> dict:
    """The run.json of a ``gan2shape figures`` folder, with ``dir`` added."""
    path = Path(fig_dir) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; --image-dirs takes the folders written by "
                                "`gan2shape figures` (re-run that stage to write run.json)")
    run = read_json(path)
    return {**run, "dir": Path(fig_dir)}


def per_image_table(rows: Sequence[dict]) -> dict:
    """{columns, rows} with one row per image and one "SIDE / MAD" column per method (evaluate CSV rows)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    images = list(dict.fromkeys(r["image"] for r in rows))
    val = {(r["image"], r["method"]): r for r in rows}
    cols = ["image"] + [f"{method_text(m)}: SIDE / MAD" for m in methods]
    body = [[im] + [" / ".join(_fmt(_num(val.get((im, m), {}).get(k))) for k in ("side", "mad")) for m in methods]
            for im in images]
    return {"columns": cols, "rows": body, "id": "per-image"}


def run_sections(runs: Sequence[dict], rows: Sequence[dict], assets: Path) -> list[dict]:
    """The training-curve and per-image sections of figure folders' runs; per-image SIDE/MAD from
    the evaluate ``rows`` of method ``gan2shape-<prior>`` (else the run's own metrics)."""
    val = {(r["image"], r["method"]): r for r in rows}
    entries = []
    for run in sorted(runs, key=lambda r: (str(r["name"]), str(r.get("prior", "")))):
        name, prior, m = str(run["name"]), str(run.get("prior") or ""), run.get("metrics") or {}
        # the evaluation's numbers; else the reconstruction's own of its final depth (SIDE as a fraction)
        ev = val.get((name, f"gan2shape-{prior}")) or {"side": 100 * _num(m.get("final_side")),
                                                        "mad": m.get("final_mad")}
        numbers = {"SIDE (×10⁻²)": _num(ev.get("side")), "MAD (°)": _num(ev.get("mad"))}
        if (name, f"prior-{prior}") in val:
            alone = "pre-train alone" if prior in _START_TEXT else "prior alone"
            numbers[f"{alone}: SIDE"] = _num(val[(name, f"prior-{prior}")]["side"])
        numbers = {k: v for k, v in numbers.items() if math.isfinite(v)}
        if "seconds" in m:
            numbers["seconds"] = _num(m["seconds"])
        if "iterations" in m:
            numbers["iterations"] = str(m["iterations"])
        entries.append({"dir": run["dir"], "name": name, "prior": prior, "metrics": numbers})
    sections = []
    curves = [{"image": r["name"], "prior": r.get("prior") or "", "log": r.get("log") or []} for r in runs]
    if any(c["log"] for c in curves):
        sections.append({"title": "Training curves", "wide": True,
                         "text": "Total loss, and SIDE and MAD of the current depth where ground truth is known, "
                                 "per logged iteration of steps 1–3; one line per image, coloured by prior. "
                                 "Lower is better.",
                         "figures": [plot_training_curves(curves, assets / "curves.png")]})
    if entries:
        sections.append({"title": "Images",
                         "text": "Per image and prior: input | prior | GAN2Shape depth (input view) | ground truth "
                                 "(one colour scale, near = bright) | |log-depth error| after removing the mean "
                                 "(its RMS is SIDE; black 0, bright ≥ 0.05, grey outside the evaluation mask); "
                                 "the canonical normals, albedo and shape; the re-rendered input; relit and rotated "
                                 "views (the rotation starts in the input view).",
                         "images": entries})
    return sections


def cmd_report(args: argparse.Namespace) -> int:
    """Static HTML report: run facts, accuracy tables and plots, training curves, per-image figures."""
    out = Path(args.out)
    assets = out.parent / f"{out.stem}_files"
    summaries = [read_json(Path(p)) for p in args.metrics_json]
    rows = list(itertools.chain.from_iterable(_read_csv_rows(Path(p)) for p in args.metrics_csv))
    runs = [read_run(Path(d)) for d in args.image_dirs]
    sections: list[dict] = []
    if args.smoke_run:
        sections.append({"note": f"Smoke run ({args.smoke_run}): it checks that the pipeline runs end to end in "
                                 "minutes; the reconstructions are far from converged and the numbers are not "
                                 "comparable with the paper's. Use the full preset for those."})
    facts = []
    for s in summaries:
        for key, label in (("dataset", "dataset"), ("preset", "preset"), ("np", "N_p (samples per iteration)"),
                           ("runs", "reconstructions (images × starts)"), ("seconds_per_image", "seconds per image")):
            if key in s:
                facts.append([label, s[key]])
    seconds = [_num((r.get("metrics") or {}).get("seconds")) for r in runs]
    seconds = [v for v in seconds if math.isfinite(v)]
    if seconds and not any(f[0] == "seconds per image" for f in facts):
        facts.append(["seconds per image", sum(seconds) / len(seconds)])
    if facts:
        sections.append({"title": "Run", "table": {"columns": ["", "value"], "rows": facts, "id": "run"}})
    if summaries:
        sections.append({"title": "Shape accuracy (lower is better)", "summary": summaries,
                         "text": "SIDE: scale-invariant depth error (×10⁻²); MAD: mean angle between normals. "
                                 "Mean ± standard deviation over images; bold: the best mean of a column."})
    if rows:
        side, mad = plot_metrics(rows, assets / "side.png", assets / "mad.png")
        sections.append({"title": "Per image (lower is better)", "table": per_image_table(rows),
                         "text": "SIDE (×10⁻²) / MAD (degrees) of each image and method; click a figure below "
                                 "for its full-size file.",
                         "figures": [side, mad]})
    sections += run_sections(runs, rows, assets)
    if args.param:
        params = [p.split("=", 1) if "=" in p else [p, ""] for p in args.param]
        sections.append({"title": "Parameters", "text": "The configuration values that produced this run.",
                         "table": {"columns": ["parameter", "value"], "rows": params, "id": "params"}})
    write_report(out, sections, title=args.title)
    print(f"wrote {out}")
    return 0


def add_cli(sub) -> None:
    """Register ``gan2shape report``."""
    r = sub.add_parser("report", help=cmd_report.__doc__)
    r.add_argument("--metrics-json", nargs="*", type=Path, default=[],
                   help="`gan2shape summarize --out` or `gan2shape evaluate --out-json` files")
    r.add_argument("--metrics-csv", nargs="*", type=Path, default=[], help="`gan2shape evaluate --out-csv` files")
    r.add_argument("--image-dirs", nargs="*", type=Path, default=[],
                   help="figure folders of `gan2shape figures` (each holding run.json)")
    r.add_argument("--param", nargs="*", default=[], metavar="KEY=VALUE",
                   help="the configuration values of the run, shown in a Parameters table")
    r.add_argument("--smoke-run", metavar="SCHEDULE",
                   help="mark the run as a smoke run, e.g. 'demo preset: 10/10/10 iterations, 1 stage'")
    r.add_argument("--out", required=True, type=Path, help="output HTML; plots go to <stem>_files/ beside it")
    r.add_argument("--title", default="GAN2Shape results")
    r.set_defaults(func=cmd_report)
