"""bench/estimate.py: device-time estimates from a speed benchmark's per-phase seconds."""

import importlib.util
import json
from pathlib import Path

import pytest

from gan2shape.method.config import SCHEDULES

REPO = Path(__file__).resolve().parents[1]


def _estimate():
    spec = importlib.util.spec_from_file_location("estimate", REPO / "bench/estimate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ROW = {"images": 2, "iterations_run": {"prefit": 10, "step1": 10, "step2": 10, "step3": 10, "collect": 6},
       "phase_seconds": {"prefit": 0.2, "step1": 0.2, "step2": 0.6, "step3": 1.2}}


def test_step_costs_per_image_iteration():
    cost = _estimate().step_costs(ROW)
    # per image: 0.1 s / 10 it = 10 ms; step 2 30 ms; a collection forward a third of step 2 (10 ms);
    # step 3 = (0.6 s - 6 collections x 10 ms) / 10 = 54 ms
    assert cost["prefit"] == pytest.approx(0.010) and cost["step1"] == pytest.approx(0.010)
    assert cost["step2"] == pytest.approx(0.030) and cost["collect"] == pytest.approx(0.010)
    assert cost["step3"] == pytest.approx(0.054)


def test_run_seconds_of_the_synface_instance_schedule():
    est = _estimate()
    cost = est.step_costs(ROW)
    # 500/500/200, 4 images per iteration, N_p twice the benchmark's: steps 2 and 3 cost double
    its, s = est.run_seconds(cost, SCHEDULES["synface"], n_p=32, bench_np=16, images_per_iteration=4,
                             prior_iters=0, collect_forwards=400)
    assert its == 1200
    assert s == pytest.approx(4 * (500 * 0.010 + 2 * (500 * 0.030 + 200 * 0.054)) + 400 * 2 * 0.010)


def test_cli_prints_a_row_per_protocol(tmp_path, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"synthetic": {"faithful": ROW}}))
    assert _estimate().main(["--bench", str(bench), "--images", "8"]) == 0
    out = capsys.readouterr().out
    assert "synface joint pre-train, 8 streams" in out and "car recipe, N_p 32, 8 images" in out
    assert sum(line.startswith("| ") for line in out.splitlines()) == 1 + 7   # header + 7 protocols
