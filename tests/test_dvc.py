"""DVC around the DAG: params.yaml survives DVC's own YAML writer, the local remote pushes and pulls,
`dvc commit` after a run gives a clean `dvc status`, the README's comparison recipe fits 80 columns,
and the run's outputs are not git-tracked (the reference numbers are, under results/reference/)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# the README's recipe (section "Experiments with DVC")
RECIPE = "dvc exp show --drop '.*' --keep '^(Experiment|params.yaml:np|side_mean|mad_mean|seconds_per_image)$'"


def _dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", COLUMNS="80", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    r = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout


def test_params_yaml_is_written_back_unchanged_by_dvc(tmp_path):
    """`dvc exp run -S` rewrites params.yaml with DVC's ruamel round trip: the committed layout is
    that round trip's fixed point, so setting a key changes that key's line only."""
    from dvc.utils.serialize import modify_yaml

    text = (REPO / "params.yaml").read_text()
    p = tmp_path / "params.yaml"
    p.write_text(text)
    with modify_yaml(p) as d:
        d["np"] = d["np"]
    assert p.read_text() == text
    with modify_yaml(p) as d:
        d["np"] = 16
        d["mode"] = "fast"                      # `dvc exp run -S mode=fast`
        d["reconstruct"]["perceptual"] = "none"
    changed = [(a, b) for a, b in zip(text.splitlines(), p.read_text().splitlines()) if a != b]
    assert [b.split("#")[0].strip() for _, b in changed] == ["np: 16", "mode: fast", "perceptual: none"]
    assert len(p.read_text().splitlines()) == len(text.splitlines())


def test_run_outputs_are_not_tracked_by_git_but_the_reference_is():
    tracked = _git("ls-files", "results", cwd=REPO).split()
    assert "results/metrics.json" not in tracked and "results/per_image.csv" not in tracked
    for f in ("metrics.json", "per_image.csv"):
        assert f"results/reference/demo/{f}" in tracked
        ignored = subprocess.run(["git", "check-ignore", "-q", f"results/{f}"], cwd=REPO)
        assert ignored.returncode == 0, f"results/{f} is not ignored by git"
    ref = json.loads((REPO / "results/reference/demo/metrics.json").read_text())
    assert ref["dataset"] == "synthetic-face2" and ref["preset"] == "demo" and ref["methods"]
    assert json.loads((REPO / "results/reference/demo/provenance.json").read_text())["tolerance"] > 0


@pytest.fixture
def dvc_repo(tmp_path):
    """A git+DVC repository with the project's DVC files and small stand-ins for deps and outputs."""
    r = tmp_path / "repo"
    r.mkdir()
    for f in (".dvcignore", ".gitignore", "dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / f, r / f)
    (r / ".dvc").mkdir()
    shutil.copy2(REPO / ".dvc" / "config", r / ".dvc" / "config")
    for f, text in {"workflow/Snakefile": "a", "src/gan2shape/x.py": "b", "models/m": "c", "config/datasets.yaml": "c2",
                    "data/synthetic/test/l": "d", "data/synthetic_v2/test/l": "d2",
                    "results/synthetic-face2/f": "e",
                    "results/report/index.html": "<html>"}.items():
        (r / f).parent.mkdir(parents=True, exist_ok=True)
        (r / f).write_text(text)
    shutil.copy2(REPO / "results/reference/demo/metrics.json", r / "results/metrics.json")
    shutil.copy2(REPO / "results/reference/demo/per_image.csv", r / "results/per_image.csv")
    _git("init", "-q", cwd=r)
    _git("add", "-A", cwd=r)
    _git("commit", "-qm", "init", cwd=r)
    assert "results/" not in _git("ls-files", cwd=r)
    return r


def test_commit_push_pull_through_the_local_remote(dvc_repo):
    r = dvc_repo
    # what `make demo` does after the DAG: dvc.lock for the state on disk, `dvc status` clean
    _dvc("commit", "--force", "--quiet", "pipeline", cwd=r)
    assert (r / "dvc.lock").is_file()
    assert "up to date" in _dvc("status", cwd=r).stdout
    out = _dvc("push", cwd=r).stdout
    assert "pushed" in out and any((r / ".dvc-storage").rglob("*")), out
    want = (r / "results/metrics.json").read_bytes()
    shutil.rmtree(r / "results")
    shutil.rmtree(r / ".dvc" / "cache")
    _dvc("pull", cwd=r)
    assert (r / "results/metrics.json").read_bytes() == want
    assert (r / "results/report/index.html").read_text() == "<html>"


def test_readme_comparison_recipe_fits_80_columns(dvc_repo):
    from dvc.utils.serialize import modify_yaml

    assert RECIPE in (REPO / "README.md").read_text()
    r = dvc_repo
    _dvc("commit", "--force", "--quiet", "pipeline", cwd=r)
    _git("add", "dvc.lock", cwd=r)
    _git("commit", "-qm", "lock", cwd=r)
    with modify_yaml(r / "params.yaml") as d:  # an experiment: np = 8, other numbers
        d["np"] = 8
    m = json.loads((r / "results/metrics.json").read_text())
    m["side_mean"] = 1.25
    (r / "results/metrics.json").write_text(json.dumps(m))
    _dvc("commit", "--force", "--quiet", "pipeline", cwd=r)
    _dvc("exp", "save", "--quiet", "-n", "np8", cwd=r)
    env = dict(os.environ, DVC_NO_ANALYTICS="1", COLUMNS="80", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run(RECIPE, shell=True, cwd=r, env=env, capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    assert max(len(line.rstrip()) for line in lines) <= 80, out
    assert "side_mean" in out and "mad_mean" in out and "seconds_per_image" in out and "params.yaml:np" in out
    row = next(line for line in lines if "np8" in line)
    assert "1.25" in row and row.rstrip().endswith("8")
    assert "…" not in out
