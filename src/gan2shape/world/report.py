"""``gan2shape world-report``: baselines, model-consistency and pseudo-sample coverage of a v2 test set.

Baselines (SIDE ×10⁻², MAD degrees; :func:`gan2shape.report.evaluate.evaluate_method`) of depth maps
that need no learning, on the ground-truth input-view depth: ``constant`` (ones), ``average`` (the
per-pixel mean ground-truth depth over the family's test images where the pixel is object, else 1.1:
the paper's "average GT depth"), and the priors alone built from the ground-truth mask
(``prior-ellipsoid`` with category ``synthetic``, ``prior-masked_box``, ``prior-smoothed_box``,
``prior-confidence`` = smoothed_confidence of the mask).

``gan2shape world-table`` gathers per-family ``gan2shape evaluate`` files into one table of the
same shape and keys as ``baselines.json`` (the world-v2 benchmark's ``gan2shape.json``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import torch

from ..io import atomic_write_text

__all__ = ["baseline_predictions", "world_report", "world_table", "TABLE_KEYS", "add_cli"]

PRIORS = {"prior-ellipsoid": "ellipsoid", "prior-masked_box": "masked_box",
          "prior-smoothed_box": "smoothed_box", "prior-confidence": "smoothed_confidence"}
# the numbers of one method in baselines.json / gan2shape.json (SIDE ×10⁻², MAD degrees)
TABLE_KEYS = ("side_mean", "side_std", "mad_mean", "mad_std", "n", "mad_unit_mean", "mad_unit_std")
NOTE = ("SIDE x1e-2, MAD degrees (mad: the original protocol's near-unit normals; mad_unit: true angle); "
        "ground truth = the test set's input-view depth (background 1.1)")


def baseline_predictions(records: list[dict]) -> dict[str, dict[str, torch.Tensor]]:
    """{method: {image: 1×S×S depth}} for the records of one family."""
    from ..method.priors import make_prior
    from ..report.evaluate import average_depth

    names = [r["name"] for r in records]
    depth = torch.stack([r["depth"] for r in records])
    mask = torch.stack([r["mask"] for r in records])  # B×1×S×S
    avg = average_depth(depth)
    out = {"constant": {n: torch.ones(1, *depth.shape[1:]) for n in names},
           "average": {n: avg[None] for n in names}}
    for label, prior in PRIORS.items():
        kw = dict(confidence=mask) if "confidence" in prior else dict(mask=mask, category="synthetic")
        p = make_prior(prior, **kw)
        out[label] = {n: p[i:i + 1] for i, n in enumerate(names)}
    return out


def world_report(test_root: Path, view_mvn: Path, light_mvn: Path, out_dir: Path, n_pseudo: int = 4,
                 coverage_per_image: int = 256) -> dict:
    """Write ``baselines.json``, ``baselines_<family>.csv``, ``consistency.json`` and
    ``consistency_<family>.csv`` to ``out_dir``; returns the two summaries."""
    from ..method.sampling import ViewLightDistribution
    from ..report.evaluate import METRICS, evaluate_method, summarize
    from .consistency import check_scenes, coverage
    from .dataset import load_test_set
    from .scenes import V2_FAMILIES

    dist = ViewLightDistribution.from_files(view_mvn, light_mvn)
    out_dir.mkdir(parents=True, exist_ok=True)
    baselines, consistency = {}, {}
    for fam in V2_FAMILIES:
        if not (test_root / fam / "list.txt").is_file():
            continue
        recs = load_test_set(test_root / fam)
        gts = {r["name"]: r["depth"][None] for r in recs}
        table, buf = {}, io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["family", "method", "image", *METRICS, "status"])
        w.writeheader()
        for method, preds in baseline_predictions(recs).items():
            rows = evaluate_method(preds, gts)
            s = summarize(rows)
            table[method] = {k: s[k] for k in TABLE_KEYS}
            for r in rows:
                w.writerow({"family": fam, "method": method, **r})
        baselines[fam] = table
        atomic_write_text(buf.getvalue(), out_dir / f"baselines_{fam}.csv")
        params = [r["params"] for r in recs]
        rows = check_scenes(params, torch.stack([r["image"] for r in recs]), dist, n_pseudo=n_pseudo)
        keys = [k for k in ("step1_l1", "flip_l1", "pseudo_l1", "valid_share", "object_share") if k in rows[0]]
        summ = {f"{k}_{stat}": float(getattr(torch.tensor([r[k] for r in rows], dtype=torch.float64), stat)())
                for k in keys for stat in ("mean", "max")}
        summ["n"] = len(rows)
        summ["coverage"] = coverage(fam, params, dist, n_per_image=coverage_per_image)
        consistency[fam] = summ
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["image", *keys])
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(buf.getvalue(), out_dir / f"consistency_{fam}.csv")
    note = NOTE + "; priors from the ground-truth mask"
    atomic_write_text(json.dumps({**baselines, "_note": note}, indent=1, sort_keys=True) + "\n", out_dir / "baselines.json")
    cnote = ("checks at the ground-truth canonical depth, albedo, view and light through the method's model: "
             "step1_l1 / flip_l1 = mean L1 of the step-1 render (unflipped / flip branch) vs the 8-bit test image "
             "on valid pixels; pseudo_l1 = method's pseudo sample vs the world's render of the same view and light, "
             "on object pixels (n_pseudo per image); coverage = share of pseudo views/lights outside the GAN's "
             "training support")
    atomic_write_text(json.dumps({**consistency, "_note": cnote, "n_pseudo": n_pseudo}, indent=1, sort_keys=True)
                      + "\n", out_dir / "consistency.json")
    return {"baselines": baselines, "consistency": consistency}


def world_table(evaluations: dict[str, Path], note: str = "") -> dict:
    """{family: {method: {TABLE_KEYS..., n_failed}}, "_note": ...} of per-family ``gan2shape evaluate
    --out-json`` files (``evaluations``: family → file); the keys and units of ``baselines.json``."""
    out: dict = {}
    for fam, path in evaluations.items():
        try:
            methods = json.loads(Path(path).read_text())["methods"]
            out[fam] = {m: {**{k: s[k] for k in TABLE_KEYS}, "n_failed": s.get("n_failed", 0)}
                        for m, s in methods.items()}
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: file not found (the {fam} evaluation)")
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a `gan2shape evaluate` file ({type(e).__name__}: {e})") from e
    out["_note"] = NOTE + (f"; {note}" if note else "")
    return out


def _cmd_table(args: argparse.Namespace) -> int:
    """One table {family: {method: SIDE / MAD}} (baselines.json's keys) from per-family evaluations."""
    evaluations = {}
    for spec in args.evaluation:
        fam, sep, path = spec.partition("=")
        if not sep or not fam or not path:
            raise SystemExit(f"--evaluation expects FAMILY=FILE, got {spec!r}")
        if fam in evaluations:
            raise SystemExit(f"--evaluation: family {fam!r} given twice")
        evaluations[fam] = Path(path)
    table = world_table(evaluations, args.note)
    atomic_write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", args.out)
    for fam, t in table.items():
        if fam != "_note":
            for m, s in t.items():
                print(f"{fam:6s} {m:36s} SIDE {s['side_mean']:.3f} ± {s['side_std']:.3f}  "
                      f"MAD {s['mad_mean']:.2f} ± {s['mad_std']:.2f}  (n={s['n']})")
    return 0


def _cmd(args: argparse.Namespace) -> int:
    """Baselines, model-consistency checks and pseudo-sample coverage of the world-v2 test set."""
    res = world_report(args.test_set, args.view_mvn, args.light_mvn, args.out_dir, args.n_pseudo)
    for fam, t in res["baselines"].items():
        for m, s in t.items():
            print(f"{fam:6s} {m:20s} SIDE {s['side_mean']:.3f} ± {s['side_std']:.3f}  MAD {s['mad_mean']:.2f} ± {s['mad_std']:.2f}")
    for fam, c in res["consistency"].items():
        print(fam, json.dumps(c))
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("world-report", help=_cmd.__doc__)
    p.add_argument("--test-set", type=Path, default=Path("data/synthetic_v2/test"))
    p.add_argument("--view-mvn", type=Path, default=Path("models/synthetic_v2_view_mvn.pth"))
    p.add_argument("--light-mvn", type=Path, default=Path("models/synthetic_v2_light_mvn.pth"))
    p.add_argument("--out-dir", type=Path, default=Path("results/synthetic_v2"))
    p.add_argument("--n-pseudo", type=int, default=4, help="pseudo samples per image for the pseudo check")
    p.set_defaults(func=_cmd)

    t = sub.add_parser("world-table", help=_cmd_table.__doc__)
    t.add_argument("--evaluation", nargs="+", required=True, help="FAMILY=FILE: a `gan2shape evaluate --out-json` file")
    t.add_argument("--note", default="", help="appended to the table's _note (what the rows are)")
    t.add_argument("--out", required=True, type=Path)
    t.set_defaults(func=_cmd_table)
