"""Tests for gan2shape.gan.stylegan2: official key layout, numerics of the ops, generation semantics,
checkpoint and latent I/O."""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gan2shape.io import CheckpointError
from gan2shape.gan.stylegan2 import (
    Discriminator, Generator, ModulatedConv2d, _infer_arch, fused_leaky_relu, load_latent,
    load_stylegan2, make_kernel, save_latent, save_stylegan2, upfirdn2d,
)

# the official checkpoints' state_dict key lists (names and shapes), kept in the repo
SPEC_KEYS = Path(__file__).parent / "data" / "keys"
KEY_FILES = sorted(glob.glob(str(SPEC_KEYS / "stylegan2-[GD]-*.json")))

# small configs used for forward passes
SMALL = dict(style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=16)


def _parse(fname: str):
    m = re.fullmatch(r"stylegan2-([GD])-(\d+)-cm(\d+)\.json", Path(fname).name)
    assert m, fname
    return m.group(1), int(m.group(2)), int(m.group(3))


def small_g(size=32, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(SMALL, **kw)
    g = Generator(size, **cfg)
    # non-zero noise strengths / biases so that every term matters
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or name.endswith("activate.bias") or name.endswith("to_rgb1.bias"):
                p.normal_(0, 0.1)
    return g.eval()


def small_d(size=32, seed=1, **kw):
    torch.manual_seed(seed)
    return Discriminator(size, channel_multiplier=kw.get("channel_multiplier", 1),
                         channel_max=kw.get("channel_max", 16)).eval()


# ------------------------------------------------------------------------------------------------
# official layout
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fname", KEY_FILES, ids=lambda f: Path(f).stem)
def test_state_dict_matches_spec(fname):
    assert len(KEY_FILES) == 10
    kind, size, cm = _parse(fname)
    spec = json.loads(Path(fname).read_text())
    keys = {k: list(v) for k, v in spec["keys"].items()}
    assert len(keys) == spec["count"]
    with torch.device("meta"):
        model = Generator(size, channel_multiplier=cm) if kind == "G" else Discriminator(size, channel_multiplier=cm)
    sd = model.state_dict()
    assert list(sd) == list(keys)  # same keys, same order
    for k, v in sd.items():
        assert list(v.shape) == keys[k], k
    # strict load of a dict with exactly these keys and shapes
    fake = {k: torch.empty(shape) for k, shape in keys.items()}
    model.load_state_dict(fake, strict=True, assign=True)
    if kind == "G":
        arch = _infer_arch({k: torch.empty(s, device="meta") for k, s in keys.items()}, Path(fname))
        assert arch == dict(size=size, channel_multiplier=cm, style_dim=512, n_mlp=8, channel_max=512)
        assert model.n_latent == 2 * int(math.log2(size)) - 2


def test_channel_table_and_attributes():
    g = Generator(64, style_dim=128, n_mlp=4, channel_multiplier=1, channel_max=128)
    assert (g.size, g.style_dim, g.n_mlp, g.log_size, g.num_layers, g.n_latent) == (64, 128, 4, 6, 9, 10)
    assert g.channels[4] == 128 and g.channels[64] == 128
    assert [k for k in g.state_dict() if k.startswith("style.")][-1] == "style.4.bias"
    d = Discriminator(64, channel_multiplier=1, channel_max=128)
    assert d.state_dict()["final_conv.0.weight"].shape == (128, 129, 3, 3)
    for i in range(g.num_layers):
        r = (i + 5) // 2
        assert getattr(g.noises, f"noise_{i}").shape == (1, 1, 2 ** r, 2 ** r)


# ------------------------------------------------------------------------------------------------
# ops
# ------------------------------------------------------------------------------------------------

def ref_upfirdn2d(x, k, up, down, pad):
    """Literal definition: zero insertion, padding, loop-based true convolution, striding."""
    p0, p1 = pad
    b, c, h, w = x.shape
    u = torch.zeros(b, c, h * up, w * up, dtype=x.dtype)
    for i in range(h):
        for j in range(w):
            u[:, :, i * up, j * up] = x[:, :, i, j]
    H, W = h * up + p0 + p1, w * up + p0 + p1
    v = torch.zeros(b, c, H, W, dtype=x.dtype)
    for i in range(H):
        for j in range(W):
            si, sj = i - p0, j - p0
            if 0 <= si < h * up and 0 <= sj < w * up:
                v[:, :, i, j] = u[:, :, si, sj]
    kh, kw = k.shape
    oh, ow = H - kh + 1, W - kw + 1
    out = torch.zeros(b, c, oh, ow, dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            acc = 0
            for a in range(kh):
                for bb in range(kw):
                    # true convolution: kernel index reversed
                    acc = acc + v[:, :, i + a, j + bb] * k[kh - 1 - a, kw - 1 - bb]
            out[:, :, i, j] = acc
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(1, 1, (0, 0)), (2, 1, (2, 1)), (1, 2, (1, 1)),
                                         (1, 1, (2, 2)), (2, 1, (1, 1)), (1, 2, (2, 2)), (1, 1, (-1, 2))])
def test_upfirdn2d_matches_reference(up, down, pad):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    k = torch.randn(4, 4, generator=g, dtype=torch.float64)  # asymmetric: tests the flip
    out = upfirdn2d(x, k, up=up, down=down, pad=pad)
    ref = ref_upfirdn2d(x, k, up, down, pad)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-12)


def test_upsample_and_blur_sizes():
    k = make_kernel([1, 3, 3, 1])
    assert torch.isclose(k.sum(), torch.tensor(1.0))
    x = torch.ones(1, 1, 8, 8)
    up = upfirdn2d(x, k * 4, up=2, pad=(2, 1))
    assert up.shape == (1, 1, 16, 16)
    # interior of an upsampled constant stays constant
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12))


def test_fused_leaky_relu():
    x = torch.randn(2, 5, 3, 3)
    b = torch.randn(5)
    ref = math.sqrt(2) * F.leaky_relu(x + b.view(1, 5, 1, 1), 0.2)
    assert torch.allclose(fused_leaky_relu(x, b), ref)
    x2 = torch.randn(4, 5)
    assert torch.allclose(fused_leaky_relu(x2, b), math.sqrt(2) * F.leaky_relu(x2 + b, 0.2))


@pytest.mark.parametrize("upsample,downsample,demod", [(False, False, True), (True, False, True),
                                                       (False, True, True), (False, False, False)])
def test_modulated_conv_per_sample_reference(upsample, downsample, demod):
    torch.manual_seed(0)
    m = ModulatedConv2d(4, 5, 3, 8, demodulate=demod, upsample=upsample, downsample=downsample).double()
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    s = torch.randn(3, 8, dtype=torch.float64)
    out = m(x, s)
    refs = []
    for i in range(3):
        st = m.modulation(s[i:i + 1])[0]
        w = m.weight[0] * m.scale * st.view(1, 4, 1, 1)
        if demod:
            w = w / torch.sqrt((w ** 2).sum([1, 2, 3], keepdim=True) + 1e-8)
        xi = x[i:i + 1]
        if upsample:
            y = F.conv_transpose2d(xi, w.transpose(0, 1), stride=2)
            y = upfirdn2d(y, m.blur.kernel, pad=m.blur.pad)
        elif downsample:
            y = F.conv2d(upfirdn2d(xi, m.blur.kernel, pad=m.blur.pad), w, stride=2)
        else:
            y = F.conv2d(xi, w, padding=1)
        refs.append(y)
    ref = torch.cat(refs)
    side = 16 if upsample else 4 if downsample else 8
    assert out.shape == (3, 5, side, side)
    assert torch.allclose(out, ref, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# generation semantics
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gen():
    return small_g(32)


def test_output_shape_and_fixed_noise(gen):
    w = torch.randn(2, 32)
    with torch.no_grad():
        a, lat = gen([w], input_is_w=True)
        b, _ = gen(w, input_is_w=True)
        c, _ = gen([w], input_is_w=True, randomize_noise=True)
    assert a.shape == (2, 3, 32, 32) and lat is None
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-4)
    # explicit stored noise list = default
    with torch.no_grad():
        d, _ = gen([w], input_is_w=True, noise=gen.stored_noise())
    assert torch.equal(a, d)


def test_w_equals_repeated_wplus(gen):
    w = torch.randn(2, 32)
    wp = w.unsqueeze(1).repeat(1, gen.n_latent, 1)
    with torch.no_grad():
        a, lat = gen([w], input_is_w=True, return_latents=True)
        b, _ = gen(wp, input_is_w=True)
    assert torch.equal(lat, wp)
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        gen(wp)  # W+ only with input_is_w


def test_truncation_and_mapping(gen):
    torch.manual_seed(3)
    z = torch.randn(2, 32)
    w_avg = gen.mean_latent(256, generator=torch.Generator().manual_seed(0))
    assert w_avg.shape == (1, 32)
    with torch.no_grad():
        t0, _ = gen([z], truncation=0.0, truncation_latent=w_avg)
        ref, _ = gen([w_avg.expand(2, -1)], input_is_w=True)
        assert torch.equal(t0, ref)
        mz, _ = gen([z])
        mw, _ = gen([gen.style(z)], input_is_w=True)
        assert torch.equal(mz, mw)
        t7, _ = gen([z], truncation=0.7, truncation_latent=w_avg)
        w7 = w_avg + 0.7 * (gen.get_latent(z) - w_avg)
        assert torch.allclose(t7, gen([w7], input_is_w=True)[0], atol=1e-6)


def test_style_forward_partial(gen):
    x = torch.randn(4, 32)
    full = gen.style(x)
    assert torch.equal(gen.style_forward(x), full)
    for k in range(len(gen.style) + 1):
        assert torch.allclose(gen.style_forward(gen.style_forward(x, 0, k), k), full, atol=1e-6)
    # PixelNorm of zero is zero; skip/depth select modules [skip, depth)
    assert torch.equal(gen.style_forward(torch.zeros(1, 32), 0, 1), torch.zeros(1, 32))
    assert torch.equal(gen.style_forward(x, 1, 2), gen.style[1](x))


def test_style_mixing(gen):
    w1, w2 = torch.randn(1, 32), torch.randn(1, 32)
    with torch.no_grad():
        img, lat = gen([w1, w2], input_is_w=True, inject_index=3, return_latents=True)
        wp = torch.cat([w1.repeat(3, 1), w2.repeat(gen.n_latent - 3, 1)]).unsqueeze(0)
        assert torch.equal(lat, wp)
        assert torch.equal(img, gen(wp, input_is_w=True)[0])


def test_gradients_reach_w(gen):
    w = torch.randn(1, 32, requires_grad=True)
    img, _ = gen([w], input_is_w=True)
    img.square().mean().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_make_noise(gen):
    n = gen.make_noise()
    assert [t.shape[-1] for t in n] == [4, 8, 8, 16, 16, 32, 32]
    with torch.no_grad():
        img, _ = gen([torch.randn(1, 32)], input_is_w=True, noise=n)
    assert img.shape == (1, 3, 32, 32)


def test_discriminator_forward_and_features():
    d = small_d(64)
    assert d.n_blocks == 4
    for b in (1, 3, 4, 6):
        assert d(torch.randn(b, 3, 64, 64)).shape == (b, 1)
    x = torch.randn(2, 3, 64, 64)
    feats = d.features(x, 4)
    assert [tuple(f.shape) for f in feats] == [(2, 16, 32, 32), (2, 16, 16, 16), (2, 16, 8, 8), (2, 16, 4, 4)]
    assert all(torch.equal(a, b) for a, b in zip(feats, d(x, ftr_num=4)))
    # first block output equals running the trunk by hand
    assert torch.allclose(feats[0], d.convs[1](d.convs[0](x)))
    small = d.features(torch.randn(2, 3, 32, 32), 4)
    assert [f.shape[-1] for f in small] == [16, 8, 4, 2]
    with pytest.raises(ValueError):
        d.features(x, 5)


def test_minibatch_stddev_group_of_4():
    d = small_d(32)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        full = d(x)
        # B=8, group 4: groups are samples {m, m+2, m+4, m+6} (rosinality's view(group, -1, ...))
        even, odd, first4 = d(x[0::2]), d(x[1::2]), d(x[:4])
    assert torch.allclose(full[0::2], even, atol=1e-6) and torch.allclose(full[1::2], odd, atol=1e-6)
    assert not torch.allclose(full[:4], first4, atol=1e-4)  # a different grouping changes the stat
    x2 = torch.cat([x[0::2], x[0::2]])  # groups {i, i+2, ...} identical pairs -> same as reordering
    with torch.no_grad():
        out2 = d(x2)
    assert torch.allclose(out2[:4], out2[4:])


# ------------------------------------------------------------------------------------------------
# checkpoint I/O
# ------------------------------------------------------------------------------------------------

def official_ckpt(size=32, cm=1):
    g = small_g(size, channel_multiplier=cm)
    d = small_d(size, channel_multiplier=cm)
    return g, d, {"g": g.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict(),
                  "g_optim": {}, "d_optim": {},
                  "args": argparse.Namespace(size=size, channel_multiplier=cm, iter=10, batch=4)}


def test_load_official_checkpoint(tmp_path):
    g, d, ck = official_ckpt()
    p = tmp_path / "stylegan2-test.pt"
    torch.save(ck, p)
    loaded = load_stylegan2(p)
    G, D = loaded.generator, loaded.discriminator
    assert not G.training and not any(q.requires_grad for q in G.parameters())
    assert isinstance(loaded.args, argparse.Namespace) and loaded.latent_avg is None
    assert (G.size, G.style_dim, G.n_mlp, G.channel_max) == (32, 32, 2, 16)
    w = torch.randn(2, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(G([w], input_is_w=True)[0], g([w], input_is_w=True)[0])
        assert torch.equal(D(x), d(x))


def test_save_and_reload(tmp_path):
    g, d, _ = official_ckpt()
    avg = g.mean_latent(64)
    p = tmp_path / "out" / "ck.pt"
    save_stylegan2(p, g, d, latent_avg=avg)
    raw = torch.load(p, weights_only=False)
    assert set(raw) == {"g_ema", "d", "args", "latent_avg"}
    assert raw["latent_avg"].shape == (32,)
    ck = load_stylegan2(p)
    assert torch.equal(ck.latent_avg, avg)
    w = torch.randn(1, 32)
    with torch.no_grad():
        assert torch.equal(ck.generator(w, input_is_w=True)[0], g(w, input_is_w=True)[0])


def test_infer_without_args_and_no_disc(tmp_path):
    g = small_g(16, channel_max=64, channel_multiplier=2, style_dim=24, n_mlp=3)
    p = tmp_path / "g_only.pt"
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(24)}, p)
    ck = load_stylegan2(p, load_discriminator=False)
    assert ck.discriminator is None and ck.args is None
    assert (ck.generator.size, ck.generator.style_dim, ck.generator.n_mlp) == (16, 24, 3)
    with pytest.raises(CheckpointError, match=r"g_only\.pt.*'d'"):
        load_stylegan2(p)


def _expect_error(path, *patterns, **kw):
    with pytest.raises(CheckpointError) as ei:
        load_stylegan2(path, **kw)
    msg = str(ei.value)
    assert path.name in msg, msg
    for pat in patterns:
        assert pat in msg, msg
    return msg


def test_tampered_checkpoints(tmp_path):
    _, _, ck = official_ckpt()
    # missing key
    bad = dict(ck, g_ema={k: v for k, v in ck["g_ema"].items() if k != "conv1.conv.weight"})
    torch.save(bad, tmp_path / "missing.pt")
    _expect_error(tmp_path / "missing.pt", "missing", "conv1.conv.weight")
    # wrong shape
    sd = dict(ck["g_ema"])
    sd["convs.1.conv.weight"] = torch.zeros(1, 16, 8, 3, 3)
    torch.save(dict(ck, g_ema=sd), tmp_path / "shape.pt")
    _expect_error(tmp_path / "shape.pt", "convs.1.conv.weight: checkpoint [1,16,8,3,3], model [1,16,16,3,3]")
    # wrong shape in the discriminator
    dsd = dict(ck["d"])
    dsd["final_linear.1.bias"] = torch.zeros(2)
    torch.save(dict(ck, d=dsd), tmp_path / "dshape.pt")
    _expect_error(tmp_path / "dshape.pt", "'d'", "final_linear.1.bias")
    # unexpected key
    torch.save(dict(ck, g_ema=dict(ck["g_ema"], extra=torch.zeros(1))), tmp_path / "extra.pt")
    _expect_error(tmp_path / "extra.pt", "unexpected", "extra")
    # truncated file
    good = tmp_path / "good.pt"
    torch.save(ck, good)
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    _expect_error(tmp_path / "trunc.pt")
    # not a torch file
    (tmp_path / "text.pt").write_text("hello, not a checkpoint")
    _expect_error(tmp_path / "text.pt")
    # disallowed globals
    torch.save(dict(ck, when=datetime.datetime(2021, 1, 1)), tmp_path / "dt.pt")
    _expect_error(tmp_path / "dt.pt")
    torch.save(dict(ck, g_ema=MyOrderedDict(ck["g_ema"])), tmp_path / "od.pt")
    _expect_error(tmp_path / "od.pt")
    # no g_ema
    torch.save({"g": ck["g"], "d": ck["d"]}, tmp_path / "nogema.pt")
    msg = _expect_error(tmp_path / "nogema.pt", "g_ema")
    assert "'d'" in msg and "'g'" in msg  # keys found are listed
    # not a dict
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    _expect_error(tmp_path / "tensor.pt")


class MyOrderedDict(collections.OrderedDict):
    pass


def test_wrong_architecture(tmp_path):
    _, _, ck = official_ckpt(32, 1)
    p = tmp_path / "g32.pt"
    torch.save(ck, p)
    msg = _expect_error(p, "size=64", "channel_multiplier=1", "missing", "convs.6",
                        size=64)
    assert "wrong shapes" not in msg or "checkpoint [" in msg


def test_missing_noises_warns(tmp_path):
    g, _, ck = official_ckpt()
    sd = {k: v for k, v in ck["g_ema"].items() if not k.startswith("noises.")}
    p = tmp_path / "old.pt"
    torch.save(dict(ck, g_ema=sd), p)
    with pytest.warns(UserWarning, match="noise"):
        loaded = load_stylegan2(p)
    assert loaded.generator.noises.noise_0.shape == (1, 1, 4, 4)
    # everything but the noise matches
    w = torch.randn(1, 32)
    n = g.stored_noise()
    with torch.no_grad():
        assert torch.equal(loaded.generator(w, input_is_w=True, noise=n)[0], g(w, input_is_w=True)[0])


# ------------------------------------------------------------------------------------------------
# latents
# ------------------------------------------------------------------------------------------------

def test_load_latent_forms(tmp_path):
    w = torch.randn(512)
    forms = {
        "plain.pt": w, "row.pt": w[None], "dict.pt": {"latent": w[None], "img": torch.zeros(3, 4, 4)},
        "proj.pt": {"000001.png": {"img": torch.zeros(3, 4, 4), "latent": w, "noise": [torch.zeros(1)]}},
    }
    for name, obj in forms.items():
        torch.save(obj, tmp_path / name)
        out = load_latent(tmp_path / name)
        assert out.shape == (1, 512) and torch.equal(out, w[None]), name
    wp = torch.randn(1, 14, 512)
    torch.save({"latent": wp}, tmp_path / "wp.pt")
    assert torch.equal(load_latent(tmp_path / "wp.pt"), wp)
    torch.save(wp[0], tmp_path / "wp2.pt")
    assert torch.equal(load_latent(tmp_path / "wp2.pt"), wp)
    torch.save(torch.randn(1, 32).double(), tmp_path / "small.pt")
    assert load_latent(tmp_path / "small.pt", style_dim=32).dtype == torch.float32


@pytest.mark.parametrize("name,obj", [
    ("shape.pt", torch.randn(1, 256)), ("nokey.pt", {"w": torch.randn(512)}),
    ("notensor.pt", {"latent": [1.0, 2.0]}), ("batch3d.pt", torch.randn(2, 3, 512)),
    ("nan.pt", torch.full((512,), float("nan"))), ("scalar.pt", torch.tensor(1.0)),
])
def test_load_latent_rejects(tmp_path, name, obj):
    torch.save(obj, tmp_path / name)
    with pytest.raises(CheckpointError, match=re.escape(name)):
        load_latent(tmp_path / name)


def test_load_latent_unreadable(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_latent(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="absent.pt"):
        load_latent(tmp_path / "absent.pt")


def test_save_latent_roundtrip(tmp_path):
    w = torch.randn(1, 512)
    save_latent(tmp_path / "a.pt", w)
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    assert raw.shape == (512,)  # generate.py format
    assert torch.equal(load_latent(tmp_path / "a.pt"), w)
    wp = torch.randn(1, 12, 512)
    save_latent(tmp_path / "b.pt", wp)
    assert torch.equal(load_latent(tmp_path / "b.pt"), wp)
    with pytest.raises(ValueError):
        save_latent(tmp_path / "c.pt", torch.randn(2, 3, 512))
