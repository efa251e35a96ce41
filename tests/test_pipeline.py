"""The Snakemake DAG and its DVC wrapper: dry runs for every dataset, lint, params triggers, a tiny
end-to-end run, dvc.yaml ⇔ Snakemake outputs, `dvc repro` twice."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATASETS = ["synthetic-face", "synthetic-box", "synthetic-face2", "synthetic-car2", "celeba", "cat", "car", "church", "synface"]
# a tiny configuration: 1 image, 1 prior, a few iterations of everything; no joint start (the committed
# demo pre-train of synthetic-face2 is tested on its own below)
TINY = {"presets": {"demo": {"images": 1, "stage_iters": [2, 2, 2], "num_stages": 1, "prior_iters": 3,
                             "collect_iters": 2, "inversion_steps": 5, "prior_starts": True}},
        "np": 2, "prior": {"names": ["smoothed_box"]}, "figures": {"frames": 3},
        "reconstruct": {"official_pretrain": False}}


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the `gan2shape` console script
    env["DVC_NO_ANALYTICS"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    return env


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=1200)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def snakemake(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(BIN / "snakemake"), *args], cwd, check)


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def copy_repo(dest: Path, params: dict | None = None) -> Path:
    """The tracked project files in ``dest`` (no venv, no results), optionally with edited params."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in files + ["params.yaml", "dvc.yaml"]:
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    for d in ("workflow", "src", "config", "models", "data/synthetic/test"):  # also not-yet-committed files
        if (REPO / d).is_dir():
            shutil.copytree(REPO / d, dest / d, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if params:
        p = yaml.safe_load((dest / "params.yaml").read_text())
        (dest / "params.yaml").write_text(yaml.safe_dump(merge(p, params), sort_keys=False))
    return dest


def planned_rules(out: str) -> dict[str, int]:
    """Job counts per rule from a dry run's job-stats table."""
    counts, table = {}, False
    for line in out.splitlines():
        if line.startswith("job ") and "count" in line:
            table = True
            continue
        if table:
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if m and m.group(1) != "total":
                counts[m.group(1)] = int(m.group(2))
            elif line.strip().startswith("total"):
                break
    return counts


def fake_release(root: Path, dataset: str) -> None:
    """Empty files in the official layout of a real dataset (enough for a dry run)."""
    m = json.loads((REPO / "src/gan2shape/manifest.json").read_text())["layouts"][dataset]
    for paths in m["checkpoints"].values():
        for p in paths:
            (root / p).parent.mkdir(parents=True, exist_ok=True)
            (root / p).touch()
    for d in m["data"]:
        base = root / d["root"]
        for lst in d["lists"]:
            names = ["000001.png", "000002.png"]
            (base / lst).parent.mkdir(parents=True, exist_ok=True)
            (base / lst).write_text("\n".join(names) + "\n")
            for n in names:
                img = base / (d["images"] if d["images"] != "." else "") / n
                img.parent.mkdir(parents=True, exist_ok=True)
                img.touch()
                (base / "latents").mkdir(exist_ok=True)
                (base / "latents" / n.replace(".png", ".pt")).touch()
                if d["depth"]:
                    dp = Path(str(img).replace("image", "depth"))
                    dp.parent.mkdir(parents=True, exist_ok=True)
                    dp.touch()


@pytest.mark.parametrize("dataset", DATASETS)
def test_dry_run_for_every_dataset(tmp_path, dataset):
    repo = copy_repo(tmp_path, {"dataset": dataset})
    if not dataset.startswith("synthetic"):
        fake_release(repo, dataset)
    r = snakemake("all", "-n", "--cores", "4", "--resources", "gpu=1", cwd=repo)
    jobs = planned_rules(r.stdout)
    assert jobs.get("reconstruct", 0) >= 2, r.stdout[-3000:]
    assert jobs.get("report") == 1 and jobs.get("summarize") == 1
    if dataset.startswith("synthetic") or dataset == "synface":
        assert jobs.get("evaluate") == 1
    if dataset in ("celeba", "cat", "synface"):  # the released joint-pretraining checkpoints
        assert "pretrain_depth" not in jobs
    elif dataset == "synthetic-face2":  # the committed demo pre-train: the demo starts from it only
        assert "joint_alone" in jobs and "pretrain_depth" not in jobs and jobs.get("prior", 0) >= 2
    else:
        assert jobs.get("pretrain_depth", 0) >= 2
    assert "joint_pretrain" not in jobs and "sample_gan" not in jobs  # no dataset asks for it


def test_world_v2_dataset_uses_its_own_models_and_says_when_its_gan_is_missing(tmp_path):
    """synthetic-face2 / synthetic-car2: the v2 test set, GAN, segmenter and MVNs (not world v1's); a
    missing GAN is named with the command that trains it before Snakemake's own error."""
    repo = copy_repo(tmp_path, {"dataset": "synthetic-car2"})
    (repo / "models/synthetic_v2_gan.pt").unlink()
    r = snakemake("all", "-n", "-p", "--cores", "4", "--resources", "gpu=1", cwd=repo, check=False)
    assert r.returncode != 0
    assert "models/synthetic_v2_gan.pt (the GAN of dataset synthetic-car2) does not exist" in r.stderr
    assert "WORLD=v2 bash bench/device_train_gan.sh" in r.stderr
    shutil.copy2(REPO / "models/synthetic_v2_gan.pt", repo / "models/synthetic_v2_gan.pt")
    r = snakemake("all", "-n", "-p", "--cores", "4", "--resources", "gpu=1", cwd=repo)
    assert "does not exist" not in r.stderr
    seg, inv, rec = (_job_block(r.stdout, rule) for rule in ("segment", "invert", "reconstruct"))
    assert "models/synthetic_v2_segmenter.pt" in seg and "data/synthetic_v2/test/car2/car2_0_00000.png" in seg
    assert "--gan models/synthetic_v2_gan.pt" in inv
    assert "--view-mvn models/synthetic_v2_view_mvn.pth" in rec and "--light-mvn models/synthetic_v2_light_mvn.pth" in rec
    assert "--preset car" in rec and "synthetic_gan.pt" not in r.stdout


def _job_block(out: str, rule: str) -> str:
    """A dry run's text about one job: from its "rule <name>:" line to the next blank line."""
    return out.split(f"rule {rule}:", 1)[1].split("\n\n", 1)[0]


def test_joint_pretrain_target_plans_samples_prior_and_a_resumable_gpu_job(tmp_path):
    """`snakemake joint_pretrain`: GAN samples, the first sample's mask and ellipsoid prior, and the
    P-stream pre-train with a checkpoint under results (rerunning resumes); in `all` only for a
    dataset with joint_pretrain: true; params are validated."""
    repo = copy_repo(tmp_path, {"joint_pretrain": {"images": 12, "streams": 4, "max_seconds": 3600}})
    r = snakemake("joint_pretrain", "-n", "-p", "--cores", "4", "--resources", "gpu=1", cwd=repo)
    assert planned_rules(r.stdout) == {"sample_gan": 1, "pretrain_mask": 1, "pretrain_prior": 1, "joint_pretrain": 1}
    job = _job_block(r.stdout, "joint_pretrain")
    res = "results/pretrain/synthetic-face2"
    for part in ("gpu=1", "--streams 4", "--preset synface_pretrain", "--crop 0", f"--checkpoint {res}/pretrain.ckpt",
                 "--stop-after-seconds 3600", f"--first-prior {res}/prior_000000.npy", f"--out {res}/pretrain.pth",
                 f"--list {res}/samples/list.txt"):
        assert part in job, part
    assert "--n 12 --truncation 1.0" in _job_block(r.stdout, "sample_gan")
    assert "--name ellipsoid" in _job_block(r.stdout, "pretrain_prior")
    datasets = yaml.safe_load((repo / "config/datasets.yaml").read_text())
    datasets["synthetic-face2"]["joint_pretrain"] = True
    (repo / "config/datasets.yaml").write_text(yaml.safe_dump(datasets, sort_keys=False))
    r = snakemake("all", "-n", "--cores", "4", "--resources", "gpu=1", cwd=repo)
    assert planned_rules(r.stdout).get("joint_pretrain") == 1
    bad = copy_repo(tmp_path / "bad", {"joint_pretrain": {"streams": 0}})
    r = snakemake("joint_pretrain", "-n", cwd=bad, check=False)
    assert r.returncode != 0 and "streams" in r.stdout + r.stderr


def test_real_dataset_without_download_plans_the_download(tmp_path):
    repo = copy_repo(tmp_path, {"dataset": "car"})
    r = snakemake("all", "-n", "--cores", "1", cwd=repo)
    assert planned_rules(r.stdout) == {"download": 1, "all": 1}


@pytest.mark.parametrize("perceptual,what", [("discriminator", "release"), ("lpips_vgg", "release vgg")])
def test_download_rule_fetches_only_what_the_config_needs(tmp_path, perceptual, what):
    """VGG16 only for the lpips_vgg perceptual term; a failure prints the log's error part."""
    repo = copy_repo(tmp_path, {"dataset": "car", "reconstruct": {"perceptual": perceptual}})
    r = snakemake("all", "-n", "-p", "--cores", "1", cwd=repo)
    cmd = next(line for line in r.stdout.splitlines() if "gan2shape download" in line)
    assert f"--what {what} --dataset car " in cmd
    assert "grep -m 1 -A 200 ' ERROR ' logs/download.log >&2" in cmd


def test_lint_is_clean(tmp_path):
    repo = copy_repo(tmp_path)
    r = snakemake("--lint", cwd=repo, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_params_schema_rejects_bad_values(tmp_path):
    repo = copy_repo(tmp_path, {"np": 0})
    r = snakemake("all", "-n", cwd=repo, check=False)
    assert r.returncode != 0 and "np" in (r.stdout + r.stderr)


def test_stage_code_never_reads_params_yaml():
    """Only Snakemake reads params.yaml: no string literal in the package is a path to it (messages
    that tell the user which setting to change may name it)."""
    import ast
    import re

    for f in (REPO / "src" / "gan2shape").rglob("*.py"):
        tree = ast.parse(f.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                assert not re.fullmatch(r"(.*[/\\])?params\.ya?ml", node.value.strip()), f"{f}: {node.value!r}"


def test_dvc_yaml_outputs_cover_the_snakemake_outputs(tmp_path):
    """Every file `snakemake all` produces lies under a DVC out, metric or plot, and every DVC out is
    produced by a job; the stage runs `snakemake all` with the target first; deps cover the code."""
    repo = copy_repo(tmp_path)
    stage = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["pipeline"]
    assert stage["cmd"].split()[:2] == ["snakemake", "all"]
    assert {"workflow", "src/gan2shape"} <= set(stage["deps"])
    params = yaml.safe_load((repo / "params.yaml").read_text())
    declared = []
    for key in ("outs", "metrics", "plots"):
        for entry in stage[key]:
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            declared.append(path.replace("${dataset}", params["dataset"]))
    r = snakemake("all", "--detailed-summary", "--cores", "1", cwd=repo)
    outputs = [line.split("\t")[0] for line in r.stdout.splitlines()[1:] if line.strip()]
    outputs = [o for o in outputs if o.startswith("results/")]
    assert outputs
    for o in outputs:
        assert any(o == d or o.startswith(d.rstrip("/") + "/") for d in declared), f"{o} is not a DVC output"
    for d in declared:
        assert any(o == d or o.startswith(d.rstrip("/") + "/") for o in outputs), f"{d} is produced by no job"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The demo DAG end to end at toy size (1 image, 1 prior, 2 iterations per step) on the CPU."""
    repo = copy_repo(tmp_path_factory.mktemp("pipeline"), TINY)
    snakemake("all", "--cores", "2", "--resources", "gpu=1", cwd=repo)
    return repo


def test_tiny_end_to_end_run_produces_metrics_figures_mesh_report(tiny_run):
    res = tiny_run / "results"
    m = json.loads((res / "metrics.json").read_text())
    assert m["dataset"] == "synthetic-face2" and m["np"] == 2 and m["runs"] == 1
    for k in ("side_mean", "mad_mean", "seconds_per_image"):
        assert m[k] == m[k] and m[k] >= 0, k  # finite, not NaN
    assert set(m["methods"]) == {"constant", "prior-smoothed_box", "gan2shape-smoothed_box"}
    fig = next((res / "synthetic-face2" / "figures" / "smoothed_box").iterdir())
    for f in ("panel.png", "relight.gif", "rotate.gif", "mesh.obj"):
        assert (fig / f).stat().st_size > 0, f
    html = (res / "report" / "index.html").read_text()
    for ref in re.findall(r'(?:src|href)="([^"#:]+)"', html):
        assert (res / "report" / ref).resolve().exists(), ref
    assert (res / "per_image.csv").read_text().count("\n") == 1 + 3  # header + 3 methods × 1 image


def test_changing_np_replans_only_dependent_jobs(tiny_run):
    r = snakemake("all", "-n", "--cores", "1", "--config", "np=3", cwd=tiny_run)
    jobs = planned_rules(r.stdout)
    assert set(jobs) == {"reconstruct", "evaluate", "summarize", "figures", "report", "all"}, jobs
    r = snakemake("all", "-n", "--cores", "1", cwd=tiny_run)
    assert "Nothing to be done" in r.stdout + r.stderr


def test_dvc_repro_twice_in_a_temporary_clone(tmp_path):
    repo = copy_repo(tmp_path, TINY)
    assert (repo / ".dvc" / "config").exists()  # the project is a DVC repository (analytics off)
    assert "analytics = false" in (repo / ".dvc" / "config").read_text()
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        run(cmd, repo)
    run([str(BIN / "dvc"), "repro"], repo)
    assert json.loads((repo / "results" / "metrics.json").read_text())["runs"] == 1
    second = run([str(BIN / "dvc"), "repro"], repo)
    assert "didn't change" in second.stdout or "up to date" in second.stdout, second.stdout


def test_synthetic_benchmark_targets_plan_every_family_and_prior(tmp_path):
    """`snakemake synthetic_benchmark --configfile config/benchmark.yaml` plans one batched segment and
    invert over the families, every prior of the first N images, one reconstruction per image and prior, and
    the table results/synthetic_benchmark/<name>_<family>_<N>.{json,csv}; lint stays clean."""
    repo = copy_repo(tmp_path)
    bench = yaml.safe_load((repo / "config/benchmark.yaml").read_text())["benchmark"]
    n, fams, priors = bench["images"], bench["families"], bench["priors"]
    allp = set(priors) | set(bench["baselines"].values())
    r = snakemake("synthetic_benchmark", "-n", "--cores", "4", "--resources", "gpu=1",
                  "--configfile", "config/benchmark.yaml", "-R", "bench_evaluate", cwd=repo)
    jobs = planned_rules(r.stdout)
    assert jobs == {"bench_segment": 1, "bench_invert": 1,
                    "bench_prior": len(fams) * n * len(allp), "bench_pretrain_depth": len(fams) * n * len(priors),
                    "bench_reconstruct": len(fams) * n * len(priors), "bench_evaluate": len(fams),
                    "synthetic_benchmark": 1}
    for f in fams:
        for ext in ("json", "csv"):
            assert f"results/synthetic_benchmark/{bench['name']}_{f}_{n}.{ext}" in r.stdout
    lint = snakemake("--lint", "--configfile", "config/benchmark.yaml", cwd=repo, check=False)
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr


def bench_v2_repo(tmp_path: Path, images: int = 2, **over) -> tuple[Path, dict]:
    """A repository copy whose config/benchmark_v2.yaml takes the first ``images`` images per family
    (``over`` merged into its benchmark_v2 section), with a placeholder for what is not made yet: the
    v2 GAN (the joint pre-train is planned by rule joint_pretrain of dataset synthetic-face2)."""
    repo = copy_repo(tmp_path)
    path = repo / "config/benchmark_v2.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["benchmark_v2"] = merge(cfg["benchmark_v2"], {"images": images, **over})
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return repo, cfg["benchmark_v2"]


def _flag(cmd: list[str], flag: str) -> list[str] | None:
    """The values after ``flag`` in a tokenised command line (None when absent)."""
    if flag not in cmd:
        return None
    i = cmd.index(flag) + 1
    vals = []
    while i < len(cmd) and not cmd[i].startswith("--"):
        vals.append(cmd[i])
        i += 1
    return vals


def test_world_v2_benchmark_plans_every_row_with_its_recipe(tmp_path):
    """`snakemake synthetic_v2_benchmark --configfile config/benchmark_v2.yaml` with 2 images per family
    plans one batched segment and invert, every prior of every image, a depth pre-fit per image and prior
    of the car recipe, one reconstruct job per row and unit (synface: the 2 images share a job; car: one
    image per job), and gives every job the flags of its recipe; lint stays clean."""
    import shlex

    repo, b = bench_v2_repo(tmp_path)
    r = snakemake("synthetic_v2_benchmark", "-n", "-p", "--cores", "16", "--resources", "gpu=14",
                  "--configfile", "config/benchmark_v2.yaml", cwd=repo)
    fams, n = b["families"], 2
    assert fams == ["face2", "car2"] and len(b["priors"]) == 4  # the defaults these counts follow
    assert planned_rules(r.stdout) == {
        "bench2_segment": 1, "bench2_invert": 1,
        "bench2_prior": len(fams) * n * 4,                      # ellipsoid, masked_box, smoothed_box, confidence
        "bench2_pretrain_depth": len(fams) * n * 2,             # both families × {ellipsoid, smoothed_box}
        # face2: synface + synface-independent (one unit of ≤ 4 images each), car-ellipsoid and
        # car-smoothed_box per image; car2, one job per image: car-ellipsoid, car-smoothed_box, remedy and
        # the N_p sweep's 4, 8, 16 (its 32 is car-ellipsoid)
        "bench2_reconstruct": 2 + n * 2 + n * (3 + 3),
        "bench2_evaluate": len(fams), "bench2_figure": len(fams), "bench2_table": 1, "synthetic_v2_benchmark": 1,
        # the synface rows' joint pre-train from the v2 GAN (rules/pretrain.smk)
        "sample_gan": 1, "pretrain_mask": 1, "pretrain_prior": 1, "joint_pretrain": 1}
    cmds = {}
    for line in r.stdout.splitlines():
        if line.startswith("gan2shape reconstruct") or "Shell command: gan2shape reconstruct" in line:
            cmd = shlex.split(line.split("gan2shape reconstruct", 1)[1].split(">")[0])
            fam, row, _, unit = _flag(cmd, "--checkpoint")[0].split("/")[2:6]
            cmds[(fam, row, unit.removesuffix(".ckpt"))] = cmd
    W, face, car = b["work"], ["face2_0_00000", "face2_0_00001"], ["car2_0_00000", "car2_0_00001"]
    rows = {(f, row) for f, row, _ in cmds}
    assert rows == {("face2", "gan2shape-synface"), ("face2", "gan2shape-synface-independent"),
                    ("face2", "gan2shape-car-ellipsoid"), ("face2", "gan2shape-car-smoothed_box")} | {
        ("car2", f"gan2shape-{x}") for x in ("car-ellipsoid", "car-smoothed_box", "remedy", "car-ellipsoid-np4",
                                             "car-ellipsoid-np8", "car-ellipsoid-np16")}
    for row in ("gan2shape-synface", "gan2shape-synface-independent"):  # the synface protocol: 2 images, 1 model
        cmd = cmds[("face2", row, "g00")]
        assert [_flag(cmd, f) for f in ("--preset", "--schedule", "--np", "--crop", "--image-size")] == [
            ["synface"], ["synface"], ["16"], ["0"], ["64"]]
        assert _flag(cmd, "--pretrain") == ["results/pretrain/synthetic-face2/pretrain.pth"] and _flag(cmd, "--name") == face
        assert _flag(cmd, "--image") == [f"{b['test_set']}/face2/{x}.png" for x in face]
        assert _flag(cmd, "--latent") == [f"{W}/invert/{x}.pt" for x in face]
        assert _flag(cmd, "--mask") is None and _flag(cmd, "--out") == [f"{W}/face2/{row}/reconstruct/g00"]
        assert (_flag(cmd, "--independent") is not None) == row.endswith("independent")
    for (fam, row, unit), cmd in cmds.items():
        assert _flag(cmd, "--device") == ["cuda"] and _flag(cmd, "--gt-encoding") == ["synthetic"]
        assert len(_flag(cmd, "--gt-depth")) == len(_flag(cmd, "--scene")) == len(_flag(cmd, "--image"))
        if fam == "face2":
            continue
        img = car[int(unit[1:])]  # the car recipe: one image per job, mask on, pre-fit to the row's prior
        prior = "ellipsoid" if "ellipsoid" in row else "smoothed_box"
        assert [_flag(cmd, f) for f in ("--preset", "--schedule", "--image", "--mask", "--pretrain", "--out")] == [
            ["car"], ["car"], [f"{b['test_set']}/car2/{img}.png"], [f"{W}/segment/{img}_mask.png"],
            [f"{W}/pretrain/{prior}/{img}.pth"], [f"{W}/car2/{row}/reconstruct/{unit}/{img}"]]
        assert _flag(cmd, "--np") == [row.split("-np")[1] if "-np" in row else "32"]
        assert (_flag(cmd, "--depth-lr-step3") == ["1e-5"]) == (row == "gan2shape-remedy")
        assert _flag(cmd, "--independent") is None
    # the table: every row scored per family, N_p 32 of the sweep read from car-ellipsoid's runs
    ev = next(line for line in r.stdout.splitlines() if "gan2shape evaluate" in line and "--dataset car2" in line)
    methods = dict(m.split("=", 1) for m in _flag(shlex.split(ev.split("gan2shape evaluate", 1)[1]), "--method"))
    assert list(methods)[:6] == ["constant", "average_gt", "prior-ellipsoid", "prior-masked_box",
                                 "prior-smoothed_box", "prior-confidence"]
    assert methods["average_gt"] == "average"
    assert methods["gan2shape-car-ellipsoid-np32"] == methods["gan2shape-car-ellipsoid"] == \
        f"{W}/car2/gan2shape-car-ellipsoid/reconstruct/*/{{name}}/recon_depth.npy"
    assert "gan2shape-synface" not in methods
    for f in ("gan2shape.json", "gan2shape_face2.csv", "gan2shape_car2.csv", "figure_face2.png", "figure_car2.png"):
        assert f"{b['out']}/{f}" in r.stdout
    lint = snakemake("--lint", "--configfile", "config/benchmark_v2.yaml", cwd=repo, check=False)
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr


def test_world_v2_benchmark_on_one_family_draws_only_its_figure(tmp_path):
    """config/subset_car2_remedy.yaml merged over the benchmark: car2 alone, the faithful car recipe and
    the remedy row; face2's figure entry (inherited from the full config) is not drawn, and both rows share
    the smoothed-box pre-fit of each image."""
    repo, _ = bench_v2_repo(tmp_path)
    r = snakemake("synthetic_v2_benchmark", "-n", "-p", "--cores", "16", "--resources", "gpu=14",
                  "--configfile", "config/benchmark_v2.yaml", "config/subset_car2_remedy.yaml", cwd=repo)
    assert planned_rules(r.stdout) == {"bench2_segment": 1, "bench2_invert": 1, "bench2_prior": 2 * 4,
                                       "bench2_pretrain_depth": 2, "bench2_reconstruct": 4, "bench2_evaluate": 1,
                                       "bench2_figure": 1, "bench2_table": 1, "synthetic_v2_benchmark": 1}
    assert "figure_car2.png" in r.stdout and "figure_face2.png" not in r.stdout
    assert r.stdout.count("--depth-lr-step3 1e-5") == 2     # the remedy row's two images


@pytest.mark.parametrize("over,message", [
    ({"runs": {"gan2shape-car-ellipsoid": {"recipe": "cars"}}}, "recipe 'cars' is not in benchmark_v2.recipes"),
    ({"runs": {"gan2shape-synface": {"prior": "ellipsoid"}}}, "starts from joint_pretrain (init: joint); drop prior:"),
    ({"np_sweep": {"run": "gan2shape-none"}}, "np_sweep.run: 'gan2shape-none' is not an enabled run"),
    ({"images": 65}, "lists 64 images"),
])
def test_world_v2_benchmark_config_errors_are_clear(tmp_path, over, message):
    repo, _ = bench_v2_repo(tmp_path, **over)
    r = snakemake("synthetic_v2_benchmark", "-n", "--cores", "1", "--configfile", "config/benchmark_v2.yaml",
                  cwd=repo, check=False)
    assert r.returncode != 0 and message in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]


# --------------------------------------------------------------------------------------------
# the end of `make demo`: progress, report path and numbers, the reference
# --------------------------------------------------------------------------------------------

def _demo_result():
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_result", REPO / "workflow/scripts/demo_result.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_demo_ends_with_dvc_commit_and_the_report_and_numbers():
    r = subprocess.run(["make", "--no-print-directory", "-n", "-o", ".venv/.gan2shape-installed", "demo"], cwd=REPO, capture_output=True, text=True, check=True)
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert "demo_result.py watch -- " in lines[0] and "snakemake all" in lines[0]
    assert "OMP_NUM_THREADS=2" in lines[0]
    assert "dvc commit --force --quiet pipeline" in lines[1]
    assert lines[-1].endswith("demo_result.py show")


def test_show_prints_report_headline_and_reference_comparison(tmp_path, monkeypatch, capsys):
    dr = _demo_result()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results/reference/demo").mkdir(parents=True)
    ref = json.loads((REPO / "results/reference/demo/metrics.json").read_text())
    (tmp_path / "results/reference/demo/metrics.json").write_text(json.dumps(ref))
    cur = json.loads(json.dumps(ref))
    main = ref["main_method"]
    cur["methods"][main]["side_mean"] *= 1.05  # 5 % off
    (tmp_path / "results/metrics.json").write_text(json.dumps(cur))
    (tmp_path / "results/report").mkdir()
    (tmp_path / "results/report/index.html").write_text("<html>")
    assert dr.main(["show"]) == 0
    out = capsys.readouterr().out
    assert f"Report: {tmp_path / 'results/report/index.html'}" in out
    assert "lower is better" in out and "s per image" in out
    assert f"{ref['methods']['constant']['side_mean']:8.3f}" in out
    assert "DIFFERS" in out and f"{main} side_mean" in out
    assert dr.main(["check"]) == 1
    assert dr.main(["check", "--tolerance", "0.06"]) == 0
    (tmp_path / "results/metrics.json").write_text(json.dumps(ref))
    assert dr.main(["check"]) == 0
    assert dr.compare(ref, {"methods": {"other": {"side_mean": 1}}}) == [
        "other: missing from the current results", *[f"{n}: not in the reference" for n in sorted(ref["methods"])]]


def test_watch_adds_an_overall_progress_line(tmp_path, monkeypatch):
    log = tmp_path / "results/synthetic-face/logs/reconstruct/ellipsoid/face_0_00001.log"
    log.parent.mkdir(parents=True)
    child = ("import time, pathlib\n"
             f"p = pathlib.Path({str(log)!r})\n"
             "p.write_text('face_0_00001:  40%|####  | 12/30 [00:50<01:15, 4.2s/it]\\r')\n"
             "print('1 of 4 steps (25%) done', flush=True)\n"
             "time.sleep(1.5)\n"
             "print('2 of 4 steps (50%) done', flush=True)\n")
    r = subprocess.run([sys.executable, str(REPO / "workflow/scripts/demo_result.py"), "watch", "--every", "1", "--",
                        sys.executable, "-c", child], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    progress = [line for line in r.stdout.splitlines() if line.startswith("[progress]")]
    assert progress[0].startswith("[progress] 1/4 jobs (25%), ") and "left at the pace so far" in progress[0]
    assert "reconstruct ellipsoid/face_0_00001 12/30 it" in progress[0]
    assert any(p.startswith("[progress] 2/4 jobs (50%)") for p in progress)
    assert "1 of 4 steps (25%) done" in r.stdout  # Snakemake's own lines pass through


@pytest.mark.slow
def test_same_seed_same_threads_same_numbers(tiny_run):
    """A forced re-run of the reconstruction gives the same metrics bit for bit (tolerance 0 on one
    machine with one thread count; `make check-reference` allows 2 % across machines)."""
    first = (tiny_run / "results" / "metrics.json").read_text()
    snakemake("all", "--cores", "1", "--resources", "gpu=1", "--forcerun", "reconstruct", cwd=tiny_run)
    a, b = json.loads(first), json.loads((tiny_run / "results" / "metrics.json").read_text())
    assert a["methods"] == b["methods"]


def test_a_synthetic_joint_pretrain_is_a_start_next_to_the_priors(tmp_path):
    """A synthetic dataset with a joint pre-train file (config/datasets.yaml `pretrain`, of width
    `pretrain_net_width`): the prior "joint" runs first, from all five nets of that file at that width,
    and its "prior alone" row is the pre-train alone (rule joint_alone, zero iterations)."""
    from gan2shape.method.networks import build_networks

    repo = copy_repo(tmp_path, merge(TINY, {"reconstruct": {"official_pretrain": True}}))
    torch.manual_seed(0)
    nets = build_networks(64, latent_dim=128, width=0.25)     # world v2's GAN: 64 px, style_dim 128
    torch.save({k: n.state_dict() for k, n in nets.items()}, repo / "models/pre_w025.pth")
    datasets = yaml.safe_load((repo / "config/datasets.yaml").read_text())
    datasets["synthetic-face2"].update(pretrain="models/pre_w025.pth", pretrain_net_width=0.25)
    (repo / "config/datasets.yaml").write_text(yaml.safe_dump(datasets, sort_keys=False))
    r = snakemake("all", "-n", "-p", "--cores", "2", "--resources", "gpu=1", cwd=repo)
    jobs = planned_rules(r.stdout)
    assert jobs["joint_alone"] == 1 and jobs["reconstruct"] == 2 and jobs["pretrain_depth"] == 1, jobs
    assert "--stage-iters 0,0,0" in _job_block(r.stdout, "joint_alone")
    assert "--net-width 0.25" in _job_block(r.stdout, "joint_alone")
    # two GPUs: the pre-train alone runs on the GPU of its image's joint run
    r = snakemake("all", "-n", "-p", "--cores", "2", "--resources", "gpu=2", "gpu_0=1", "gpu_1=1",
                  "--config", "device=cuda", "gpus=[0,1]", cwd=repo)
    alone = _job_block(r.stdout, "joint_alone")
    (joint,) = [b.split("\n\n", 1)[0] for b in r.stdout.split("rule reconstruct:")[1:] if "reconstruct/joint/" in b.split("\n\n", 1)[0]]
    assert re.search(r"--device (cuda:\d)", alone).group(1) == re.search(r"--device (cuda:\d)", joint).group(1)
    snakemake("all", "--cores", "2", "--resources", "gpu=1", cwd=repo)
    res = repo / "results"
    m = json.loads((res / "metrics.json").read_text())
    assert set(m["methods"]) == {"constant", "prior-joint", "gan2shape-joint", "prior-smoothed_box",
                                 "gan2shape-smoothed_box"}
    assert m["main_method"] == "gan2shape-joint"
    run = res / "synthetic-face2" / "reconstruct" / "joint"
    (image,) = [p.name for p in run.iterdir()]
    config = json.loads((run / image / "config.json").read_text())
    assert config["method"]["net_width"] == 0.25
    log = json.loads((run / image / "log.json").read_text())
    assert all(e["step"] != 0 for e in log)                # all five nets loaded: no depth pre-fit
    alone = res / "synthetic-face2" / "joint_alone" / image
    assert json.loads((alone / "metrics.json").read_text())["iterations"] == 0
    # the demo's `prior_starts: false`: GAN2Shape from the pre-train only, the prior scored alone
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["presets"]["demo"]["prior_starts"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    r = snakemake("all", "-n", "-p", "--cores", "2", "--resources", "gpu=1", "--forceall", cwd=repo)
    jobs = planned_rules(r.stdout)
    assert jobs["reconstruct"] == 1 and jobs["prior"] == 1 and "pretrain_depth" not in jobs, jobs
    assert "reconstruct/smoothed_box/" not in r.stdout
    ev = _job_block(r.stdout, "evaluate")
    assert "prior-smoothed_box=" in ev and "gan2shape-joint=" in ev and "gan2shape-smoothed_box" not in ev
    assert (res / "synthetic-face2" / "figures" / "joint" / image / "panel.png").stat().st_size > 0
