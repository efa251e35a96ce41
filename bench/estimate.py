"""How much device time would a protocol take? An estimate from the measured speed benchmark.

Reads the per-phase seconds that ``bench/speed.py`` measured on the device (``results/speed/bench.json``)
and multiplies them by the iteration counts of the original protocols (the schedules of
``gan2shape.method.config``), for the 64-px synthetic scale:

* per image-iteration cost of each step = measured phase seconds / iterations run / images;
* steps 2 and 3 scale linearly with N_p from the benchmark's N_p (an upper bound: the target's step-1
  part of step 3 does not grow with N_p);
* a pool-collection forward (no gradient) costs a third of a step-2 iteration; the benchmark's step-3
  phase contains its collection, which is subtracted the same way;
* a joint pre-train iteration with P streams costs P image-iterations.

    python bench/estimate.py [--bench results/speed/bench.json] [--mode fast] [--images 32] [--streams 8]

Prints one Markdown row per protocol: iterations, estimated device minutes. These are estimates, not
measurements; the README and results documents say so wherever they quote them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gan2shape.method.config import PRESETS, SCHEDULES, Stage  # noqa: E402

COLLECT_PER_STEP2 = 1 / 3      # a collection forward vs a step-2 iteration (forward only, no backward)


def step_costs(row: dict) -> dict:
    """Seconds per image-iteration of the pre-fit and steps 1-3, and per collection forward."""
    run, sec, images = row["iterations_run"], row["phase_seconds"], row["images"]
    per = {k: sec[k] / run[k] / images for k in ("prefit", "step1", "step2")}
    per["collect"] = per["step2"] * COLLECT_PER_STEP2
    per["step3"] = (sec["step3"] / images - run["collect"] * per["collect"]) / run["step3"]
    return per


def schedule_counts(schedule: list[Stage]) -> dict:
    return {"step1": sum(s.n1 for s in schedule), "step2": sum(s.rounds * s.n2 for s in schedule),
            "step3": sum(s.rounds * s.n3 for s in schedule),
            "rounds": sum(s.rounds for s in schedule if s.n2 > 0)}


def run_seconds(cost: dict, schedule: list[Stage], n_p: int, bench_np: int, images_per_iteration: int,
                prior_iters: int, collect_forwards: int) -> tuple[int, float]:
    """(iterations, seconds) of one run that trains ``images_per_iteration`` images per iteration."""
    c = schedule_counts(schedule)
    scale = n_p / bench_np
    per_it = images_per_iteration * (c["step1"] * cost["step1"] + scale * (c["step2"] * cost["step2"]
                                                                           + c["step3"] * cost["step3"]))
    seconds = per_it + prior_iters * cost["prefit"] + collect_forwards * scale * cost["collect"]
    return c["step1"] + c["step2"] + c["step3"], seconds


def protocols(images: int, streams: int) -> list[dict]:
    """The protocols of the synthetic benchmark, from the presets of the original configs."""
    syn, pre, car = PRESETS["synface"], PRESETS["synface_pretrain"], PRESETS["car"]
    pre_rounds = schedule_counts(SCHEDULES["synface_pretrain"])["rounds"]
    inst_rounds = schedule_counts(SCHEDULES["synface"])["rounds"]
    car_rounds = schedule_counts(SCHEDULES["car"])["rounds"]
    rows = [
        dict(name=f"synface joint pre-train, {streams} streams (original: 8 processes)", runs=1,
             schedule=SCHEDULES["synface_pretrain"], n_p=pre["n_p"], k=streams, prior=1000,
             collect=streams * pre["collect_iters"] * pre_rounds),
        dict(name="synface joint pre-train, 1 stream", runs=1, schedule=SCHEDULES["synface_pretrain"],
             n_p=pre["n_p"], k=1, prior=1000, collect=pre["collect_iters"] * pre_rounds),
        dict(name=f"synface instance runs, 4 images per model, {images} images", runs=images // 4,
             schedule=SCHEDULES["synface"], n_p=syn["n_p"], k=4, prior=0, collect=4 * 100 * inst_rounds),
    ]
    for n_p in (4, 8, 16, 32):
        rows.append(dict(name=f"car recipe, N_p {n_p}, {images} images, one prior", runs=images,
                         schedule=SCHEDULES["car"], n_p=n_p, k=1, prior=1000, collect=100 * car_rounds))
    assert car["schedule"] == SCHEDULES["car"]
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", type=Path, default=ROOT / "results/speed/bench.json")
    ap.add_argument("--scale", default="synthetic")
    ap.add_argument("--mode", default="faithful", choices=["faithful", "fast"])
    ap.add_argument("--bench-np", type=int, default=16, help="N_p of the benchmark's preset at this scale")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--streams", type=int, default=8)
    a = ap.parse_args(argv)
    row = json.loads(a.bench.read_text())[a.scale][a.mode]
    cost = step_costs(row)
    print(f"{a.bench} [{a.scale}, {a.mode}]: ms per image-iteration " +
          ", ".join(f"{k} {1000 * v:.1f}" for k, v in cost.items()))
    print("| protocol | iterations per run | runs | estimated device minutes |\n|---|---|---|---|")
    for p in protocols(a.images, a.streams):
        its, s = run_seconds(cost, p["schedule"], p["n_p"], a.bench_np, p["k"], p["prior"], p["collect"])
        print(f"| {p['name']} | {its:,} | {p['runs']} | {p['runs'] * s / 60:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
