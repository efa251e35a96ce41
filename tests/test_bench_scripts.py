"""The device scripts' own logic on the CPU: the parity check of bench/speed.py and the ladder's
summary of a run cut short (bench/ladder.py --summarize-only)."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_parity_stats_on_known_runs():
    speed = _load("speed")
    runs = {"faithful_seed0": {"side": [1.0, 2.0, 3.0, 4.0], "mad": [10.0, 10.0, 10.0, 10.0]},
            "faithful_seed1": {"side": [1.5, 1.5, 3.5, 3.5], "mad": [12.0, 8.0, 12.0, 8.0]},
            "fast_seed0": {"side": [1.0, 2.0, 3.0, 9.0], "mad": [11.0, 9.0, 11.0, 9.0]}}
    st = speed.parity_stats(runs)
    # seed 1 − seed 0 per image: ±0.5, mean 0, sample sd 0.5774 → noise of a mean of 4: 0.2887
    assert st["side"]["seed_noise_of_mean"] == pytest.approx((1 / 3) ** 0.5 / 2, rel=1e-6)
    assert st["side"]["faithful_seed_spread"] == pytest.approx(0.0)
    assert st["side"]["paired_fast_minus_seed0"] == pytest.approx(1.25)       # one image off by 5
    assert st["side"]["fast_within_seed_noise"] is False
    assert st["mad"]["paired_fast_minus_seed0"] == pytest.approx(0.0)
    assert st["mad"]["fast_within_seed_noise"] is True
    assert st["mad"]["per_image_abs_diff_fast_vs_seed0"] == pytest.approx(1.0)
    assert st["mad"]["per_image_abs_diff_faithful_seeds"] == pytest.approx(2.0)


def test_parity_runs_both_modes_as_independent_models(tmp_path, monkeypatch):
    """Faithful and fast differ only in kernels and seed: both fit one model per image."""
    speed = _load("speed")
    seen = []
    fit = speed.Trainer.fit

    def spy(self, targets, *a, **kw):
        seen.append((bool(self.fast), kw.get("independent"), len(targets)))
        return fit(self, targets, *a, **kw)

    monkeypatch.setattr(speed.Trainer, "fit", spy)
    res = speed.main(["--device", "cpu", "--tiny", "--parity-only", "--out", str(tmp_path / "bench.json")])
    assert sorted(res) == ["meta", "parity"]                         # no speed rows with --parity-only
    assert set(res["parity"]["runs"]) == {"faithful_seed0", "faithful_seed1", "fast_seed0"}
    assert seen == [(False, True, 2), (False, True, 2), (True, True, 2)]
    assert json.loads((tmp_path / "bench.json").read_text())["parity"]["side"]["seed_noise_of_mean"] is not None


def test_ladder_summarize_only_reports_finished_and_missing_runs(tmp_path):
    ladder = _load("ladder")
    src = ROOT / "results/synthetic_v2/ladder/face2/runs/truth_pseudo/face2_0_00000"
    shutil.copytree(src, tmp_path / "runs/truth_pseudo/face2_0_00000")
    res = ladder.main(["--family", "face2", "--n", "2", "--gan", "unused.pt", "--view-mvn", "v.pth",
                       "--light-mvn", "l.pth", "--rungs", "truth_pseudo", "truth_predicted",
                       "--out", str(tmp_path), "--summarize-only"])
    assert res["rungs"]["truth_pseudo"]["n"] == 1
    assert res["not_run"] == ["truth_pseudo/face2_0_00001", "truth_predicted/face2_0_00000",
                              "truth_predicted/face2_0_00001"]
    m = json.loads((src / "metrics.json").read_text())
    assert res["runs"][0]["final_side"] == pytest.approx(100 * m["final_side"])
    with pytest.raises(SystemExit, match="no finished run"):
        ladder.main(["--family", "face2", "--n", "1", "--gan", "g", "--view-mvn", "v", "--light-mvn", "l",
                     "--rungs", "truth_warmup", "--out", str(tmp_path / "empty"), "--summarize-only"])


def test_nn_check_finds_copies_and_mirror_copies():
    nn = _load("gan_nn_check")
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(10, 3, 8, 8, generator=g) * 2 - 1
    x = torch.stack([ref[3], ref[7].flip(2), ref[5] + 0.25])
    d, i = nn.nearest(x, ref, chunk=4)                  # chunks smaller than the reference set
    assert i.tolist() == [3, 7, 5]
    assert d[:2].tolist() == [0.0, 0.0] and d[2].item() == pytest.approx(0.25, abs=1e-6)


def test_mode_stats_on_known_runs():
    """Both modes with two seeds: per-image seed means, paired difference and its standard error,
    within-mode seed spread, images worse than their start."""
    speed = _load("speed")
    runs = {"faithful_seed0": {"side": [1.0, 2.0, 3.0], "mad": [10.0, 20.0, 30.0]},
            "faithful_seed1": {"side": [3.0, 2.0, 1.0], "mad": [10.0, 20.0, 30.0]},
            "fast_seed0": {"side": [2.0, 3.0, 2.0], "mad": [11.0, 21.0, 31.0]},
            "fast_seed1": {"side": [2.0, 3.0, 4.0], "mad": [11.0, 21.0, 31.0]}}
    start = {"side": [1.5, 2.5, 2.5], "mad": [100.0, 100.0, 100.0]}
    st = speed.mode_stats(runs, start)
    assert st["seeds"] == {"faithful": 2, "fast": 2} and st["n_images"] == 3
    s = st["side"]
    assert s["mode_means"] == pytest.approx({"faithful": 2.0, "fast": 8 / 3})
    # d = fast − faithful per image: [0, 1, 1] → mean 2/3, sd 0.5774, SE 1/3
    assert s["fast_minus_faithful"] == pytest.approx(2 / 3)
    assert s["standard_error"] == pytest.approx(1 / 3)
    assert s["modes_within_noise"] is True
    assert s["per_image_seed_sd"]["faithful"] == pytest.approx((2 ** 0.5 + 0 + 2 ** 0.5) / 3)
    assert s["worse_than_start"] == {"faithful_seed0": 1, "faithful_seed1": 1, "fast_seed0": 2, "fast_seed1": 3}
    # the run as the unit: run means faithful 2, 2; fast 7/3, 3 → difference 2/3, SE sqrt(0 + (2/9) / 2) = 1/3
    r = s["run_level"]   # (exactly on the 2-SE boundary, so its verdict is left to rounding)
    assert r["fast_minus_faithful"] == pytest.approx(2 / 3) and r["standard_error"] == pytest.approx(1 / 3)
    m = st["mad"]   # fast is exactly 1 worse on every image: SE 0, outside the noise
    assert m["fast_minus_faithful"] == pytest.approx(1.0) and m["modes_within_noise"] is False
    assert m["run_level"]["standard_error"] == 0 and m["run_level"]["within_noise"] is False
    with pytest.raises(ValueError, match=">= 2 seeds"):
        speed.mode_stats({k: v for k, v in runs.items() if k != "fast_seed1"})


def test_flop_counter_counts_a_grouped_convolution_backward_like_the_dense_one():
    """bench/speed.py's counter: a B-group convolution (the faithful modulated convolution, one group per
    sample) costs in forward and backward what the same convolution batched densely costs, 3 × the
    forward's 2·B·H·W·C_out·C_in·k² with both gradients, 2 × with the weight's only; a grouped
    transposed convolution too."""
    import torch.nn.functional as F

    speed = _load("speed")
    b, c, h = 4, 8, 6
    fwd = 2 * b * h * h * c * c * 9

    def count(x, w, **kw):
        with speed.flop_counter() as fc:
            y = (F.conv_transpose2d if kw.pop("transposed", False) else F.conv2d)(x, w, **kw)
            y.square().sum().backward()
        return fc.get_total_flops()

    dense = count(torch.randn(b, c, h, h, requires_grad=True), torch.randn(c, c, 3, 3, requires_grad=True), padding=1)
    grouped = count(torch.randn(1, b * c, h, h, requires_grad=True), torch.randn(b * c, c, 3, 3, requires_grad=True),
                    padding=1, groups=b)
    assert dense == grouped == 3 * fwd
    weight_only = count(torch.randn(1, b * c, h, h), torch.randn(b * c, c, 3, 3, requires_grad=True), padding=1, groups=b)
    assert weight_only == 2 * fwd
    # transposed, B groups: forward 2·B·H·W·C·C·k² over the input's pixels
    tr = count(torch.randn(1, b * c, h, h, requires_grad=True), torch.randn(b * c, c, 3, 3, requires_grad=True),
               groups=b, transposed=True)
    assert tr == 3 * fwd


def test_recount_flops_rewrites_tflops_from_the_kept_seconds(tmp_path):
    """--recount-flops: the method's FLOPs of one image's scaled schedule (counted here) × the row's
    images over its measured seconds; the old values kept; a row of another schedule is refused."""
    speed = _load("speed")
    model, targets, full = speed.build_world("synthetic", "cpu", True, 1)
    cfg = speed.scaled(full, 0.002)
    per_image = speed.schedule_flops(speed.count_flops(model, model.nets_state(), targets[:1], cfg, fast=False), cfg)
    row = {"tflops": 99.0, "gflop_per_image_run": 1.0, "s_per_image_measured": 0.5, "images": 4, "devices": 1,
           "k": 1, "s_per_image": 10.0, "images_per_hour": 360.0, "peak_gib": None,
           "iterations_run": speed._schedule_dict(cfg)}
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"meta": {}, "synthetic": {"faithful": row, "fast": {"skipped": "budget"}}}))
    res = speed.main(["--recount-flops", str(bench), "--schedule-scale", "0.002", "--tiny", "--scales", "synthetic"])
    got = json.loads(bench.read_text())["synthetic"]["faithful"]
    assert got == res["synthetic"]["faithful"]
    assert got["tflops"] == pytest.approx(per_image * 4 / 2.0 / 1e12)
    assert got["gflop_per_image_run"] == pytest.approx(per_image / 1e9) and got["tflops_torch_counter"] == 99.0
    assert "flops_recount" in res["meta"] and got["flops_recounted"]
    assert "| synthetic | fast | – | – | skipped: budget |" in bench.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="not the schedule of --schedule-scale 0.5"):
        speed.main(["--recount-flops", str(bench), "--schedule-scale", "0.5", "--tiny"])
    # --modes: only those rows; a row left alone is marked in the table as torch's (too high) count
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"meta": {}, "synthetic": {"faithful": row, "fast": dict(row)}}))
    res = speed.main(["--recount-flops", str(both), "--schedule-scale", "0.002", "--tiny", "--modes", "faithful"])
    assert res["synthetic"]["faithful"]["tflops"] == pytest.approx(got["tflops"])
    assert res["synthetic"]["fast"]["tflops"] == 99.0 and "flops_recounted" not in res["synthetic"]["fast"]
    md = both.with_suffix(".md").read_text()
    assert "| 99.00 (torch counter, too high) |" in md and md.count("too high") == 1


def test_device_benchmark_script_runs_the_snakemake_target_with_its_settings(tmp_path):
    """bench/device_v2_benchmark.sh (with stand-ins for snakemake and nvidia-smi): the benchmark target
    with config/benchmark_v2.yaml, the CONFIG files, the mode, the GPU slots and the greedy scheduler;
    the results are archived for the way back; a CONFIG file that does not exist stops it first."""
    import os
    import subprocess
    import tarfile

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'stand-in GPU'\n")
    (bin_dir / "snakemake").write_text(
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 9; exit 0; }\necho \"$@\" > args.txt\n"
        "mkdir -p results/synthetic_v2 results/benchmark_v2/face2\necho '{}' > results/synthetic_v2/gan2shape.json\n"
        "echo x > results/benchmark_v2/face2/run.ckpt\necho y > results/benchmark_v2/face2/metrics.json\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    work, keep = tmp_path / "work", tmp_path / "keep"
    work.mkdir()
    keep.mkdir()
    (work / "subset.yaml").write_text("benchmark_v2: {images: 2}\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KEEP": str(keep), "END": "60",
           "CONFIG": "subset.yaml", "MODE": "faithful", "SLOTS": "3"}
    script = ROOT / "bench" / "device_v2_benchmark.sh"
    out = subprocess.run(["bash", str(script)], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    args = (work / "args.txt").read_text().split()
    assert args[:5] == ["synthetic_v2_benchmark", "--cores", "16", "--resources", "gpu=3"]
    assert args[args.index("--configfile") + 1:args.index("--configfile") + 3] == ["config/benchmark_v2.yaml", "subset.yaml"]
    assert "mode=faithful" in args and args[args.index("--scheduler") + 1] == "greedy"
    with tarfile.open(keep / "bench.tgz") as tar:
        names = tar.getnames()
    assert "results/synthetic_v2/gan2shape.json" in names and "results/benchmark_v2/face2/metrics.json" in names
    assert not any(n.endswith(".ckpt") for n in names)
    bad = subprocess.run(["bash", str(script)], cwd=work, env={**env, "CONFIG": "missing.yaml"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "CONFIG: no file missing.yaml" in bad.stderr


def test_a_schedules_flops_are_affine_in_n_p():
    """--recount-flops counts at N_p = 1 and 2 and extrapolates: the count is affine in N_p (to 10^-4;
    the measured second difference at N_p 1, 2, 3 is 4e-5 of the step)."""
    from dataclasses import replace

    speed = _load("speed")
    model, targets, full = speed.build_world("synthetic", "cpu", True, 1)
    cfg = speed.scaled(full, 0.002)
    init = model.nets_state()
    f = {n: speed.schedule_flops(speed.count_flops(model, init, targets[:1], replace(cfg, n_p=n), fast=False),
                                 replace(cfg, n_p=n)) for n in (1, 2, 3)}
    step = f[2] - f[1]
    assert 0 < step and abs((f[3] - f[2]) - step) < 1e-4 * step
    assert speed.per_image_flops(model, targets[0], replace(cfg, n_p=3)) == pytest.approx(f[3], rel=1e-5)
    assert model.cfg.n_p == 3      # the model is left with the configuration it was asked about


def test_progress_csv_reads_the_lines_reconstruct_logs_even_between_progress_bars(tmp_path, caplog):
    from gan2shape.stages.reconstruct import log_progress

    progress = _load("progress_csv")
    with caplog.at_level("INFO", logger="gan2shape"):
        log_progress({"iteration": 100, "stage": 0, "step": 1, "loss": 0.05264, "side": 0.0152, "mad": 30.56})
        log_progress({"iteration": 800, "stage": 0, "step": 2, "loss": 0.561})
        log_progress({"image": "car2_0_00001", "iteration": 1500, "stage": 1, "step": 3, "loss": 0.2, "side": 0.05455,
                      "mad": 61.04})
    lines = [f"2026-12-02 08:36:35,289 INFO {r.getMessage()}" for r in caplog.records]
    log = tmp_path / "car2" / "g00.log"
    log.parent.mkdir()
    # as a job's log holds them: tqdm's carriage-return bars before and between the lines
    log.write_text("g00:  1%| | 99/5300 [00:10<08:00]\r" + lines[0] + "\n" + "g00: 15%|\r" + lines[1] + "\n" +
                   lines[2] + "\r g00: 28%|\n")
    out = tmp_path / "t.csv"
    assert progress.main([str(log), "--out", str(out), "--label-from-parent", "1"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["log"], r["image"], r["iteration"], r["stage"], r["step"]) for r in rows] == [
        ("car2/g00", "", "100", "0", "1"), ("car2/g00", "", "800", "0", "2"), ("car2/g00", "car2_0_00001", "1500", "1", "3")]
    assert float(rows[0]["side_x100"]) == pytest.approx(1.52) and float(rows[0]["mad"]) == pytest.approx(30.56)
    assert rows[1]["side_x100"] == "" and float(rows[1]["loss"]) == pytest.approx(0.561)
    assert float(rows[2]["side_x100"]) == pytest.approx(5.455)
