"""evaluate stage: SIDE/MAD tables per method against ground truth."""

from __future__ import annotations

import csv
import math
import json

import numpy as np
import pytest
import torch

from gan2shape.cli import main
from gan2shape.report.evaluate import average_depth, evaluate_method, summarize


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


def _two_squares(tmp_path):
    """Two 16-px ground truths with a flat 8×8 object in front of the far background 1.1 (16-bit depth
    PNGs of the synthetic test set): A at depth 1.0 in rows/cols 2..9, B at 0.96 in rows 2..9, cols
    6..13. Evaluated inside the eroded object: A rows/cols 3..8, B rows 3..8, cols 7..12 (36 pixels)."""
    from gan2shape.world.dataset import encode_depth_png

    gts = {}
    for name, depth, cols in (("a", 1.0, slice(2, 10)), ("b", 0.96, slice(6, 14))):
        d = torch.full((16, 16), 1.1)
        d[2:10, cols] = depth
        encode_depth_png(d, tmp_path / f"{name}_depth.png")
        gts[name] = d
    (tmp_path / "list.txt").write_text("a\nb\n")
    return gts


def test_average_depth_is_the_per_pixel_object_mean():
    gts = torch.stack([torch.tensor([[1.0, 1.1], [0.9, 1.1]]), torch.tensor([[0.8, 0.95], [1.1, 1.1]])])
    avg = average_depth(gts)
    assert torch.allclose(avg, torch.tensor([[0.9, 0.95], [0.9, 1.1]]))


def test_world_v2_benchmark_table_on_tiny_fake_predictions(tmp_path, capsys):
    """`gan2shape evaluate` (constant, average_gt, a run whose unit folder the pattern globs) and
    `gan2shape world-table` on hand-checkable maps: SIDE = std of δ = log pred − log gt over the mask,
    so δ = 0 on half of the 36 pixels and c on the other half gives SIDE = c/2."""
    from gan2shape.method.renderer import Renderer

    gts = _two_squares(tmp_path)
    run = tmp_path / "run" / "reconstruct"
    pred_a = gts["a"] * 1.05                      # a global scale: SIDE 0
    pred_b = gts["b"].clone()
    pred_b[:, 10:] *= math.exp(0.04)              # B's mask cols 10..12 (half): δ = 0.04 → SIDE 0.02
    for name, pred in (("a", pred_a), ("b", pred_b)):   # a unit folder shared by both images, as a group run
        (run / "g00" / name).mkdir(parents=True)
        np.save(run / "g00" / name / "recon_depth.npy", pred.numpy())
    ev = tmp_path / "face2.json"
    assert main(["evaluate", "--list", str(tmp_path / "list.txt"), "--gt", str(tmp_path / "{name}_depth.png"),
                 "--gt-encoding", "synthetic", "--image-size", "16", "--dataset", "face2",
                 "--method", "constant=constant", "average_gt=average", f"gan2shape-x={run}/*/{{name}}/recon_depth.npy",
                 "--out-json", str(ev), "--out-csv", str(tmp_path / "face2.csv"), "--allow-failed"]) == 0
    # the same file for a second family: the table keeps families apart
    assert main(["world-table", "--evaluation", f"face2={ev}", f"car2={ev}", "--note", "toy",
                 "--out", str(tmp_path / "gan2shape.json")]) == 0
    table = json.loads((tmp_path / "gan2shape.json").read_text())
    assert set(table) == {"face2", "car2", "_note"} and table["_note"].endswith("; toy")
    t = table["face2"]
    assert set(t) == {"constant", "average_gt", "gan2shape-x"}
    assert set(t["constant"]) == {"side_mean", "side_std", "mad_mean", "mad_std", "n", "n_failed",
                                  "mad_unit_mean", "mad_unit_std"}
    # constant depth 1 on flat objects: no error, and MAD is the original protocol's floor: normals of a
    # flat map at depth z are (0, 0, r(z)) with r = |n| / (|n| + 1e-7), |n| = (2z/f)², so cos = r(1)·r(z)
    n = {z: (2 * z / Renderer(16).fx) ** 2 for z in (1.0, 0.96)}
    r = {z: n[z] / (n[z] + 1e-7) for z in n}
    floor = [math.degrees(math.acos(r[1.0] * r[z])) for z in (1.0, 0.96)]     # A, B: 1.553°, 1.586°
    c = t["constant"]
    assert (c["n"], c["n_failed"]) == (2, 0) and c["side_mean"] == pytest.approx(0, abs=1e-3)
    assert c["mad_unit_mean"] == pytest.approx(0, abs=0.05)
    assert c["mad_mean"] == pytest.approx(sum(floor) / 2, abs=0.01)
    assert c["mad_std"] == pytest.approx(abs(floor[0] - floor[1]) / 2, abs=0.01)
    # average GT: 0.98 where both objects lie (cols 6..9), 1.0 / 0.96 where one does: A's mask sees
    # δ = log 0.98 on half its pixels, B's δ = log(0.98 / 0.96) on half
    a, b = 100 * abs(math.log(0.98)) / 2, 100 * math.log(0.98 / 0.96) / 2     # 1.0101, 1.0309
    avg = t["average_gt"]
    assert avg["side_mean"] == pytest.approx((a + b) / 2, abs=2e-3)
    assert avg["side_std"] == pytest.approx(abs(a - b) / 2, abs=2e-3)
    x = t["gan2shape-x"]
    assert x["side_mean"] == pytest.approx(1.0, abs=2e-3) and x["side_std"] == pytest.approx(1.0, abs=2e-3)
    rows = list(csv.DictReader(open(tmp_path / "face2.csv")))
    assert len(rows) == 6 and {(r["method"], r["image"]) for r in rows} == {
        (m, n) for m in ("constant", "average_gt", "gan2shape-x") for n in "ab"}
    assert float(next(r for r in rows if (r["method"], r["image"]) == ("gan2shape-x", "b"))["side"]) == \
        pytest.approx(2.0, abs=2e-3)


def test_glob_patterns_need_exactly_one_file(tmp_path):
    _two_squares(tmp_path)
    for unit in ("g00", "g01"):
        (tmp_path / unit / "a").mkdir(parents=True)
        np.save(tmp_path / unit / "a" / "recon_depth.npy", np.ones((16, 16), np.float32))
    args = ["evaluate", "--list", str(tmp_path / "list.txt"), "--gt", str(tmp_path / "{name}_depth.png"),
            "--gt-encoding", "synthetic", "--image-size", "16", "--method", f"x={tmp_path}/*/{{name}}/recon_depth.npy",
            "--out-json", str(tmp_path / "m.json")]
    with pytest.raises(FileNotFoundError, match=r"2 files match"):
        main(args)
    (tmp_path / "g01" / "a" / "recon_depth.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"\*/b/recon_depth.npy: no file matches"):
        main(args)


def test_world_table_names_a_bad_file(tmp_path):
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json: not a `gan2shape evaluate` file"):
        main(["world-table", "--evaluation", f"face2={tmp_path / 'bad.json'}", "--out", str(tmp_path / "t.json")])
    with pytest.raises(FileNotFoundError, match="missing.json: file not found"):
        main(["world-table", "--evaluation", f"face2={tmp_path / 'missing.json'}", "--out", str(tmp_path / "t.json")])
