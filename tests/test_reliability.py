"""Nothing silently wrong (issue 13): thread pinning, all-or-nothing outputs, parse-time flag checks,
errors that name the file, the params schema, conversion warnings, the umask, one-line user errors."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import disc_mask
from gan2shape.cli import build_parser, main
from gan2shape.data import save_png
from gan2shape.io import CheckpointError

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def _reconstruct(w: Path, out: Path, *extra: str) -> list[str]:
    return ["reconstruct", "--image", str(w / "img0.png"), "--latent", str(w / "img0.pt"),
            "--mask", str(w / "mask0.png"), "--prior-name", "ellipsoid", "--out", str(out),
            "--gan", str(w / "gan.pt"), "--view-mvn", str(w / "view_mvn.pth"),
            "--light-mvn", str(w / "light_mvn.pth"), "--image-size", "32", "--num-stages", "1",
            "--stage-iters", "2,2,2", "--np", "2", "--collect-iters", "2", "--prior-iters", "2",
            "--device", "cpu", *extra]


def _env(**over) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("GAN2SHAPE_THREADS", None)
    env.update(over)
    return env


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a stage gets as far as building the model."""
    import gan2shape.stages.common as common
    import gan2shape.stages.reconstruct as rec

    def boom(*a, **k):
        raise AssertionError("the model was built before the error was found")

    monkeypatch.setattr(common, "build_model", boom)
    monkeypatch.setattr(rec, "build_model", boom)


# -- 3: the thread count ------------------------------------------------------------------------
def test_main_pins_the_thread_count_whatever_omp_says(tmp_path):
    """The console script sets torch's threads from --threads / $GAN2SHAPE_THREADS (default 1),
    not from OMP_NUM_THREADS."""
    save_png(disc_mask(8)[0], tmp_path / "m.png", (0.0, 1.0))
    code = ("import torch, sys; from gan2shape.cli import main; main(sys.argv[2:] + ['prior', '--name', "
            "'ellipsoid', '--mask', sys.argv[1] + '/m.png', '--image-size', '8', '--out', sys.argv[1] + '/p.npy']); "
            "print(torch.get_num_threads())")

    def threads(*argv, **env):
        return subprocess.run([sys.executable, "-c", code, str(tmp_path), *argv], env=_env(**env),
                              capture_output=True, text=True, check=True).stdout.split()[-1]

    assert threads(OMP_NUM_THREADS="2") == "1"
    assert threads(OMP_NUM_THREADS="1", GAN2SHAPE_THREADS="2") == "2"
    assert threads("--threads", "2", OMP_NUM_THREADS="1") == "2"


@pytest.mark.slow
def test_reconstruct_is_identical_with_one_or_two_omp_threads(world):
    """The same tiny reconstruct, run as Snakemake runs it (OMP_NUM_THREADS=1) and by hand (2)."""
    outs = []
    for n in ("1", "2"):
        out = world / f"out{n}"
        subprocess.run([sys.executable, "-m", "gan2shape", *_reconstruct(world, out, "--perceptual", "discriminator")],
                       env=_env(OMP_NUM_THREADS=n), check=True, capture_output=True)
        outs.append(out)
    for f in ("depth.npy", "albedo.npy", "recon_depth.npy"):
        assert np.array_equal(np.load(outs[0] / f), np.load(outs[1] / f)), f
    assert json.loads((outs[0] / "view.json").read_text()) == json.loads((outs[1] / "view.json").read_text())


# -- 4: nothing half-written after a failure or a kill -------------------------------------------
def test_write_result_is_all_or_nothing(tmp_path, monkeypatch):
    """An error after some of an image's files were written leaves neither the folder nor temps."""
    import gan2shape.data as data
    from gan2shape.stages.common import write_result

    class R:  # the fields write_result reads, for one 8-px image
        depth = recon_depth = torch.ones(1, 8, 8)
        albedo = recon = torch.zeros(1, 3, 8, 8)
        normals = torch.zeros(1, 8, 8, 3)
        view, light = torch.zeros(1, 6), torch.zeros(1, 4)
        names, seconds, iterations, metrics, log = ["a"], 1.0, 3, [{}], []

    calls = []
    real = data.save_png

    def failing_png(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(data, "save_png", failing_png)
    out = tmp_path / "res" / "a"
    with pytest.raises(OSError, match="No space left"):
        write_result(R(), 0, out)
    assert not out.exists() and list((tmp_path / "res").iterdir()) == []
    monkeypatch.setattr(data, "save_png", real)
    write_result(R(), 0, out)
    assert {p.name for p in out.iterdir()} >= {"depth.npy", "albedo.png", "metrics.json", "log.json"}
    assert [p.name for p in (tmp_path / "res").iterdir()] == ["a"]


def test_a_killed_writer_leaves_no_output_and_its_temps_are_swept(tmp_path):
    """kill -9 in the middle of writing a result folder and a file: nothing at the output paths;
    the next write (or the stage's output check) sweeps the hidden temporaries."""
    from gan2shape.stages.common import check_output_dir
    from gan2shape.io import atomic_dir, atomic_write_text

    code = ("import sys, time, pathlib; from gan2shape.io import atomic_dir, atomic_path\n"
            "d = pathlib.Path(sys.argv[1])\n"
            "with atomic_dir(d / 'out') as t, atomic_path(d / 'ck.pth') as c:\n"
            "    (t / 'depth.npy').write_bytes(b'x'); c.write_bytes(b'y' * 1000)\n"
            "    print('ready', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=_env(), stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGKILL)
    p.wait()
    left = sorted(q.name for q in tmp_path.iterdir())
    assert not (tmp_path / "out").exists() and not (tmp_path / "ck.pth").exists()
    assert len(left) == 2 and all(n.startswith((".out.", ".ck.pth.")) for n in left)
    (tmp_path / ".other.abcdefgh.npy").write_bytes(b"")  # another output's temp: kept
    check_output_dir(tmp_path / "out", "--out")
    with atomic_dir(tmp_path / "out") as t:
        (t / "f").write_text("done")
    atomic_write_text("z", tmp_path / "ck.pth")
    assert sorted(q.name for q in tmp_path.iterdir()) == [".other.abcdefgh.npy", "ck.pth", "out"]


# -- 6: numeric flags are checked when the command line is parsed --------------------------------
@pytest.mark.parametrize("argv,flag", [
    (["--np", "0"], "--np"),                          # positive integers
    (["--checkpoint-every", "0"], "--checkpoint-every"),
    (["--image-size", "-32"], "--image-size"),
    (["--num-stages", "0"], "--num-stages"),
    (["--prior-iters", "-1"], "--prior-iters"),       # non-negative integers
    (["--stop-after", "-5"], "--stop-after"),
    (["--seed", "x"], "--seed"),
    (["--stage-iters", "1,2"], "--stage-iters"),      # N1,N2,N3
    (["--stage-iters", "1,-2,3"], "--stage-iters"),
    (["--lr", "0"], "--lr"),                          # numbers
    (["--lr", "nan"], "--lr"),
    (["--weight-decay", "-1e-4"], "--weight-decay"),
    (["--view-scale", "inf"], "--view-scale"),
])
def test_reconstruct_numeric_flags_are_checked_at_parse_time(argv, flag, capsys):
    base = ["reconstruct", "--image", "a.png", "--latent", "a.pt", "--out", "o", "--gan", "g.pt",
            "--view-mvn", "v.pth", "--light-mvn", "l.pth"]
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(base + argv)
    assert e.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


@pytest.mark.parametrize("argv,flag", [
    (["--threads", "0", "prior", "--name", "ellipsoid", "--image-size", "8", "--out", "p.npy"], "--threads"),
    (["prior", "--name", "ellipsoid", "--image-size", "0", "--out", "p.npy"], "--image-size"),
    (["pretrain-depth", "--image", "a", "--prior", "b", "--image-size", "8", "--iters", "-1", "--out", "o"], "--iters"),
    (["invert", "--gan", "g", "--images", "a", "--out-dir", "o", "--steps", "-3"], "--steps"),
    (["invert", "--gan", "g", "--images", "a", "--out-dir", "o", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "--list", "l", "--gt", "g", "--method", "c=constant", "--image-size", "0", "--out-json", "o"],
     "--image-size"),
])
def test_other_stages_numeric_flags_are_checked_at_parse_time(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


# -- 7: errors name the file --------------------------------------------------------------------
def test_wplus_latent_with_the_wrong_layer_count_names_the_file(world):
    from gan2shape.gan.stylegan2 import load_latent

    torch.save(torch.zeros(1, 5, 32), world / "wplus.pt")
    with pytest.raises(CheckpointError, match=r"wplus.pt: W\+ latent has 5 layers, the GAN needs 10"):
        load_latent(world / "wplus.pt", 32, n_latent=10)
    assert load_latent(world / "wplus.pt", 32).shape == (1, 5, 32)  # without n_latent: any count


def test_wplus_latent_mismatch_through_reconstruct(world):
    torch.save(torch.zeros(1, 5, 32), world / "wplus.pt")
    argv = _reconstruct(world, world / "o")
    argv[argv.index("--latent") + 1] = str(world / "wplus.pt")
    with pytest.raises(CheckpointError, match="wplus.pt"):
        main(argv)
    assert not (world / "o").exists()


def test_gan_of_another_architecture_names_the_gan_file(world):
    with pytest.raises(SystemExit, match=r"--gan .*gan.pt: its mapping network has 4 layers, fewer than F1_d = 8"):
        main(_reconstruct(world, world / "o", "--f1-d", "8"))


def test_mvn_not_positive_definite_names_the_file(tmp_path):
    from gan2shape.method.sampling import load_mvn

    cov = torch.eye(4)
    cov[0, 0] = -1.0
    torch.save({"mean": torch.zeros(4), "cov": cov}, tmp_path / "light.pth")
    with pytest.raises(CheckpointError, match="light.pth: covariance is not positive semi-definite"):
        load_mvn(tmp_path / "light.pth", 4)
    torch.save({"mean": torch.zeros(4), "cov": torch.eye(4) + torch.triu(torch.ones(4, 4), 1)}, tmp_path / "asym.pth")
    with pytest.raises(CheckpointError, match="asym.pth: covariance is not symmetric"):
        load_mvn(tmp_path / "asym.pth", 4)


def test_corrupt_checkpoint_gives_our_message_not_torchs(tmp_path):
    from gan2shape.io import safe_torch_load

    (tmp_path / "one.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError) as e:
        safe_torch_load(tmp_path / "one.pt")
    msg = str(e.value)
    assert "one.pt: not a PyTorch checkpoint, or truncated/corrupt (1 bytes)" in msg
    assert "weights_only" not in msg and "\n" not in msg
    torch.save({"a": torch.zeros(3)}, tmp_path / "ok.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cut.pt: not a PyTorch checkpoint, or truncated"):
        safe_torch_load(tmp_path / "cut.pt")


def test_malicious_pickle_is_refused_naming_the_global(tmp_path):
    from gan2shape.io import safe_torch_load

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil.pt: refused to load: it pickles .*system") as e:
        safe_torch_load(tmp_path / "evil.pt")
    assert "weights_only=False" not in str(e.value) and not (tmp_path / "pwned").exists()


def test_a_failed_write_names_the_output_not_the_temp(tmp_path, monkeypatch):
    from gan2shape.data import save_npy
    from gan2shape.io import atomic_torch_save

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(OSError, match=r"No space left on device: '.*/depth.npy'") as e:
        save_npy(torch.zeros(2), tmp_path / "depth.npy")
    assert e.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []

    def torch_full(*a, **k):  # torch reports a failed write as a RuntimeError
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0: file write failed")

    monkeypatch.setattr(torch, "save", torch_full)
    with pytest.raises(OSError, match=r"ck.pth: cannot write"):
        atomic_torch_save({}, tmp_path / "ck.pth")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make,target,needle", [
    (lambda w: (w / "o").write_text("a file"), "o", "--out .*/o: exists and is a file"),
    (lambda w: (w / "f").write_text("a file"), "f/o", "--out .*/f/o: .*/f is a file, not a folder"),
    (lambda w: (w / "ro").mkdir(mode=0o500), "ro/o", "--out .*/ro/o: folder .*/ro is not writable"),
])
def test_bad_out_is_found_before_any_model_is_built(world, no_model, make, target, needle):
    if target == "ro/o" and os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    make(world)
    with pytest.raises(SystemExit, match=needle):
        main(_reconstruct(world, world / target))


def test_checkpoint_that_is_a_folder_is_found_before_any_model_is_built(world, no_model):
    (world / "ck").mkdir()
    with pytest.raises(SystemExit, match="--checkpoint .*ck: is a folder"):
        main(_reconstruct(world, world / "o", "--checkpoint", str(world / "ck")))


# -- 8: the params schema ------------------------------------------------------------------------
def _schema_errors(params: dict) -> list[str]:
    import jsonschema

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "params.schema.yaml").read_text())
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(params)]


def test_params_schema_accepts_params_yaml_and_refuses_unknown_keys_in_every_section():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert _schema_errors(params) == []
    assert _schema_errors({**params, "np_": 4})
    for section, value in params.items():
        if isinstance(value, dict):
            bad = json.loads(json.dumps(params))
            bad[section]["no_such_key"] = 1
            assert _schema_errors(bad), section
    bad = json.loads(json.dumps(params))
    bad["presets"]["demo"]["imgs"] = 3
    assert _schema_errors(bad)


@pytest.mark.parametrize("section,key,value", [
    ("train_gan", "steps", "many"), ("train_gan", "r1", -1), ("train_gan", "pool", 1.5),
    ("train_gan", "max_seconds", "1h"), ("train_gan", "out_dir", 3), ("figures", "frames", "24"),
    ("figures", "frames", 0), ("reconstruct", "vgg", None), ("reconstruct", "checkpoint_every", 0),
])
def test_params_schema_refuses_wrongly_typed_values(section, key, value):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params[section][key] = value
    assert _schema_errors(params)


# -- 9: converted inputs are reported ------------------------------------------------------------
def test_converted_inputs_log_a_warning_naming_the_file(tmp_path, caplog):
    from PIL import Image

    from gan2shape.data import load_image

    Image.new("L", (32, 32), 128).save(tmp_path / "gray.png")
    rgba = Image.new("RGBA", (32, 32), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.save(tmp_path / "alpha.png")
    Image.new("RGBA", (32, 32), (10, 20, 30, 255)).save(tmp_path / "opaque.png")
    Image.new("RGB", (48, 48)).save(tmp_path / "big.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "fine.png")
    with caplog.at_level("WARNING", logger="gan2shape"):
        for n in ("gray", "alpha", "opaque", "big", "fine"):
            load_image(tmp_path / f"{n}.png", 32)
    text = caplog.text
    assert "gray.png: grayscale image converted to RGB" in text
    assert "alpha.png: alpha channel dropped" in text
    assert "big.png: resized from 48 px to 32 px" in text
    assert "opaque.png" not in text and "fine.png" not in text


# -- 10: outputs respect the umask ---------------------------------------------------------------
@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                      (0o002, 0o664, 0o775)])
def test_outputs_respect_the_umask(tmp_path, umask, file_mode, dir_mode):
    from gan2shape.data import save_json, save_npy
    from gan2shape.io import atomic_dir, atomic_torch_save

    old = os.umask(umask)
    try:
        save_npy(torch.zeros(2), tmp_path / "a.npy")
        save_json({}, tmp_path / "a.json")
        atomic_torch_save({}, tmp_path / "a.pth")
        with atomic_dir(tmp_path / "d") as t:
            save_json({}, t / "m.json")
    finally:
        os.umask(old)
    for f in ("a.npy", "a.json", "a.pth", "d/m.json"):
        assert (tmp_path / f).stat().st_mode & 0o777 == file_mode, f
    assert (tmp_path / "d").stat().st_mode & 0o777 == dir_mode


# -- 11: a user error is one line, exit status 2; checks come before the model -----------------------
def test_reconstruct_defaults_match_params_yaml():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    a = build_parser().parse_args(["reconstruct", "--image", "a", "--latent", "b", "--out", "o", "--gan", "g",
                                   "--view-mvn", "v", "--light-mvn", "l"])
    assert a.perceptual == params["reconstruct"]["perceptual"] == "discriminator"
    assert a.checkpoint_every == params["reconstruct"]["checkpoint_every"]


@pytest.mark.parametrize("drop,add,needle", [
    (["--prior-name"], [], "needs a prior: give --prior FILE or --prior-name"),
    ([], ["--perceptual", "lpips_vgg"], "--perceptual lpips_vgg needs --vgg"),
    ([], ["--perceptual", "lpips_vgg", "--vgg", "nope.pth"], "--vgg nope.pth: file not found"),
    (["--mask"], [], "--prior-name ellipsoid needs --mask"),
    ([], ["--projection", "oracle"], "--projection oracle needs --scene"),
])
def test_console_user_errors_are_one_line_before_the_model(world, no_model, monkeypatch, capsys, drop, add, needle):
    argv = _reconstruct(world, world / "o", *add)
    for flag in drop:
        i = argv.index(flag)
        del argv[i:i + 2]
    monkeypatch.setattr(sys, "argv", ["gan2shape", *argv])
    assert main() == 2
    err = capsys.readouterr().err
    assert err.startswith("gan2shape reconstruct: error: ") and needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script_reports_a_corrupt_gan_in_one_line(world):
    (world / "gan.pt").write_bytes(b"\0")
    r = subprocess.run([sys.executable, "-m", "gan2shape", *_reconstruct(world, world / "o")], env=_env(),
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if " INFO " not in ln]
    assert lines == [f"gan2shape reconstruct: error: {world / 'gan.pt'}: not a PyTorch checkpoint, or "
                     f"truncated/corrupt (1 bytes)"], r.stderr
    assert not (world / "o").exists()
