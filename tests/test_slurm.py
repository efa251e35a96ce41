"""The SLURM profile (workflow/profiles/slurm) and the pinned executor plugin.

The fast tests read the profile and the rules. ``test_one_rule_through_real_slurm`` (slow) starts a
single-node SLURM cluster on localhost (slurmctld + slurmd of Debian's ``slurm-wlm``, no munge, no
accounting, everything under a temporary folder), runs one tiny rule of the workflow through the
profile and stops both daemons. The job's inner ``srun`` reads the default configuration file
(the executor plugin drops ``SLURM_CONF`` from the job's environment), so the test writes
``/etc/slurm/slurm.conf`` for its run and removes it afterwards; where that file already exists (a
real cluster) the test is skipped rather than touching it. Run it with ``pytest -m slow tests/test_slurm.py -s``; it is
skipped, with the reason, where the daemons or the plugin are missing or cannot start. Set
``GAN2SHAPE_SLURM_APT=1`` to let it ``apt-get install slurm-wlm`` first (root, Debian/Ubuntu).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"
RULES = ROOT / "workflow" / "rules"
PLUGIN = "snakemake-executor-plugin-slurm"


def _gpu_rules() -> set[str]:
    """Rules that declare ``resources: gpu=1`` in workflow/rules/*.smk."""
    found = set()
    for smk in RULES.glob("*.smk"):
        for m in re.finditer(r"^\s*rule (\w+):(.*?)(?=^\s*(?:use\s+)?rule \w+|\Z)", smk.read_text(), re.S | re.M):
            if re.search(r"resources:\s*\n\s*gpu=1", m.group(2)):
                found.add(m.group(1))
    # `use rule <gpu rule> as <name>` (the benchmarks) inherits the resources under another name
    for smk in RULES.glob("*.smk"):
        found |= {new for old, new in re.findall(r"^\s*use rule (\w+) as (\w+)", smk.read_text(), re.M)
                  if old in found}
    return found


def _all_rules() -> set[str]:
    return {m.group(1) for smk in RULES.glob("*.smk") for m in re.finditer(r"^\s*rule (\w+):", smk.read_text(), re.M)}


def test_profile_sends_gpu_rules_to_gpu_partition_and_the_rest_to_cpu():
    prof = yaml.safe_load(PROFILE.read_text())
    assert prof["executor"] == "slurm"
    assert prof["slurm-status-command"] in ("squeue", "sacct")
    default = prof["default-resources"]
    per_rule = prof["set-resources"]
    gpu_rules = _gpu_rules()
    assert {"segment", "invert", "reconstruct", "train_gan"} <= gpu_rules
    # every GPU rule is set, to one GPU partition that differs from the CPU default
    assert gpu_rules <= set(per_rule), f"GPU rules without SLURM resources: {gpu_rules - set(per_rule)}"
    gpu_parts = {per_rule[r]["slurm_partition"] for r in gpu_rules}
    assert len(gpu_parts) == 1 and default["slurm_partition"] not in gpu_parts
    # CPU rules are not listed (they take the defaults), and ask for what any node has
    assert set(per_rule) <= gpu_rules, f"CPU rules with GPU settings: {set(per_rule) - gpu_rules}"
    assert default["cpus_per_task"] == 1
    assert per_rule["train_gan"]["runtime"] > per_rule["reconstruct"]["runtime"]
    # the plugin turns `gpu=1` into --gpus=1: no second GPU request through gres / slurm_extra
    for r in gpu_rules:
        assert "gres" not in per_rule[r] and "slurm_extra" not in per_rule[r]
    assert _all_rules() - gpu_rules, "expected CPU-only rules too"


def test_plugin_pinned_in_lock_and_pyproject():
    lock = (ROOT / "envs" / "requirements.lock.txt").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", lock, re.M))
    assert PLUGIN in pins and f"{PLUGIN}-jobstep" in pins
    assert pins["snakemake"] == "9.27.1"
    assert f"{PLUGIN}=={pins[PLUGIN]}" in (ROOT / "pyproject.toml").read_text()


# --------------------------------------------------------------------------------------------
# a real single-node cluster
# --------------------------------------------------------------------------------------------

DAEMONS = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _have_slurm() -> str | None:
    """None when the daemons are there, else why not (after an apt install when allowed)."""
    missing = [b for b in DAEMONS if shutil.which(b) is None]
    if missing and os.environ.get("GAN2SHAPE_SLURM_APT") == "1" and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "slurm-wlm"], capture_output=True, timeout=900)
        missing = [b for b in DAEMONS if shutil.which(b) is None]
    if missing:
        return (f"SLURM not installed ({', '.join(missing)} missing): `apt-get install slurm-wlm`, "
                "or set GAN2SHAPE_SLURM_APT=1 to let the test install it")
    if os.geteuid() != 0:
        return "slurmd must run as root to launch jobs (run this test as root, e.g. in a container)"
    if SYSTEM_CONF.exists():
        return f"{SYSTEM_CONF} exists (a configured cluster): not replacing it with a localhost test cluster"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return f"{PLUGIN} is not installed (pip install -r envs/requirements.lock.txt)"
    return None


def _slurm_conf(tmp: Path, host: str) -> str:
    mem = 8000
    try:
        mem = min(mem, int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) // 1024 - 512)
    except (OSError, AttributeError):
        pass
    cpus = os.cpu_count() or 1
    return "\n".join([
        "ClusterName=gan2shape-test",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/none", "CredType=cred/none",          # no munge daemon needed on localhost
        f"StateSaveLocation={tmp}/state", f"SlurmdSpoolDir={tmp}/spool",
        f"SlurmctldPidFile={tmp}/slurmctld.pid", f"SlurmdPidFile={tmp}/slurmd.pid",
        f"SlurmctldLogFile={tmp}/slurmctld.log", f"SlurmdLogFile={tmp}/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "ReturnToService=2", "MinJobAge=300", "MpiDefault=none",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN",
        f"PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        f"PartitionName=gpu Nodes={host} MaxTime=INFINITE State=UP",
    ]) + "\n"


@pytest.fixture
def slurm_cluster(tmp_path):
    why = _have_slurm()
    if why:
        pytest.skip(why)
    tmp = tmp_path / "slurm"
    (tmp / "state").mkdir(parents=True)
    (tmp / "spool").mkdir()
    host = socket.gethostname().split(".")[0]
    conf = SYSTEM_CONF
    env = dict(os.environ, SLURM_CONF=str(conf))
    procs = []
    try:
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(_slurm_conf(tmp, host))
        procs.append(subprocess.Popen(["slurmctld", "-D", "-i"], env=env, stdout=open(tmp / "ctld.out", "w"),
                                      stderr=subprocess.STDOUT))
        time.sleep(2)
        procs.append(subprocess.Popen(["slurmd", "-D", "-N", host], env=env, stdout=open(tmp / "d.out", "w"),
                                      stderr=subprocess.STDOUT))
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%P %t"], env=env, capture_output=True, text=True).stdout
            if "cpu* idle" in out:
                break
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(1)
        else:
            out = ""
        if "cpu* idle" not in out:
            logs = "".join(f.read_text()[-2000:] for f in tmp.glob("*.out")) + "".join(
                f.read_text()[-2000:] for f in tmp.glob("*.log"))
            pytest.skip(f"single-node SLURM did not come up (sinfo: {out.strip()!r}); daemon output:\n{logs}")
        yield env, tmp
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        conf.unlink(missing_ok=True)


@pytest.mark.slow
def test_one_rule_through_real_slurm(slurm_cluster, tmp_path):
    """`synthesize` (2 images of 16 px) as an sbatch job through workflow/profiles/slurm."""
    env, stmp = slurm_cluster
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copytree(ROOT / "workflow", work / "workflow")
    shutil.copytree(ROOT / "config", work / "config")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["synthetic"].update(test_n=2, size=16, supersample=1)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bindir = str(Path(sys.executable).parent)
    env = dict(env, PATH=bindir + os.pathsep + env.get("PATH", ""),
               PYTHONPATH=os.pathsep.join(p for p in [str(ROOT / "src"), env.get("PYTHONPATH", "")] if p))
    target = "data/synthetic/test/face/list.txt"
    cmd = [sys.executable, "-m", "snakemake", target, "--workflow-profile", str(work / "workflow/profiles/slurm"),
           "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5", "--seconds-between-status-checks", "2"]
    res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    print(out)
    assert res.returncode == 0, out[-4000:]
    m = re.search(r"submitted with SLURM jobid (\d+)", out)
    assert m, out[-4000:]
    lst = (work / target).read_text().split()
    assert len(lst) == 2
    # the job ran under SLURM, in the CPU partition, with one CPU, and completed
    jobs = subprocess.run(["squeue", "-h", "-t", "all", "-j", m.group(1), "-o", "%P %C %T %j"], env=env,
                          capture_output=True, text=True).stdout
    assert re.match(r"cpu 1 COMPLETED ", jobs), jobs
