"""Batched trainer: K images' independent models in one batch equal K sequential Trainer.fit runs.

The comparisons run in float64: in float32 the two runs differ by rounding (grouped vs single
convolutions, batched reductions), and Adam's first step after every optimiser re-creation
(update ≈ lr·g/(|g|+eps)) amplifies rounding in near-zero gradients, so weights drift apart by
~lr. In float64 the same runs agree to ~1e-10, which is what proves the mathematics equal.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import tiny_config, tiny_model, tiny_target
from gan2shape.method.stacked import StackedNet, stack_targets
from gan2shape.method.networks import build_networks
from gan2shape.method.config import NET_NAMES, Stage
from gan2shape.method.trainer import Trainer

# flips in steps 1 and 3, relative encoding, object masks, a pool that reshuffles, ground truth
CFG = dict(schedule=[Stage(2, 1, 2, flip1=True, flip3=True)], prior_iters=1, collect_iters=2,
           relative_enc=True)


def _f64(target):
    """The target in float64, with its prior as ground-truth depth (for the metrics)."""
    return replace(target, image=target.image.double(), latent=target.latent.double(), mask=target.mask.double(),
                   prior=target.prior.double(), gt_depth=target.prior.double().clone())


def _world(seeds, **over):
    """A float64 tiny model and targets (GAN samples) with the given seeds."""
    model = tiny_model(tiny_config(**{**CFG, **over}))
    targets = [tiny_target(model, f"im{s}", s) for s in seeds]
    return model.to(torch.float64), [_f64(t) for t in targets]


def _sequential(seed, **over):
    model, (t,) = _world([seed], **over)
    res = Trainer(model, log_every=1).fit(t)
    return model.nets_state(), res


def _close(a, b, rel=1e-7):
    """Max difference, relative to the tensor's scale, below ``rel``."""
    return float((a - b).abs().max()) <= rel * max(float(a.abs().max()), 1e-3)


def _assert_same_run(state, res, bstate, bres, rel=1e-7):
    bad = [f"{n}.{k}" for n in NET_NAMES for k in state[n] if not _close(state[n][k], bstate[n][k], rel)]
    assert not bad, f"weights differ: {bad[:5]}"
    for key in ("depth", "recon_depth", "albedo", "view", "light"):
        assert _close(getattr(res, key), getattr(bres, key), rel), key
    assert [e["step"] for e in res.log] == [e["step"] for e in bres.log]
    for e, be in zip(res.log, bres.log):
        assert set(e) == set(be) and all(abs(e[k] - be[k]) <= rel * max(abs(e[k]), 1e-3) for k in e), (e, be)
    assert set(res.metrics[0]) == set(bres.metrics[0]) and "final_side" in res.metrics[0]
    assert all(abs(res.metrics[0][k] - bres.metrics[0][k]) <= 1e-6 for k in res.metrics[0])
    assert bres.iterations == res.iterations


def test_batched_equals_sequential_runs():
    """Images A and B in one batch: each image's final nets, predictions, loss log and metrics
    equal those of Trainer.fit on that image alone (so neither result depends on the other image)."""
    runs = {s: _sequential(s) for s in (0, 1)}
    model, targets = _world([0, 1])
    res = Trainer(model, log_every=1).fit(targets, independent=True)
    assert res.names == ["im0", "im1"] and res.depth.shape == (2, 32, 32)
    for i, s in enumerate((0, 1)):
        state, ref = runs[s]
        _assert_same_run(state, ref, res.states[i], res.image(i))
    # the two images did train differently
    assert not _close(res.depth[0], res.depth[1], 1e-3)


def test_identical_images_give_identical_results_with_persistent_optimizers():
    """Image B and its twin, under the replication's policies (one Adam per step kept across
    stages, step 3 on the last step-2 batch): both equal B trained alone, and each other."""
    over = dict(optimizers="persistent", step3_pool="last_batch", relative_enc=False, prior_iters=1,
                schedule=[Stage(1, 1, 1, flip3=True), Stage(1, 1, 1)])
    state, ref = _sequential(1, **over)
    model, targets = _world([1, 1], **over)
    res = Trainer(model, log_every=1).fit([targets[0], replace(targets[1], name="twin")], independent=True)
    for i in range(2):
        _assert_same_run(state, ref, res.states[i], res.image(i))
    assert all(_close(res.states[0][n][k], res.states[1][n][k], 1e-9) for n in NET_NAMES for k in res.states[0][n])


def test_stacked_net_applies_each_image_its_own_weights():
    torch.manual_seed(0)
    nets = [build_networks(32, latent_dim=16)["netA"] for _ in range(3)]
    stacked = StackedNet(nets[0], 3)
    for i, net in enumerate(nets):  # load a different copy into each slot
        for p, q in zip(stacked.stacked, net.parameters()):
            p.data[i] = q.data
    x = torch.randn(6, 3, 32, 32)
    y = stacked(x)
    for i, net in enumerate(nets):
        assert torch.allclose(y[2 * i:2 * i + 2], net(x[2 * i:2 * i + 2]), atol=1e-5)
        assert all(torch.equal(stacked.image_state(i)[k], v) for k, v in net.state_dict().items())
    # a loss on image 1 only reaches image 1's parameters
    stacked(x)[2:4].sum().backward()
    g = stacked.stacked[0].grad
    assert g[1].abs().sum() > 0 and g[0].abs().sum() == 0 and g[2].abs().sum() == 0
    with pytest.raises(ValueError, match="does not split"):
        stacked(x[:5])


def test_stack_targets_needs_all_or_none():
    model = tiny_model()
    a, b = tiny_target(model, "a", 0), tiny_target(model, "b", 1)
    t = stack_targets([a, b])
    assert t.image.shape == (2, 3, 32, 32) and t.latent.shape[0] == 2 and t.prior.shape == (2, 32, 32)
    with pytest.raises(ValueError, match="mask.*b"):
        stack_targets([a, replace(b, mask=None)])


# -- CLI --------------------------------------------------------------------------------------------

def test_cli_independent_writes_each_images_outputs(tmp_path):
    from gan2shape.cli import main
    from gan2shape.data import save_png
    from gan2shape.gan.stylegan2 import save_latent, save_stylegan2

    from conftest import disc_mask, tiny_gan, viewlight

    g, d = tiny_gan()
    save_stylegan2(tmp_path / "gan.pt", g, d)
    viewlight().save(tmp_path / "view_mvn.pth", tmp_path / "light_mvn.pth")
    save_png(disc_mask()[0], tmp_path / "mask.png", (0.0, 1.0))
    for i in range(2):
        z = torch.randn(1, g.style_dim, generator=torch.Generator().manual_seed(10 + i))
        with torch.no_grad():
            w = g.style(z)
            img, _ = g(w, input_is_w=True)
        save_png(img[0].clamp(-1, 1), tmp_path / f"img{i}.png")
        save_latent(tmp_path / f"img{i}.pt", w[0])
    out = tmp_path / "out"
    args = ["reconstruct", "--image", str(tmp_path / "img0.png"), str(tmp_path / "img1.png"),
            "--latent", str(tmp_path / "img0.pt"), str(tmp_path / "img1.pt"),
            "--mask", str(tmp_path / "mask.png"), str(tmp_path / "mask.png"), "--prior-name", "ellipsoid",
            "--out", str(out), "--independent", "--save-model", "--log-every", "1",
            "--gan", str(tmp_path / "gan.pt"), "--view-mvn", str(tmp_path / "view_mvn.pth"),
            "--light-mvn", str(tmp_path / "light_mvn.pth"), "--perceptual", "discriminator",
            "--image-size", "32", "--num-stages", "1", "--stage-iters", "2,2,2", "--np", "2",
            "--collect-iters", "2", "--prior-iters", "2", "--device", "cpu"]
    assert main(args) == 0
    depths = []
    for name in ("img0", "img1"):
        d = out / name
        for f in ("depth.npy", "recon_depth.npy", "albedo.npy", "albedo.png", "recon.png", "depth.png",
                  "normal.png", "view.json", "light.json", "metrics.json", "log.json", "model.pth", "config.json"):
            assert (d / f).exists(), (name, f)
        depths.append(np.load(d / "depth.npy"))
        assert depths[-1].shape == (32, 32) and 0.9 <= depths[-1].min() <= depths[-1].max() <= 1.1
        m = json.loads((d / "metrics.json").read_text())
        assert m["name"] == name and m["iterations"] == 2 + 6
        log = json.loads((d / "log.json").read_text())
        assert [e["step"] for e in log] == [0] * 2 + [1] * 2 + [2] * 2 + [3] * 2 and "image" not in log[0]
        sd = torch.load(d / "model.pth", weights_only=True)
        assert set(sd) == set(NET_NAMES) and sd["netD"]["network.0.weight"].dim() == 4  # one image's nets
        assert len(json.loads((d / "view.json").read_text())["view_raw"]) == 6
        cfg = json.loads((d / "config.json").read_text())  # the resolved configuration of the run
        assert cfg["command"] == "reconstruct" and cfg["flags"]["independent"] is True
        assert cfg["method"]["n_p"] == 2 and cfg["method"]["schedule"][0] == {
            "n1": 2, "n2": 2, "n3": 2, "flip1": False, "flip3": False, "rounds": 1}
    assert not np.allclose(depths[0], depths[1])
    # the same loop checkpoints independent models: interrupted after 5 iterations, resumed, equal
    out2, ck = tmp_path / "out2", tmp_path / "ck.pth"
    args2 = [a if a != str(out) else str(out2) for a in args] + ["--checkpoint", str(ck)]
    assert main(args2 + ["--stop-after", "5"]) == 3 and ck.exists() and not out2.exists()
    assert main(args2) == 0 and not ck.exists()
    for name, depth in zip(("img0", "img1"), depths):
        assert np.array_equal(np.load(out2 / name / "depth.npy"), depth)
