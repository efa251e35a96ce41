"""evaluate stage: SIDE/MAD tables per method against ground truth."""

from __future__ import annotations

import csv
import math
import json

import numpy as np
import pytest
import torch

from gan2shape.cli import main
from gan2shape.report.evaluate import evaluate_method, summarize


def _sphere_depth(s=32, r=0.06):
    """A sphere cap in front of a far background (1.1)."""
    from gan2shape.method.renderer import Renderer

    fx = Renderer(s).fx
    c = (s - 1) / 2
    v, u = torch.meshgrid(torch.arange(s, dtype=torch.float64), torch.arange(s, dtype=torch.float64), indexing="ij")
    x, y = (u - c) / fx, (v - c) / fx
    # ray (x, y, 1)·t hits the sphere |P − (0,0,1)| = r
    a = x ** 2 + y ** 2 + 1
    disc = 1 - a * (1 - r ** 2)
    t = (1 - disc.clamp(min=0).sqrt()) / a
    return torch.where(disc > 0, t, torch.full_like(t, 1.1)).float()[None]


def test_identical_and_scaled_depth_have_zero_side():
    gt = _sphere_depth()
    rows = evaluate_method({"a": gt.clone(), "b": gt * 1.05}, {"a": gt, "b": gt})
    assert rows[0]["side"] < 1e-4 and rows[0]["mad_unit"] < 0.1
    # the original protocol's normals are slightly short of unit length: a floor of a few degrees
    assert 1.0 < rows[0]["mad"] < 10.0
    assert rows[1]["side"] < 1e-4  # scale invariance (MAD also invariant to a global scale)
    s = summarize(rows)
    assert s["n"] == 2 and s["side_mean"] < 1e-4


def test_constant_depth_baseline_is_worse_than_truth(tmp_path):
    gt = _sphere_depth()
    names = ["x", "y"]
    for n in names:
        np.save(tmp_path / f"{n}_gt.npy", gt[0].numpy())
        np.save(tmp_path / f"{n}_pred.npy", (gt[0] * 1.01).numpy())
    (tmp_path / "list.txt").write_text("x\ny\n")
    rc = main(["evaluate", "--list", str(tmp_path / "list.txt"), "--gt", str(tmp_path / "{name}_gt.npy"),
               "--method", f"ours={tmp_path}/{{name}}_pred.npy", "const=constant", "--image-size", "32",
               "--dataset", "toy", "--out-json", str(tmp_path / "m.json"), "--out-csv", str(tmp_path / "m.csv")])
    assert rc == 0
    m = json.loads((tmp_path / "m.json").read_text())["methods"]
    assert m["ours"]["side_mean"] < 1e-4 and m["const"]["side_mean"] > 0.5 and m["const"]["mad_mean"] > 10
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert len(rows) == 4 and {r["method"] for r in rows} == {"ours", "const"}


def test_missing_prediction_names_the_file(tmp_path):
    np.save(tmp_path / "x_gt.npy", _sphere_depth()[0].numpy())
    (tmp_path / "list.txt").write_text("x\n")
    with pytest.raises(FileNotFoundError, match="x_pred.npy"):
        main(["evaluate", "--list", str(tmp_path / "list.txt"), "--gt", str(tmp_path / "{name}_gt.npy"),
              "--method", f"ours={tmp_path}/{{name}}_pred.npy", "--image-size", "32",
              "--out-json", str(tmp_path / "m.json")])


def test_synthetic_depth_png_decodes_like_the_synthetic_module(tmp_path):
    from gan2shape.data import load_depth
    from gan2shape.world.dataset import decode_depth_png, encode_depth_png

    d = _sphere_depth()[0]
    encode_depth_png(d, tmp_path / "d.png")
    a = load_depth(tmp_path / "d.png", 32, encoding="synthetic")[0]
    assert torch.allclose(a, decode_depth_png(tmp_path / "d.png").float(), atol=1e-6)
    assert torch.allclose(a, d, atol=1e-5)


def _nan_case(tmp_path):
    gt = _sphere_depth()
    for n in ("x", "y"):
        np.save(tmp_path / f"{n}_gt.npy", gt[0].numpy())
        np.save(tmp_path / f"{n}_pred.npy", (gt[0] * 1.01).numpy())
    np.save(tmp_path / "y_pred.npy", np.full((32, 32), np.nan, np.float32))
    (tmp_path / "list.txt").write_text("x\ny\n")
    return ["evaluate", "--list", str(tmp_path / "list.txt"), "--gt", str(tmp_path / "{name}_gt.npy"),
            "--method", f"ours={tmp_path}/{{name}}_pred.npy", "--image-size", "32",
            "--out-json", str(tmp_path / "m.json"), "--out-csv", str(tmp_path / "m.csv")]


def test_nan_prediction_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"ours: .*y_pred.npy: prediction has NaN/Inf values"):
        main(_nan_case(tmp_path))
    assert not (tmp_path / "m.json").exists()


def test_allow_failed_counts_and_reports_failed_images(tmp_path, capsys):
    assert main(_nan_case(tmp_path) + ["--allow-failed"]) == 0
    m = json.loads((tmp_path / "m.json").read_text())["methods"]["ours"]
    assert (m["n"], m["n_failed"], m["failed"]) == (1, 1, ["y"]) and np.isfinite(m["side_mean"])
    rows = {r["image"]: r for r in csv.DictReader(open(tmp_path / "m.csv"))}
    assert rows["x"]["status"] == "ok" and rows["y"]["status"] == "failed"
    assert "n=1, 1 failed: y" in capsys.readouterr().out


def test_summarize_never_drops_a_nan_silently():
    rows = [{"image": "a", "side": 1.0, "mad": 2.0, "mad_unit": 2.0}, {"image": "b", "side": math.nan, "mad": 1.0,
                                                                       "mad_unit": 1.0}]
    with pytest.raises(ValueError, match="non-finite side"):
        summarize(rows)
    s = summarize([rows[0], {**rows[1], "status": "failed"}])
    assert (s["n"], s["n_failed"], s["side_mean"]) == (1, 1, 1.0)
