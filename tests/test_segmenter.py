"""Tests for gan2shape.masks.segmenter: the render-trained stand-in for BiSeNet/PSPNet (EXTENSIONS §1.1)."""

from __future__ import annotations

import argparse
import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gan2shape.data import save_png
from gan2shape.io import CheckpointError, torch_bytes
from gan2shape.method.priors import make_prior
from gan2shape.masks.segmenter import (SegNet, add_cli, load_segmenter, load_training_data, save_segmenter, segment,
                                 train_segmenter)

S = 32


def toy_dataset(n: int = 200, size: int = S, seed: int = 0, up: int = 4):
    """Random-coloured discs / ellipses / rectangles (cycled) on grey or grey+noise backgrounds;
    the mask is the exact coverage of a 4× supersampled hard shape (soft at the outline)."""
    g = torch.Generator().manual_seed(seed)
    big = size * up
    c = (torch.arange(big, dtype=torch.float32) + 0.5) / big
    yy, xx = c.view(1, big, 1), c.view(1, 1, big)

    def u(a, b):
        return a + (b - a) * torch.rand(n, 1, 1, generator=g)

    kind = (torch.arange(n) % 3).view(n, 1, 1)
    cy, cx = u(0.3, 0.7), u(0.3, 0.7)
    a, b, th = u(0.12, 0.3), u(0.1, 0.25), u(0, math.pi)
    dx, dy = xx - cx, yy - cy
    p = dx * th.cos() + dy * th.sin()
    q = -dx * th.sin() + dy * th.cos()
    disc = dx ** 2 + dy ** 2 <= a ** 2
    ell = (p / a) ** 2 + (q / b) ** 2 <= 1
    rect = (p.abs() <= a) & (q.abs() <= b)
    hard = torch.where(kind == 0, disc, torch.where(kind == 1, ell, rect))
    m = F.avg_pool2d(hard.float()[:, None], up)
    grey = u(-0.6, 0.6)[:, None]
    noisy = (torch.arange(n) % 2).view(n, 1, 1, 1).float()
    bg = grey + noisy * 0.25 * torch.randn(n, 3, size, size, generator=g)
    col = torch.rand(n, 3, 1, 1, generator=g) * 2 - 1
    # keep the object colour at least 0.5 away from the background grey in some channel
    far = (col - grey).abs().amax(1, keepdim=True) >= 0.5
    col = torch.where(far, col, (grey + 0.7 * torch.sign(col - grey + 1e-6)).clamp(-1, 1))
    shade = 0.1 * torch.randn(n, 1, size, size, generator=g)
    return (m * (col + shade) + (1 - m) * bg).clamp(-1, 1), m


def iou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Pooled object IoU over a set: Σ|pred ∩ gt| / Σ|pred ∪ gt| with gt = coverage >= 0.5."""
    p, t = pred >= 0.5, gt >= 0.5
    return float((p & t).sum()) / float((p | t).sum())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a busy 2-core machine two OpenMP threads are ~8× slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained():
    x, m = toy_dataset(200, seed=0)
    net, hist = train_segmenter(x, m, epochs=6, batch_size=16, lr=3e-3, seed=0, log=lambda s: None)
    return net, hist


@pytest.fixture(scope="module")
def test_set():
    return toy_dataset(40, seed=1)


# --------------------------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [32, 30, 33])
def test_segnet_shapes_and_size(size):
    net = SegNet()
    assert net(torch.zeros(2, 3, size, size)).shape == (2, 2, size, size)
    assert SegNet(n_classes=5, width=8, depth=1)(torch.zeros(1, 3, size, size)).shape == (1, 5, size, size)
    assert sum(p.numel() for p in net.parameters()) == 118610  # 16-32-64 U-Net, ~0.45 MiB in float32
    with pytest.raises(ValueError):
        SegNet(n_classes=1)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------

def test_training_reaches_iou_and_loss_decreases(trained, test_set):
    net, hist = trained
    assert hist["n_train"] == 180 and hist["n_val"] == 20
    assert len(hist["train_loss"]) == len(hist["val_iou"]) == 6
    assert hist["train_loss"][-1] < 0.5 * hist["train_loss"][0]
    assert hist["val_loss"][-1] < hist["val_loss"][0]
    # pooled IoU of the object class on the 20 held-out images (measured 0.875)
    assert hist["val_iou"][-1] > 0.8 and hist["val_miou"][-1] > 0.8
    # ... and on 40 fresh images from another seed, through segment()
    x, m = test_set
    mask, _ = segment(net, x)
    assert iou(mask, m) > 0.8


def test_training_is_seeded_and_leaves_global_rng_alone():
    x, m = toy_dataset(24, seed=3)
    state = torch.random.get_rng_state()
    a, ha = train_segmenter(x, m, epochs=1, batch_size=8, seed=5, log=lambda s: None)
    assert torch.equal(torch.random.get_rng_state(), state)
    b, hb = train_segmenter(x, m, epochs=1, batch_size=8, seed=5, log=lambda s: None)
    assert ha["train_loss"] == hb["train_loss"]
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    # no validation set: None entries; uint8 images accepted
    _, h0 = train_segmenter(((x + 1) * 127.5).round().byte(), m, epochs=1, batch_size=8, val_fraction=0.0,
                            log=lambda s: None)
    assert h0["n_val"] == 0 and h0["val_iou"] == [None]


def test_training_rejects_bad_inputs():
    x, m = toy_dataset(4, seed=0)
    with pytest.raises(ValueError, match="masks"):
        train_segmenter(x, m[:3], epochs=1)
    with pytest.raises(ValueError, match="masks"):
        train_segmenter(x, m * 2, epochs=1)
    with pytest.raises(ValueError, match="images"):
        train_segmenter(x * 3, m, epochs=1)
    with pytest.raises(ValueError, match="images"):
        train_segmenter(x[:, :1], m, epochs=1)


# --------------------------------------------------------------------------------------------
# segment: mask and confidence pipelines
# --------------------------------------------------------------------------------------------

def test_segment_mask_and_confidence(trained, test_set):
    net, _ = trained
    x = test_set[0][:6]
    mask, conf = segment(net, x)
    assert mask.shape == conf.shape == (6, 1, S, S)
    assert mask.dtype == conf.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}  # hard at network resolution
    assert 0 <= conf.min() and conf.max() <= 1
    # the softmax confidence is the object probability, so argmax == (p > 0.5)
    assert torch.equal(mask, (conf > 0.5).float())

    soft, conf_p = segment(net, x, parser_size=64)
    assert soft.shape == (6, 1, S, S) and 0 <= soft.min() and soft.max() <= 1
    between = (soft > 0) & (soft < 1)
    assert between.sum() > 0  # soft at the borders (area shrink of a 64-px binary mask)
    assert set(torch.unique(soft * 4).tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}  # 2×2 area averages
    assert 0 <= conf_p.min() and conf_p.max() <= 1
    assert (soft - mask).abs().mean() < 0.05  # same object at both resolutions

    _, lm = segment(net, x, confidence="logit_minmax")
    assert torch.allclose(lm.flatten(1).amin(1), torch.zeros(6))
    assert torch.allclose(lm.flatten(1).amax(1), torch.ones(6))
    _, lm_p = segment(net, x, parser_size=64, confidence="logit_minmax")
    assert 0 <= lm_p.min() and lm_p.max() <= 1  # normalised at 64 px, then area-shrunk (IMPL order)
    # the two confidences rank pixels the same way (both monotone in the object logit margin here)
    assert float(torch.corrcoef(torch.stack([lm.flatten(), conf.flatten()]))[0, 1]) > 0.5


def test_segment_options_and_errors(trained, test_set):
    net, _ = trained
    x = test_set[0][:3]
    net.train()
    m1, c1 = segment(net, x)
    assert net.training  # mode restored
    net.eval()
    m2, c2 = segment(net, x, object_class=[1])
    assert torch.equal(m1, m2) and torch.allclose(c1, c2)
    bg, cbg = segment(net, x, object_class=0, empty_fallback=False)
    assert torch.equal(bg, 1 - m1) and torch.allclose(cbg, 1 - c1, atol=1e-6)
    both, cboth = segment(net, x, object_class=[0, 1])
    assert torch.equal(both, torch.ones_like(both)) and torch.allclose(cboth, torch.ones_like(cboth))
    xu = ((x + 1) * 127.5).round().byte()  # uint8 images are mapped to [-1, 1]
    assert torch.equal(segment(net, xu)[0], segment(net, xu.float() / 127.5 - 1)[0])
    with pytest.raises(ValueError, match="confidence"):
        segment(net, x, confidence="sigmoid")
    with pytest.raises(ValueError, match="object_class"):
        segment(net, x, object_class=2)


def test_empty_mask_falls_back_to_ones():
    net = SegNet().eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([5.0, -5.0]))  # everything is background, constant logits
    x = torch.zeros(2, 3, S, S)
    with pytest.warns(UserWarning, match="all-ones"):
        m, c = segment(net, x, confidence="logit_minmax")
    assert torch.equal(m, torch.ones_like(m))
    assert torch.equal(c, torch.zeros_like(c))  # constant logit map → 0 confidence
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m0, _ = segment(net, x, empty_fallback=False)
    assert torch.equal(m0, torch.zeros_like(m0))


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------

def test_save_load_round_trip(trained, test_set, tmp_path):
    net, hist = trained
    path = tmp_path / "seg.pt"
    save_segmenter(path, net, {"val_iou": hist["val_iou"][-1], "epochs": 6})
    assert path.stat().st_size < 1024 * 1024  # measured ~0.47 MiB
    assert not list(tmp_path.glob(".*"))
    net2 = load_segmenter(path)
    assert not net2.training and net2.meta == {"val_iou": hist["val_iou"][-1], "epochs": 6}
    x = test_set[0][:4]
    for kw in ({}, {"parser_size": 64, "confidence": "logit_minmax"}):
        a, b = segment(net, x, **kw), segment(net2, x, **kw)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="JSON"):
        save_segmenter(tmp_path / "bad.pt", net, {"t": torch.zeros(1)})


def _tamper(obj, how):
    sd = obj["state_dict"]
    if how == "missing_key":
        del sd["head.bias"]
    elif how == "extra_key":
        sd["head.extra"] = torch.zeros(1)
    elif how == "wrong_shape":
        sd["head.weight"] = torch.zeros(3, 16, 1, 1)
    elif how == "missing_config":
        del obj["config"]
    elif how == "bad_config":
        obj["config"] = {"n_classes": 2, "width": "16", "depth": 3}
    elif how == "config_mismatch":
        obj["config"]["width"] = 8
    elif how == "not_a_dict":
        return [1, 2, 3]
    return obj


@pytest.mark.parametrize("how", ["missing_key", "extra_key", "wrong_shape", "missing_config", "bad_config",
                                 "config_mismatch", "not_a_dict", "truncated", "missing_file"])
def test_tampered_checkpoint_raises_checkpoint_error(tmp_path, how):
    path = tmp_path / "seg.pt"
    save_segmenter(path, SegNet(width=4, depth=2), {})
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "missing_file":
        path = tmp_path / "absent.pt"
    else:
        obj = torch.load(path, weights_only=True)
        path.write_bytes(torch_bytes(_tamper(obj, how)))
    with pytest.raises(CheckpointError, match=str(path).replace("\\", "\\\\")):
        load_segmenter(path)


# --------------------------------------------------------------------------------------------
# priors
# --------------------------------------------------------------------------------------------

def test_outputs_plug_into_priors(trained, test_set):
    net, _ = trained
    x, _ = test_set
    m, c = segment(net, x[:4], parser_size=64)
    for p in (make_prior("smoothed_box", mask=m), make_prior("smoothed_confidence", confidence=c)):
        assert p.shape == (4, S, S)
        assert p.min() >= 0.91 - 1e-6 and p.max() <= 1.02 + 1e-6
        assert torch.allclose(p.flatten(1).amin(1), torch.full((4,), 0.91), atol=1e-6)  # object plateau
    mb = make_prior("masked_box", mask=m)
    assert mb.min() >= 0.91 - 1e-6 and mb.max() <= 1.02 + 1e-6
    assert make_prior("ellipsoid", mask=m).shape == (4, S, S)
    _, lm = segment(net, x[:4], confidence="logit_minmax")
    p = make_prior("smoothed_confidence", confidence=lm)
    assert p.min() >= 0.91 - 1e-6 and p.max() <= 1.02 + 1e-6


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def _run(argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    add_cli(sub)
    args = p.parse_args(argv)
    return args.func(args)


def test_cli_train_then_segment(tmp_path):
    x, m = toy_dataset(24, seed=2)
    npz = tmp_path / "renders.npz"
    np.savez(npz, images=((x + 1) * 127.5).round().byte().numpy(), masks=m.numpy())
    ckpt, hist = tmp_path / "seg.pt", tmp_path / "hist.json"
    assert _run(["train-segmenter", "--data", str(npz), "--epochs", "1", "--batch-size", "8", "--seed", "0",
                 "--out", str(ckpt), "--history", str(hist)]) == 0
    h = json.loads(hist.read_text())
    assert len(h["train_loss"]) == 1 and h["n_val"] == 2
    net = load_segmenter(ckpt)
    assert net.meta["n_images"] == 24 and net.meta["image_size"] == S and net.meta["epochs"] == 1

    imgs = []
    for i in range(2):
        save_png(x[i], tmp_path / f"img{i}.png")
        imgs.append(str(tmp_path / f"img{i}.png"))
    out = tmp_path / "seg"
    assert _run(["segment", "--checkpoint", str(ckpt), "--images", *imgs, "--out-dir", str(out),
                 "--parser-size", "64", "--confidence", "logit_minmax"]) == 0
    for i in range(2):
        mask = np.asarray(Image.open(out / f"img{i}_mask.png"))
        conf = np.load(out / f"img{i}_conf.npy")
        assert mask.shape == (S, S) and mask.dtype == np.uint8
        assert conf.shape == (S, S) and conf.dtype == np.float32 and 0 <= conf.min() <= conf.max() <= 1
    assert not list(out.glob(".*"))
    with pytest.raises(SystemExit):
        _run(["segment", "--checkpoint", str(ckpt), "--images", imgs[0], imgs[0], "--out-dir", str(out)])


def test_training_data_from_folder_and_bad_npz(tmp_path):
    x, m = toy_dataset(4, size=40, seed=4)
    for i in range(4):
        save_png(x[i], tmp_path / f"r{i}.png")
        save_png(m[i], tmp_path / f"r{i}_mask.png", (0.0, 1.0))
    xi, mi = load_training_data(tmp_path, image_size=S)
    assert xi.shape == (4, 3, S, S) and mi.shape == (4, 1, S, S)
    assert 0 <= mi.min() and mi.max() <= 1 and -1 <= xi.min() and xi.max() <= 1
    xf, mf = load_training_data(tmp_path)
    assert xf.shape == (4, 3, 40, 40) and (mf - m).abs().max() < 1 / 255 + 1e-6
    (tmp_path / "r9_mask.png").write_bytes((tmp_path / "r0_mask.png").read_bytes())
    with pytest.raises(ValueError, match="r9.png"):
        load_training_data(tmp_path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=x.numpy())
    with pytest.raises(ValueError, match="masks"):
        load_training_data(bad)
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        load_training_data(bad)
