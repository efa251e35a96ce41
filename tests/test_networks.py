"""Networks D, A, V, L, E against the layer lists of METHOD §2, and the depth heads of §2.4."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gan2shape.method.networks import (EDDeconv, Encoder, ResBlockDown, ResEncoder, build_networks,
                                clamp_border, depth_head, widths)


def tokens(seq: nn.Sequential) -> list[str]:
    """Compact description of a Sequential's layers."""
    out = []
    for m in seq:
        if isinstance(m, nn.ConvTranspose2d):
            out.append(f"T{m.kernel_size[0]}s{m.stride[0]}p{m.padding[0]} {m.in_channels}-{m.out_channels}"
                       + ("b" if m.bias is not None else ""))
        elif isinstance(m, nn.Conv2d):
            out.append(f"C{m.kernel_size[0]}s{m.stride[0]}p{m.padding[0]} {m.in_channels}-{m.out_channels}"
                       + ("b" if m.bias is not None else ""))
        elif isinstance(m, nn.GroupNorm):
            out.append(f"GN{m.num_groups}-{m.num_channels}")
        elif isinstance(m, nn.LeakyReLU):
            assert m.negative_slope == 0.2
            out.append("LR")
        elif isinstance(m, nn.ReLU):
            out.append("R")
        elif isinstance(m, nn.Tanh):
            out.append("Tanh")
        elif isinstance(m, nn.Upsample):
            assert m.scale_factor == 2 and m.mode == "nearest"
            out.append("Up2")
        elif isinstance(m, ResBlockDown):
            out.append(f"RB {m.conv1.in_channels}-{m.conv1.out_channels}")
        else:
            out.append(type(m).__name__)
    return out


def spatial_sizes(net: nn.Module, size: int) -> list[int]:
    """Spatial size after each layer of ``net.network``, recorded with forward hooks."""
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for m in net.network]
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return sizes


# METHOD §2.1, S = 128 (steps 1-15)
EDD_128 = (
    ["C4s2p1 3-32", "GN8-32", "LR", "C4s2p1 32-64", "GN16-64", "LR", "C4s2p1 64-128", "GN32-128", "LR",
     "C4s2p1 128-256", "GN64-256", "LR", "C4s2p1 256-512", "LR", "C4s1p0 512-256", "R",
     "T4s1p0 256-512", "R", "C3s1p1 512-512", "R"]
    + ["T4s2p1 512-256", "GN64-256", "R", "C3s1p1 256-256", "GN64-256", "R"]
    + ["T4s2p1 256-128", "GN32-128", "R", "C3s1p1 128-128", "GN32-128", "R"]
    + ["T4s2p1 128-64", "GN16-64", "R", "C3s1p1 64-64", "GN16-64", "R"]
    + ["T4s2p1 64-32", "GN8-32", "R", "C3s1p1 32-32", "GN8-32", "R"]
    + ["Up2", "C3s1p1 32-32", "GN8-32", "R", "C5s1p2 32-32", "GN8-32", "R", "C5s1p2 32-COUT"]
)
EDD_128_SIZES = ([64, 64, 64, 32, 32, 32, 16, 16, 16, 8, 8, 8, 4, 4, 1, 1, 4, 4, 4, 4]
                 + [8] * 6 + [16] * 6 + [32] * 6 + [64] * 6 + [128] * 8)

# METHOD §2.1, S = 64
EDD_64 = (
    ["C4s2p1 3-64", "GN16-64", "LR", "C4s2p1 64-128", "GN32-128", "LR", "C4s2p1 128-256", "GN64-256", "LR",
     "C4s2p1 256-512", "LR", "C4s1p0 512-256", "R",
     "T4s1p0 256-512", "R", "C3s1p1 512-512", "R"]
    + ["T4s2p1 512-256", "GN64-256", "R", "C3s1p1 256-256", "GN64-256", "R"]
    + ["T4s2p1 256-128", "GN32-128", "R", "C3s1p1 128-128", "GN32-128", "R"]
    + ["T4s2p1 128-64", "GN16-64", "R", "C3s1p1 64-64", "GN16-64", "R"]
    + ["Up2", "C3s1p1 64-64", "GN16-64", "R", "C5s1p2 64-64", "GN16-64", "R", "C5s1p2 64-COUT"]
)
EDD_64_SIZES = ([32, 32, 32, 16, 16, 16, 8, 8, 8, 4, 4, 1, 1, 4, 4, 4, 4]
                + [8] * 6 + [16] * 6 + [32] * 6 + [64] * 8)

# METHOD §2.2
ENC_128 = ["C4s2p1 3-32", "R", "C4s2p1 32-64", "R", "C4s2p1 64-128", "R", "C4s2p1 128-256", "R",
           "C4s2p1 256-512", "R", "C4s1p0 512-512", "R", "C1s1p0 512-COUT", "Tanh"]
ENC_64 = ["C4s2p1 3-64", "R", "C4s2p1 64-128", "R", "C4s2p1 128-256", "R", "C4s2p1 256-512", "R",
          "C4s1p0 512-512", "R", "C1s1p0 512-COUT", "Tanh"]
# METHOD §2.3
RES_128 = ["C4s2p1 3-32", "RB 32-64", "RB 64-128", "RB 128-256", "RB 256-512", "R", "C4s1p0 512-1024", "R",
           "C1s1p0 1024-512"]
RES_64 = ["C4s2p1 3-32", "RB 32-64", "RB 64-128", "RB 128-256", "R", "C4s1p0 256-512", "R", "C1s1p0 512-512"]


def test_widths():
    assert widths(128) == (32, 8, 5)
    assert widths(64) == (64, 16, 4)
    assert widths(32) == (128, 32, 3)
    with pytest.raises(ValueError):
        widths(48)


@pytest.mark.parametrize("size,spec,sizes", [(128, EDD_128, EDD_128_SIZES), (64, EDD_64, EDD_64_SIZES)])
def test_eddeconv_layer_list(size, spec, sizes):
    d = EDDeconv(cin=3, cout=1, size=size, zdim=256, activation=None)
    assert tokens(d.network) == [t.replace("COUT", "1") for t in spec]
    assert spatial_sizes(d, size) == sizes
    a = EDDeconv(cin=3, cout=3, size=size, zdim=256, activation="tanh")
    assert tokens(a.network) == [t.replace("COUT", "3") for t in spec] + ["Tanh"]
    # no biases anywhere in D/A: parameters = conv/convT weights + GN affine
    assert all(n.endswith("weight") or ".bias" in n and isinstance(d.network[int(n.split(".")[1])], nn.GroupNorm)
               for n, _ in d.named_parameters())


def test_eddeconv_param_count_128():
    d = EDDeconv(cout=1, size=128)
    convs = sum(m.weight.numel() for m in d.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
    gn = sum(2 * m.num_channels for m in d.modules() if isinstance(m, nn.GroupNorm))
    # hand count from the S=128 list
    enc = 16 * (3 * 32 + 32 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512 * 256)
    dec = (16 * 256 * 512 + 9 * 512 * 512 + 16 * (512 * 256 + 256 * 128 + 128 * 64 + 64 * 32)
           + 9 * (256 * 256 + 128 * 128 + 64 * 64 + 32 * 32) + 9 * 32 * 32 + 25 * 32 * 32 + 25 * 32)
    assert convs == enc + dec
    assert gn == 2 * (32 + 64 + 128 + 256 + 2 * (256 + 128 + 64 + 32) + 2 * 32)
    assert sum(p.numel() for p in d.parameters()) == convs + gn


@pytest.mark.parametrize("size,spec,sizes", [
    (128, ENC_128, [64, 64, 32, 32, 16, 16, 8, 8, 4, 4, 1, 1, 1, 1]),
    (64, ENC_64, [32, 32, 16, 16, 8, 8, 4, 4, 1, 1, 1, 1])])
def test_encoder_layer_list(size, spec, sizes):
    v = Encoder(cin=3, cout=6, size=size)
    assert tokens(v.network) == [t.replace("COUT", "6") for t in spec]
    assert spatial_sizes(v, size) == sizes


@pytest.mark.parametrize("size,spec,sizes", [(128, RES_128, [64, 32, 16, 8, 4, 4, 1, 1, 1]),
                                             (64, RES_64, [32, 16, 8, 4, 4, 1, 1, 1])])
def test_resencoder_layer_list(size, spec, sizes):
    e = ResEncoder(cin=3, cout=512, size=size)
    assert tokens(e.network) == spec
    assert spatial_sizes(e, size) == sizes
    for m in e.network:
        if isinstance(m, ResBlockDown):
            assert m.conv1.bias is None and m.conv2.bias is None and m.conv_sc.bias is not None
            assert m.conv1.stride == (2, 2) and m.conv2.stride == (1, 1) and m.conv_sc.kernel_size == (1, 1)
    assert e.network[0].bias is None and e.network[-1].bias is None


def test_resblockdown_inplace_relu_quirk():
    torch.manual_seed(0)
    blk = ResBlockDown(4, 8)
    x = torch.randn(2, 4, 8, 8)
    x0 = x.clone()
    out = blk(x)
    assert torch.equal(x, x0)  # the caller's tensor is not modified
    r = F.relu(x)
    branch = blk.conv2(F.relu(blk.conv1(r)))
    expected = branch + blk.conv_sc(F.avg_pool2d(r, 2))
    assert out.shape == (2, 8, 4, 4)
    assert torch.allclose(out, expected, atol=1e-6)
    # and differs from the "clean" block whose shortcut sees x itself
    clean = branch + blk.conv_sc(F.avg_pool2d(x, 2))
    assert not torch.allclose(out, clean, atol=1e-3)
    same = ResBlockDown(4, 4)
    assert same.conv_sc is None
    assert torch.allclose(same(x), same.conv2(F.relu(same.conv1(r))) + F.avg_pool2d(r, 2), atol=1e-6)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_build_networks_shapes(size):
    torch.manual_seed(0)
    nets = build_networks(size)
    assert list(nets.keys()) == ["netD", "netA", "netV", "netL", "netEnc"]
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        d, a = nets["netD"](x), nets["netA"](x)
        v, l, e = nets["netV"](x), nets["netL"](x), nets["netEnc"](x)
    assert d.shape == (2, 1, size, size)
    assert a.shape == (2, 3, size, size) and a.abs().max() <= 1
    assert v.shape == (2, 6) and v.abs().max() <= 1
    assert l.shape == (2, 4) and l.abs().max() <= 1
    assert e.shape == (2, 512)
    assert all(torch.isfinite(t).all() for t in (d, a, v, l, e))


def test_size_32_generalisation():
    d = EDDeconv(cout=1, size=32)
    toks = tokens(d.network)
    assert toks[:8] == ["C4s2p1 3-128", "GN32-128", "LR", "C4s2p1 128-256", "GN64-256", "LR",
                        "C4s2p1 256-512", "LR"]
    assert spatial_sizes(d, 32)[:10] == [16, 16, 16, 8, 8, 8, 4, 4, 1, 1]
    assert tokens(ResEncoder(size=32).network) == ["C4s2p1 3-32", "RB 32-64", "RB 64-128", "R",
                                                   "C4s1p0 128-256", "R", "C1s1p0 256-512"]


def test_depth_head_per_image_centering():
    torch.manual_seed(0)
    raw = torch.randn(1, 1, 8, 8)
    batch = torch.cat([raw, raw + 5.0], 0)
    depth = depth_head(batch)
    assert depth.shape == (2, 8, 8)
    assert torch.allclose(depth[0], depth[1], atol=1e-6)
    assert depth.min() >= 0.9 and depth.max() <= 1.1
    # batch result equals one-by-one; B×S×S input accepted
    one = torch.cat([depth_head(batch[i:i + 1]) for i in range(2)], 0)
    assert torch.allclose(depth, one, atol=1e-7)
    assert torch.allclose(depth_head(batch[:, 0]), depth)
    # known value: a centred raw value r maps to 1 + 0.1·tanh(r)
    r = torch.tensor([[[0.5, -0.5]]])
    assert torch.allclose(depth_head(r), 1 + 0.1 * torch.tanh(r), atol=1e-7)


def test_clamp_border_numbers():
    depth = torch.full((2, 6, 8), 1.0)
    depth[1] = 0.95
    out = clamp_border(depth)
    for b, dv in enumerate([1.0, 0.95]):
        border = 1.0608 - 0.02 * dv
        assert torch.allclose(out[b, :, :2], torch.full((6, 2), border), atol=1e-6)
        assert torch.allclose(out[b, :, -2:], torch.full((6, 2), border), atol=1e-6)
        assert torch.allclose(out[b, :, 2:-2], torch.full((6, 4), dv))
    assert torch.allclose(clamp_border(depth, border_depth=1.0, factor=1.0)[:, :, 0], torch.ones(2, 6))


def test_net_width_scales_every_channel_but_the_outputs():
    """--net-width 0.25 (the demo's pre-train): the S=64 lists with a quarter of the channels, the same
    output shapes, 1/16 of the parameters (to within the width-independent terms)."""
    d = EDDeconv(cout=1, size=64, width=0.25)
    assert tokens(d.network)[:8] == ["C4s2p1 3-16", "GN4-16", "LR", "C4s2p1 16-32", "GN8-32", "LR",
                                     "C4s2p1 32-64", "GN16-64"]
    assert "C4s1p0 128-64" in tokens(d.network)          # the bottleneck: zdim 256 x 0.25
    assert tokens(ResEncoder(size=64, width=0.25).network)[:2] == ["C4s2p1 3-8", "RB 8-16"]
    full, narrow = build_networks(64), build_networks(64, width=0.25)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 1 / 17 < count(narrow["netD"]) / count(full["netD"]) < 1 / 15
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert [tuple(n(x).shape) for n in narrow.values()] == [tuple(n(x).shape) for n in full.values()]
    assert widths(64, 0.5) == (32, 8, 4)
    with pytest.raises(ValueError, match="net width 0.3: nf 64 x 0.3"):
        build_networks(64, width=0.3)


def test_the_committed_demo_pretrain_loads_into_quarter_width_nets():
    """models/synthetic_v2_face2_pretrain_demo.pth (the demo's start `joint`): the hash its model card and
    config name, all five nets, strictly loadable into world v2's 64-px nets at the width the dataset says."""
    import hashlib
    import re
    from pathlib import Path

    import yaml

    from gan2shape.io import safe_torch_load

    repo = Path(__file__).resolve().parents[1]
    entry = yaml.safe_load((repo / "config/datasets.yaml").read_text())["synthetic-face2"]
    path = repo / entry["pretrain"]
    card = (repo / "models/README.md").read_text().split(f"`{path.name}`", 1)[1]
    recorded = re.search(r"sha256\s+`([0-9a-f]{64})`", card).group(1)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded
    state = safe_torch_load(path)
    nets = build_networks(64, latent_dim=128, width=entry["pretrain_net_width"])
    for name, net in nets.items():
        net.load_state_dict({k: v.float() for k, v in state[name].items()}, strict=True)
    with pytest.raises(RuntimeError):   # the original width does not fit it
        build_networks(64, latent_dim=128)["netD"].load_state_dict(state["netD"])
