"""Golden tiny runs: the training loop reproduces the runs recorded before its refactor.

``tests/golden/record.py`` defines the runs (float64; one image, three independent models in one
batch, a shared group of two, joint pre-training (one and two stages), the generalized trainer) and made
``golden_runs.npz``. Every depth, albedo, view, light and logged number must match to 1e-6.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "golden"))
import record  # noqa: E402


@pytest.fixture(scope="module")
def current():
    return record.runs()


@pytest.mark.parametrize("run", ["k1", "k3", "shared2", "joint", "joint2", "generalized"])
def test_golden_run_unchanged(current, run):
    golden = np.load(record.GOLDEN)
    keys = [k for k in golden.files if k.startswith(run + "/")]
    assert len(keys) == len(record.KEYS) + 1
    for key in keys:
        a, b = golden[key], current[key]
        assert a.shape == b.shape, (key, a.shape, b.shape)
        assert np.abs(a - b).max(initial=0.0) <= 1e-6, (key, float(np.abs(a - b).max()))
