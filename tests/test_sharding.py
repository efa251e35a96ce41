"""Multi-GPU sharding (issue 15 item 5, issue 12): the deterministic job -> GPU assignment, the per-GPU
resources, and the Snakemake DAG with a simulated device list (a dry run; no GPU needed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from gan2shape.sharding import device_of, gpu_of, gpu_resources, job_index, resources_flag, shard

REPO = Path(__file__).resolve().parents[1]


def test_job_i_runs_on_gpu_i_mod_g():
    gpus = [0, 1, 2]
    assert [gpu_of(i, gpus) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert [gpu_of(i, [3, 5]) for i in range(4)] == [3, 5, 3, 5]
    assert gpu_of(4, []) is None
    assert device_of(4, "cuda", [3, 5]) == "cuda:3"
    assert device_of(4, "cuda", []) == "cuda" and device_of(4, "cpu", [0, 1]) == "cpu"


def test_each_job_claims_exactly_its_own_gpu_slot():
    gpus = [0, 1, 2, 3]
    for i in range(10):
        r = gpu_resources(i, gpus)
        assert set(r) == {"gpu_0", "gpu_1", "gpu_2", "gpu_3"} and sum(r.values()) == 1
        assert r[f"gpu_{gpu_of(i, gpus)}"] == 1
    assert resources_flag([0, 1]) == "gpu=2 gpu_0=1 gpu_1=1"
    assert resources_flag([0, 1], per_gpu=7) == "gpu=14 gpu_0=7 gpu_1=7"


def test_job_index_is_a_dense_deterministic_numbering():
    images, priors = ["a", "b", "c"], ["ellipsoid", "box"]
    idx = [job_index(im, images, p, priors) for p in priors for im in images]
    assert idx == list(range(6))
    # images outside the list (the synthetic benchmark): by their trailing number, stable
    assert job_index("face_0_00012", images) == 12
    assert job_index("weird", images) == job_index("weird", images)
    # balanced: 32 benchmark images over 4 GPUs, 8 each
    counts = Counter(gpu_of(job_index(f"face_0_{n:05d}", []), [0, 1, 2, 3]) for n in range(32))
    assert set(counts.values()) == {8}


def test_shard_deals_round_robin_and_keeps_everything():
    items = list(range(10))
    parts = shard(items, 3)
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(sum(parts, [])) == items
    assert shard(items, 1) == [items]
    with pytest.raises(ValueError):
        shard(items, 0)


def test_dry_run_gives_each_reconstruct_job_its_device_and_slot():
    """Simulated device list gpus=[0,1]: the reconstruct jobs alternate cuda:0 / cuda:1, each claims
    its own gpu_<id> slot, and the mode param reaches the command line (synthetic-car2: no joint
    pre-train, so the demo preset runs GAN2Shape from both priors)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    snakemake = Path(sys.executable).with_name("snakemake")
    out = subprocess.run([str(snakemake), "-n", "-p", "all", "--config", "dataset=synthetic-car2", "device=cuda", "gpus=[0,1]", "mode=fast",
                          "--resources", "gpu=2", "gpu_0=1", "gpu_1=1"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    jobs = re.findall(r"rule reconstruct:.*?wildcards: prior=(\S+), image=(\S+)\n\s+resources: ([^\n]*)\n"
                      r".*?--device (\S+) --mode (\S+)", text, flags=re.S)
    assert len(jobs) >= 4, text[-3000:]
    priors = ["ellipsoid", "smoothed_box"]
    images = sorted({im for _, im, _, _, _ in jobs})
    for prior, image, res, device, mode in jobs:
        i = job_index(image, images, prior, priors)
        assert device == f"cuda:{i % 2}" and mode == "fast"
        assert f"gpu_{i % 2}=1" in res and f"gpu_{1 - i % 2}=0" in res
    assert {d for *_, d, _ in jobs} == {"cuda:0", "cuda:1"}
