"""Official parsers (BiSeNet, PSPNet-50): exact checkpoint layouts, strict loading, forward shapes,
the per-category mask rules and the mask/confidence pipeline (METHOD §7, EXTENSIONS §1.1)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from gan2shape.io import CheckpointError
from gan2shape.masks import BiSeNet, CATEGORIES, PSPNet, label_map_to_mask, load_parser, parse
from gan2shape.masks.parsing import (SPECS, add_cli, confidence_map, logits_to_labels, normalize_input,
                                     parser_logits)

KEYS = Path(__file__).parent / "data" / "keys"


def official_keys(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads((KEYS / f"{name}.json").read_text())["keys"].items()}


def random_state_dict(keys: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the official keys/shapes (fan-in-scaled weights, sane BN stats)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in keys.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0, dtype=torch.long)
        elif k.endswith("running_var"):
            sd[k] = torch.ones(shape)
        elif k.endswith("running_mean") or k.endswith(".bias"):
            sd[k] = torch.zeros(shape)
        elif len(shape) == 1:  # BN weight
            sd[k] = torch.full(shape, 0.5)
        else:
            sd[k] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    return sd


@pytest.fixture(scope="module")
def bisenet_file(tmp_path_factory):
    """Random bisenet.pth in the official container: a bare state_dict."""
    p = tmp_path_factory.mktemp("ck") / "bisenet.pth"
    torch.save(random_state_dict(official_keys("bisenet-19")), p)
    return p


@pytest.fixture(scope="module")
def pspnet_voc_file(tmp_path_factory):
    """Random pspnet_voc.pth in the official container: {'state_dict': {'module.' + k: ...}}."""
    p = tmp_path_factory.mktemp("ck") / "pspnet_voc.pth"
    torch.save({"epoch": 50, "state_dict": random_state_dict(official_keys("pspnet50-voc-21"))}, p)
    return p


# --------------------------------------------------------------------------------------------
# layouts and loading
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,make,prefix", [
    ("bisenet-19", lambda: BiSeNet(19), ""),
    ("pspnet50-voc-21", lambda: PSPNet(21), "module."),
    ("pspnet50-ade20k-150", lambda: PSPNet(150), "module."),
])
def test_state_dict_layout_matches_official(name, make, prefix):
    with torch.device("meta"):
        net = make()
    got = {prefix + k: tuple(v.shape) for k, v in net.state_dict().items()}
    want = official_keys(name)
    assert len(got) == len(want)
    assert got == want


def test_pspnet_without_aux_has_no_aux_keys():
    with torch.device("meta"):
        net = PSPNet(21, use_aux=False)
    want = {k[len("module."):] for k in official_keys("pspnet50-voc-21") if not k.startswith("module.aux.")}
    assert set(net.state_dict()) == want


def test_load_bisenet_strict(bisenet_file):
    net = load_parser("face", bisenet_file)
    assert isinstance(net, BiSeNet) and not net.training
    ref = torch.load(bisenet_file, weights_only=True)
    for k, v in net.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert all(not p.requires_grad for p in net.parameters())
    assert next(net.parameters()).device.type == "cpu"


def test_load_pspnet_strict_strips_module_prefix(pspnet_voc_file):
    net = load_parser("car", pspnet_voc_file)
    assert isinstance(net, PSPNet) and hasattr(net, "aux")
    ref = torch.load(pspnet_voc_file, weights_only=True)["state_dict"]
    assert torch.equal(net.cls[4].weight, ref["module.cls.4.weight"])
    assert torch.equal(net.aux[4].bias, ref["module.aux.4.bias"])
    with torch.no_grad():
        out = net(torch.randn(1, 3, 33, 33))
    assert out.shape == (1, 21, 33, 33) and torch.isfinite(out).all()


def test_load_pspnet_ade20k_and_without_aux(tmp_path):
    keys = {k: v for k, v in official_keys("pspnet50-ade20k-150").items() if not k.startswith("module.aux.")}
    p = tmp_path / "pspnet_ade20k.pth"
    torch.save({"state_dict": random_state_dict(keys, seed=1)}, p)
    net = load_parser("church", p)
    assert net.n_classes == 150 and not hasattr(net, "aux")


def _tampered(tmp_path, how: str) -> Path:
    sd = random_state_dict(official_keys("bisenet-19"))
    p = tmp_path / f"bisenet_{how}.pth"
    if how == "missing":
        del sd["conv_out.conv_out.weight"]
    elif how == "shape":
        sd["cp.arm16.conv_atten.weight"] = torch.zeros(64, 128, 1, 1)
    elif how == "unexpected":
        sd["cp.sp.conv.weight"] = torch.zeros(1)
    torch.save(sd, p)
    if how == "truncated":
        p.write_bytes(p.read_bytes()[:5000])
    return p


@pytest.mark.parametrize("how,needle", [("missing", "conv_out.conv_out.weight"),
                                        ("shape", "cp.arm16.conv_atten.weight"),
                                        ("unexpected", "cp.sp.conv.weight"),
                                        ("truncated", "truncated")])
def test_tampered_checkpoint_raises_naming_file(tmp_path, how, needle):
    p = _tampered(tmp_path, how)
    with pytest.raises(CheckpointError) as e:
        load_parser("face", p)
    assert str(p) in str(e.value) and needle in str(e.value)


def test_wrong_category_for_file_raises(bisenet_file):
    with pytest.raises(CheckpointError, match="pspnet_voc"):
        load_parser("car", bisenet_file)
    with pytest.raises(ValueError, match="unknown parsing category"):
        load_parser("dog", bisenet_file)


def test_missing_file_raises(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_parser("face", tmp_path / "nope.pth")


# --------------------------------------------------------------------------------------------
# forward shapes
# --------------------------------------------------------------------------------------------

def test_bisenet_forward_three_outputs():
    torch.manual_seed(0)
    net = BiSeNet(19).eval()
    with torch.no_grad():
        outs = net(torch.randn(2, 3, 64, 64))
    assert len(outs) == 3
    assert all(o.shape == (2, 19, 64, 64) for o in outs)


def test_pspnet_forward_shapes_and_size_check():
    torch.manual_seed(0)
    net = PSPNet(21).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 65, 65))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 21, 65, 65)
    net.train()
    main, aux = net(torch.randn(2, 3, 33, 33))
    assert main.shape == aux.shape == (2, 21, 33, 33)
    net.eval()
    with pytest.raises(ValueError, match=r"\(size - 1\) must be divisible by 8"):
        net(torch.randn(1, 3, 64, 64))


# --------------------------------------------------------------------------------------------
# mask rules
# --------------------------------------------------------------------------------------------

def test_face_original_rule():
    labels = torch.arange(19).view(1, 1, 1, 19)
    m = label_map_to_mask(labels, "face").flatten().tolist()
    want = [0.0] + [1.0] * 13 + [0.5, 0.5, 0.0, 0.5, 0.5]
    assert m == want


def test_face_replication_and_other_rules():
    labels = torch.arange(19).view(1, 1, 1, 19)
    rep = label_map_to_mask(labels, "face", "replication").flatten().tolist()
    assert rep == [0.0] + [1.0] * 13 + [0.0] * 5
    syn = label_map_to_mask(labels, "synface").flatten().tolist()
    assert syn == [0.0] + [1.0] * 14 + [0.0] * 4
    voc = torch.arange(21).view(1, 1, 1, 21)
    for cat, lab in (("car", 7), ("cat", 8), ("horse", 13)):
        m = label_map_to_mask(voc, cat).flatten()
        assert m.sum() == 1 and m[lab] == 1
    ade = torch.arange(150).view(1, 1, 1, 150)
    m = label_map_to_mask(ade, "church").flatten()
    assert m.sum() == 1 and m[1] == 1
    with pytest.raises(ValueError, match="rule"):
        label_map_to_mask(labels, "face", "bogus")


def test_replication_drops_hair_before_argmax():
    # pixel 0: hair best, skin second → face (1); pixel 1: hair best, background second → 0;
    # pixel 2: lower lip (13) best → 1
    logits = torch.zeros(1, 19, 1, 3)
    logits[0, 17, 0, 0], logits[0, 1, 0, 0] = 5.0, 3.0
    logits[0, 17, 0, 1], logits[0, 0, 0, 1] = 5.0, 3.0
    logits[0, 13, 0, 2] = 4.0
    rep = label_map_to_mask(logits_to_labels(logits, "face", "replication"), "face", "replication")
    assert rep.flatten().tolist() == [1.0, 0.0, 1.0]
    orig = label_map_to_mask(logits_to_labels(logits, "face"), "face")
    assert orig.flatten().tolist() == [0.5, 0.5, 1.0]


def test_confidence_modes():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 19, 8, 8, generator=g) * 3
    c = confidence_map(logits, "face")
    ref = logits.softmax(1)[:, 1:14].sum(1, keepdim=True)
    assert torch.allclose(c, ref)
    assert c.min() >= 0 and c.max() <= 1
    c2 = confidence_map(logits, "face", "logit_minmax")
    z = logits[:, 1:13].sum(1)  # channels 1..12 (the replication's choice)
    for b in range(2):
        assert c2[b].min() == 0 and c2[b].max() == 1
        assert torch.allclose(c2[b, 0], (z[b] - z[b].min()) / (z[b].max() - z[b].min()))
    flat = confidence_map(torch.zeros(1, 21, 4, 4), "car", "logit_minmax")
    assert torch.equal(flat, torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="confidence"):
        confidence_map(logits, "face", "bogus")


def test_normalisation():
    x = torch.full((1, 3, 2, 2), 1.0)
    assert torch.equal(normalize_input(x, "none"), x)
    y = normalize_input(x, "imagenet")
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]))
    assert {c: SPECS[c].normalization(True) for c in sorted(CATEGORIES)} == {
        "car": "imagenet", "cat": "imagenet", "church": "none", "face": "none", "horse": "none", "synface": "none"}
    assert all(SPECS[c].normalization(False) == "imagenet" for c in CATEGORIES)
    assert {c: SPECS[c].input_size for c in CATEGORIES} == {
        "face": 512, "synface": 512, "car": 473, "cat": 473, "church": 473, "horse": 473}


# --------------------------------------------------------------------------------------------
# pipeline
# --------------------------------------------------------------------------------------------

class HalfPlane(nn.Module):
    """Records its input; the object class wins on the left half (columns < W/2) with logit 4."""

    def __init__(self, n_classes: int, object_class: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.n, self.k, self.seen = n_classes, object_class, None

    def forward(self, x):
        self.seen = x.clone()
        b, _, h, w = x.shape
        out = torch.zeros(b, self.n, h, w)
        out[:, self.k, :, : w // 2] = 4.0
        out[:, 0, :, w // 2:] = 4.0
        return out + self.w


def test_parse_soft_borders_and_normalisation():
    net = HalfPlane(21, 7)
    img = torch.zeros(1, 3, 6, 6)
    mask, conf = parse(net, "car", img, input_size=9)  # 9 px → 6 px: column 4 straddles the edge
    assert net.seen.shape == (1, 3, 9, 9)
    assert torch.allclose(net.seen[0, :, 0, 0], torch.tensor([(0.5 - m) / s for m, s in
                                                               zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]))
    row = mask[0, 0, 0]
    assert torch.allclose(row[:2], torch.ones(2)) and torch.allclose(row[-3:], torch.zeros(3))
    assert 0 < row[2] < 1  # soft border from area averaging
    assert mask.shape == conf.shape == (1, 1, 6, 6)
    p = math.exp(4) / (math.exp(4) + 20)
    assert torch.allclose(conf[0, 0, 0, 0], torch.tensor(p))
    horse = HalfPlane(21, 13)
    parse(horse, "horse", img, input_size=9)
    assert torch.equal(horse.seen, torch.zeros(1, 3, 9, 9))  # horse: faithful → no normalisation
    parse(horse, "horse", img, input_size=9, faithful=False)
    assert torch.allclose(horse.seen, net.seen)


def test_parse_empty_mask_falls_back_to_ones():
    net = HalfPlane(21, 0)  # the object class (7) never wins
    with pytest.warns(UserWarning, match="all-ones"):
        mask, _ = parse(net, "car", torch.zeros(2, 3, 8, 8), input_size=9)
    assert torch.equal(mask, torch.ones(2, 1, 8, 8))
    mask, _ = parse(net, "car", torch.zeros(1, 3, 8, 8), input_size=9, empty_fallback=False)
    assert mask.sum() == 0


@pytest.mark.parametrize("category,make,size", [("face", lambda: BiSeNet(19), 64), ("car", lambda: PSPNet(21), 65)])
def test_parse_end_to_end_random_net(category, make, size):
    torch.manual_seed(0)
    net = make().eval()
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    for conf_mode in ("softmax", "logit_minmax"):
        mask, conf = parse(net, category, img, input_size=size, confidence=conf_mode, empty_fallback=False)
        assert mask.shape == conf.shape == (2, 1, 32, 32)
        assert mask.dtype == conf.dtype == torch.float32
        assert 0 <= mask.min() and mask.max() <= 1 and 0 <= conf.min() and conf.max() <= 1
    logits = parser_logits(net, category, img, input_size=size)
    assert logits.shape == (2, net.n_classes, size, size)


def test_parse_rejects_bad_input():
    net = HalfPlane(21, 7)
    with pytest.raises(ValueError, match="B×3×S×S"):
        parse(net, "car", torch.zeros(3, 8, 8), input_size=9)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def test_cli_segment_real(tmp_path, bisenet_file):
    rng = np.random.default_rng(0)
    imgs = []
    for i in range(2):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(p)
        imgs.append(str(p))
    ap = argparse.ArgumentParser()
    add_cli(ap.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    args = ap.parse_args(["segment-real", "--category", "face", "--checkpoint", str(bisenet_file), "--images", *imgs,
                          "--image-size", "32", "--out-dir", str(out), "--input-size", "64",
                          "--confidence", "logit_minmax", "--rule", "replication", "--no-faithful"])
    assert args.faithful is False
    assert args.func(args) == 0
    for i in range(2):
        m = np.asarray(Image.open(out / f"im{i}_mask.png"))
        c = np.load(out / f"im{i}_conf.npy")
        assert m.shape == (32, 32) and m.dtype == np.uint8
        assert c.shape == (32, 32) and c.dtype == np.float32 and 0 <= c.min() and c.max() <= 1
    assert not [f for f in out.iterdir() if f.name.startswith(".")]  # no temp files left
    args = ap.parse_args(["segment-real", "--category", "face", "--checkpoint", str(bisenet_file),
                          "--images", imgs[0], "--out-dir", str(out)])
    assert args.faithful is True and args.rule == "original" and args.confidence == "softmax"
