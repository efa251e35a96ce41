"""Stage CLIs on tiny data: reconstruct (end to end), prior, pretrain-depth, pretrain (joint)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import disc_mask

from gan2shape.cli import build_parser, main


def _common(w):
    return ["--gan", str(w / "gan.pt"), "--view-mvn", str(w / "view_mvn.pth"),
            "--light-mvn", str(w / "light_mvn.pth"), "--perceptual", "discriminator",
            "--image-size", "32", "--num-stages", "1", "--stage-iters", "3,3,3", "--np", "2",
            "--collect-iters", "2", "--prior-iters", "3", "--device", "cpu"]


def test_reconstruct_end_to_end_writes_depth_albedo_view_light(world):
    out = world / "out"
    rc = main(["reconstruct", "--image", str(world / "img0.png"), "--latent", str(world / "img0.pt"),
               "--mask", str(world / "mask0.png"), "--prior-name", "ellipsoid", "--out", str(out),
               "--save-model", *_common(world)])
    assert rc == 0
    depth = np.load(out / "depth.npy")
    assert depth.shape == (32, 32) and 0.9 <= depth.min() <= depth.max() <= 1.1
    assert np.load(out / "albedo.npy").shape == (3, 32, 32)
    view = json.loads((out / "view.json").read_text())
    light = json.loads((out / "light.json").read_text())
    assert len(view["view_raw"]) == 6 and len(view["rotation_rad"]) == 3
    assert len(light["light_raw"]) == 4 and abs(np.linalg.norm(light["direction"]) - 1) < 1e-5
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 3 + 9 and metrics["seconds"] > 0
    for f in ("albedo.png", "recon.png", "depth.png", "normal.png", "log.json", "model.pth", "recon_depth.npy"):
        assert (out / f).exists(), f
    assert not list(out.glob(".*"))  # no temp files left behind
    sd = torch.load(out / "model.pth", weights_only=True)
    assert set(sd) == {"netD", "netA", "netV", "netL", "netEnc"}


def test_reconstruct_with_gt_depth_reports_side_mad(world, caplog):
    gt = np.full((32, 32), 1.1, np.float32)
    gt[disc_mask()[0, 0].bool().numpy()] = 1.0
    np.save(world / "gt.npy", gt)
    out = world / "out2"
    with caplog.at_level("INFO", logger="gan2shape"):
        main(["reconstruct", "--image", str(world / "img0.png"), "--latent", str(world / "img0.pt"),
              "--mask", str(world / "mask0.png"), "--prior-name", "smoothed_box", "--gt-depth", str(world / "gt.npy"),
              "--log-every", "2", "--out", str(out), *_common(world)])
    m = json.loads((out / "metrics.json").read_text())
    for k in ("side", "mad", "final_side", "final_mad"):
        assert np.isfinite(m[k]) and m[k] >= 0, k
    # the job's log follows the run: one line per logged iteration, with SIDE / MAD where step 1 or 3 measured them
    log = json.loads((out / "log.json").read_text())
    logged = [e for e in log if "loss" in e]     # every iteration logged by the phase loop (prior fit too)
    lines = [r.getMessage() for r in caplog.records if " (stage " in r.getMessage()]
    assert len(lines) == len(logged) and lines
    for e, line in zip(logged, lines):
        assert line.startswith(f"iteration {e['iteration']} (stage {e['stage']}, step {e['step']}): loss ")
        if "side" in e:
            assert line.endswith(f" SIDE {100 * e['side']:.3f} MAD {e['mad']:.2f}")
        else:
            assert "SIDE" not in line
    assert any("SIDE" in line for line in lines)


def test_reconstruct_interrupt_and_resume(world):
    out, ck = world / "out3", world / "ck.pth"
    args = ["reconstruct", "--image", str(world / "img0.png"), "--latent", str(world / "img0.pt"),
            "--mask", str(world / "mask0.png"), "--prior-name", "ellipsoid", "--out", str(out),
            "--checkpoint", str(ck), *_common(world)]
    assert main(args + ["--stop-after", "5"]) == 3 and ck.exists() and not out.exists()
    assert main(args) == 0 and (out / "depth.npy").exists() and not ck.exists()  # removed once finished
    assert json.loads((out / "metrics.json").read_text())["iterations"] == 12


def test_bad_inputs_give_clear_errors(world):
    (world / "broken.pt").write_bytes(b"not a checkpoint")
    base = ["reconstruct", "--image", str(world / "img0.png"), "--latent", str(world / "img0.pt"),
            "--prior-name", "ellipsoid", "--mask", str(world / "mask0.png"), "--out", str(world / "o")]
    with pytest.raises(Exception, match="broken.pt"):
        main(base + [*_common(world)][:0] + ["--gan", str(world / "broken.pt"), "--view-mvn",
                                             str(world / "view_mvn.pth"), "--light-mvn", str(world / "light_mvn.pth"),
                                             "--perceptual", "none", "--image-size", "32", "--device", "cpu"])
    (world / "rect.png").write_bytes(b"")
    from PIL import Image
    Image.new("RGB", (40, 32)).save(world / "rect.png")
    args = ["reconstruct", "--image", str(world / "rect.png"), "--latent", str(world / "img0.pt"),
            "--prior-name", "ellipsoid", "--mask", str(world / "mask0.png"), "--out", str(world / "o"), *_common(world)]
    with pytest.raises(ValueError, match="rect.png.*square"):
        main(args)
    torch.save({"mean": torch.zeros(5), "cov": torch.eye(5)}, world / "bad_mvn.pth")
    args = _common(world)
    args[args.index("--view-mvn") + 1] = str(world / "bad_mvn.pth")
    with pytest.raises(Exception, match="bad_mvn.pth"):
        main(["reconstruct", "--image", str(world / "img0.png"), "--latent", str(world / "img0.pt"),
              "--prior-name", "ellipsoid", "--mask", str(world / "mask0.png"), "--out", str(world / "o"), *args])
    assert not (world / "o").exists()


def test_prior_and_pretrain_depth_stages(world):
    prior = world / "prior.npy"
    assert main(["prior", "--name", "smoothed_box", "--mask", str(world / "mask0.png"), "--image-size", "32",
                 "--out", str(prior), "--png", str(world / "prior.png")]) == 0
    p = np.load(prior)
    assert p.shape == (32, 32) and abs(p.min() - 0.91) < 1e-5 and abs(p.max() - 1.02) < 1e-5
    out = world / "pre.pth"
    assert main(["pretrain-depth", "--image", str(world / "img0.png"), "--prior", str(prior),
                 "--image-size", "32", "--iters", "5", "--out", str(out)]) == 0
    sd = torch.load(out, weights_only=True)
    assert "netD" in sd and sd["prior_iters"] == 5 and sd["prior_mse"] > 0


@pytest.mark.gpu
def test_pretrain_depth_on_cuda_matches_the_cpu_fit(world):
    """--device cuda fits the same net (same seed, same start) and writes a file that loads on the CPU."""
    prior = world / "prior.npy"
    assert main(["prior", "--name", "ellipsoid", "--mask", str(world / "mask0.png"), "--image-size", "32",
                 "--out", str(prior)]) == 0
    fits = {}
    for dev in ("cpu", "cuda"):
        out = world / f"pre_{dev}.pth"
        assert main(["pretrain-depth", "--image", str(world / "img0.png"), "--prior", str(prior),
                     "--image-size", "32", "--iters", "20", "--device", dev, "--out", str(out)]) == 0
        fits[dev] = torch.load(out, weights_only=True)   # no map_location: as stored
    assert all(v.device.type == "cpu" for v in fits["cuda"]["netD"].values())
    assert fits["cuda"]["prior_mse"] == pytest.approx(fits["cpu"]["prior_mse"], rel=0.05)


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "gan2shape", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "reconstruct" in r.stdout and "pretrain-depth" in r.stdout


def test_joint_pretrain_stage_writes_a_partial_half_pretrain_file(world):
    """`gan2shape pretrain` (joint, one stream: one image per iteration) writes the chosen nets in float16 in the
    official layout; an instance run loads it and, without netD, still pre-fits depth to its prior."""
    _pretrain_list(world)
    out = world / "pre.pth"
    rc = main(["pretrain", "--list", str(world / "train.txt"), "--nets", "netV,netL,netA,netEnc", "--half",
               "--out", str(out), "--log", str(world / "pre_log.json"), *_common(world), "--collect-iters", "4"])
    assert rc == 0
    sd = torch.load(out, weights_only=True)
    assert {"netV", "netL", "netA", "netEnc"} <= set(sd) and "netD" not in sd
    assert sd["names"] == ["img0", "img1"] and sd["iteration"] == 9
    assert all(t.dtype == torch.float16 for t in sd["netV"].values() if t.is_floating_point())
    assert json.loads((world / "pre_log.json").read_text())
    rec = world / "rec"
    rc = main(["reconstruct", "--image", str(world / "img0.png"), "--latent", str(world / "img0.pt"),
               "--prior", str(world / "prior0.npy"), "--pretrain", str(out), "--out", str(rec), "--save-model",
               *_common(world)])
    assert rc == 0
    assert json.loads((rec / "metrics.json").read_text())["iterations"] == 3 + 9  # prior pre-fit ran
    # bad input: too few collect forwards for the images, a malformed list
    with pytest.raises(SystemExit, match="twice the number of images"):
        main(["pretrain", "--list", str(world / "train.txt"), "--out", str(out), *_common(world)])
    (world / "bad.txt").write_text("img0.png\n")
    with pytest.raises(SystemExit, match="bad.txt:1"):
        main(["pretrain", "--list", str(world / "bad.txt"), "--out", str(out), *_common(world)])


def _pretrain_list(world) -> Path:
    """Two training images (the second a copy of the first) and the first one's prior."""
    import shutil

    from gan2shape.method.priors import make_prior

    shutil.copy(world / "img0.png", world / "img1.png")
    shutil.copy(world / "img0.pt", world / "img1.pt")
    np.save(world / "prior0.npy", make_prior("ellipsoid", mask=disc_mask(), category="synthetic")[0].numpy())
    (world / "train.txt").write_text("img0.png img0.pt prior0.npy\nimg1.png img1.pt\n")
    return world / "train.txt"


def test_joint_pretrain_stops_after_seconds_and_the_same_command_resumes(world, caplog):
    """--stop-after-seconds 0 stops after the first iteration with status 3, a checkpoint and nothing at
    --out; the same command without it finishes with the weights of an uninterrupted run (2 streams)."""
    lst = _pretrain_list(world)
    base = ["pretrain", "--list", str(lst), "--streams", "2", *_common(world), "--collect-iters", "4"]
    assert main(base + ["--out", str(world / "ref.pth")]) == 0
    out, ck = world / "pre.pth", world / "pre.ckpt"
    cmd = base + ["--out", str(out), "--checkpoint", str(ck)]
    part = world / "part.pth"
    with caplog.at_level("WARNING", logger="gan2shape"):
        assert main(cmd + ["--stop-after-seconds", "0", "--partial-out", str(part)]) == 3
    assert "re-run the same command to continue" in caplog.text
    assert ck.exists() and not out.exists() and not list(world.glob(".pre*"))
    assert torch.load(ck, weights_only=True)["iteration"] == 1
    short = torch.load(part, weights_only=True)   # --partial-out: the nets at the stop
    assert short["complete"] is False and short["iteration"] == 1 and set(short) >= {"netD", "netV", "netL"}
    assert main(cmd) == 0 and out.exists() and not ck.exists()
    a, b = torch.load(out, weights_only=True), torch.load(world / "ref.pth", weights_only=True)
    assert a["config"]["joint_streams"] == 2 and a["iteration"] == b["iteration"] == 9 and a["complete"] is True
    assert not all(torch.equal(a["netD"][k], short["netD"][k]) for k in a["netD"])
    assert all(torch.equal(a[n][k], b[n][k]) for n in ("netD", "netA", "netV", "netL", "netEnc") for k in a[n])


@pytest.mark.parametrize("flags,match", [(["--streams", "0"], None), (["--stop-after-seconds", "-1"], None),
                                         (["--checkpoint-every", "0"], None),
                                         (["--stop-after-seconds", "5"], "needs --checkpoint"),
                                         (["--partial-out", "@out"], "is also --out")])
def test_joint_pretrain_flags_are_checked_before_any_work(world, flags, match, capsys):
    flags = [str(world / "p.pth") if f == "@out" else f for f in flags]
    args = ["pretrain", "--list", str(_pretrain_list(world)), "--out", str(world / "p.pth"), *_common(world), *flags]
    with pytest.raises(SystemExit, match=match):
        main(args)
    if match is None:  # rejected by the parser
        assert flags[0] in capsys.readouterr().err
    assert not (world / "p.pth").exists()


def test_sample_gan_feeds_the_joint_pretrain(world, capsys):
    """`gan2shape sample-gan` writes N images, their W latents (G(w) gives the image back) and a list;
    truncation t pulls the same samples towards one mean latent; the joint pre-train reads the list
    with the first sample's prior given by --first-prior (what the Snakemake target runs)."""
    from gan2shape.data import load_image
    from gan2shape.gan.sample import render
    from gan2shape.gan.stylegan2 import load_latent, load_stylegan2

    full, trunc = world / "s1", world / "s07"
    gan = ["--gan", str(world / "gan.pt"), "--n", "3", "--device", "cpu", "--batch-size", "2"]
    assert main(["sample-gan", *gan, "--out", str(full)]) == 0
    assert main(["sample-gan", *gan, "--out", str(trunc), "--truncation", "0.7"]) == 0
    names = ["000000", "000001", "000002"]
    assert (full / "list.txt").read_text().split() == [f"{n}.{e}" for n in names for e in ("png", "pt")]
    assert json.loads((trunc / "sample_gan.json").read_text())["truncation"] == 0.7
    assert not list(world.glob(".s*"))  # no temporaries left
    G = load_stylegan2(world / "gan.pt").generator
    w1 = torch.cat([load_latent(full / f"{n}.pt", G.style_dim) for n in names])
    w07 = torch.cat([load_latent(trunc / f"{n}.pt", G.style_dim) for n in names])
    mean = (w07 - 0.7 * w1) / 0.3        # w07 = mean + 0.7 (w1 - mean): one mean for every sample
    assert torch.allclose(mean, mean[:1].expand_as(mean), atol=1e-4) and not torch.allclose(w1[0], w1[1])
    img, size = load_image(full / "000001.png", 64)
    assert size == G.size and (img - render(G, w1[1:2])).abs().max() <= 1.01 / 255 * 2  # 8-bit rounding
    assert main(["prior", "--name", "ellipsoid", "--mask", str(world / "mask0.png"), "--image-size", "32",
                 "--out", str(world / "prior0.npy")]) == 0
    out = world / "pre.pth"
    assert main(["pretrain", "--list", str(full / "list.txt"), "--first-prior", str(world / "prior0.npy"),
                 "--streams", "2", "--out", str(out), *_common(world), "--collect-iters", "6"]) == 0
    sd = torch.load(out, weights_only=True)
    assert sd["names"] == names and sd["iteration"] == 9 and sd["config"]["joint_streams"] == 2
    with pytest.raises(SystemExit):
        main(["sample-gan", *gan, "--out", str(world / "s2"), "--truncation", "1.5"])
    assert "--truncation: expected a number in (0, 1]" in capsys.readouterr().err


def test_optimiser_flags_reach_the_method_config(world):
    from gan2shape.cli import build_parser
    from gan2shape.stages.common import method_config

    base = ["reconstruct", "--image", "a.png", "--latent", "a.pt", "--out", "o", *_common(world)]
    cfg = method_config(build_parser().parse_args(base))
    assert (cfg.lr, cfg.weight_decay) == (1e-4, 5e-4)  # the original's Adam
    cfg = method_config(build_parser().parse_args(base + ["--lr", "2e-5", "--weight-decay", "0"]))
    assert (cfg.lr, cfg.weight_decay) == (2e-5, 0.0)


def test_cli_defaults_equal_the_params_defaults():
    """One source of defaults: where params.yaml sets a value a stage command also defaults, they agree
    (the method constants through MethodConfig, which the presets start from)."""
    import yaml

    from gan2shape.method.config import MethodConfig

    repo = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    sub = build_parser()._subparsers._group_actions[0].choices

    def default(cmd, dest):
        return next(a.default for a in sub[cmd]._actions if a.dest == dest)

    pairs = {
        ("reconstruct", "perceptual"): default("reconstruct", "perceptual"),
        ("reconstruct", "checkpoint_every"): default("reconstruct", "checkpoint_every"),
        ("reconstruct", "step3_pool"): MethodConfig().step3_pool,
        ("reconstruct", "optimizers"): MethodConfig().optimizers,
        ("reconstruct", "optimizer"): MethodConfig().optimizer,
        ("reconstruct", "raster_bin_size"): MethodConfig().raster_bin_size or "auto",
        ("segment", "confidence"): default("segment-real", "confidence"),
        ("segment", "faithful"): default("segment-real", "faithful"),
        ("invert", "space"): default("invert", "space"),
        ("invert", "perceptual"): default("invert", "perceptual"),
        ("download", "retries"): default("download", "retries"),
        ("download", "timeout"): default("download", "timeout"),
        ("train_gan", "r1"): default("train-gan", "r1"),
        ("train_gan", "pool"): default("train-gan", "pool"),
    }
    differ = {f"{s}.{k}": (params[s][k], v) for (s, k), v in pairs.items() if params[s][k] != v}
    assert not differ, f"params.yaml vs CLI default: {differ}"
    assert params["seed"] == MethodConfig().seed
