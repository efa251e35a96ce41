"""SIDE / MAD and the eroded masks of METHOD §8 on hand-computed cases."""

import math

import torch

from gan2shape.method.metrics import depth_metrics, erode_mask, gt_mask, mad, side


def fd_normals(depth: torch.Tensor) -> torch.Tensor:
    """Orthographic test normals: points (c, r, z), central differences, border (0, 0, 1)."""
    b, h, w = depth.shape
    r, c = torch.meshgrid(torch.arange(h, dtype=depth.dtype), torch.arange(w, dtype=depth.dtype), indexing="ij")
    p = torch.stack([c.expand(b, h, w), r.expand(b, h, w), depth], -1)
    tu = p[:, 1:-1, 2:] - p[:, 1:-1, :-2]
    tv = p[:, 2:, 1:-1] - p[:, :-2, 1:-1]
    n = torch.cross(tu, tv, dim=-1)
    n = n / (n.norm(dim=-1, keepdim=True) + 1e-7)
    out = torch.zeros(b, h, w, 3, dtype=depth.dtype)
    out[..., 2] = 1
    out[:, 1:-1, 1:-1] = n
    return out


def test_erode_mask_square():
    m = torch.zeros(1, 8, 8)
    m[0, 2:6, 2:6] = 1
    e = erode_mask(m)
    expected = torch.zeros(1, 8, 8)
    expected[0, 3:5, 3:5] = 1
    assert e.shape == (1, 8, 8) and e.dtype == torch.float32
    assert torch.equal(e, expected)
    assert torch.equal(erode_mask(m.unsqueeze(1).bool()), expected.unsqueeze(1))
    # zero padding: a full mask loses its 1-px image border
    full = erode_mask(torch.ones(1, 5, 5))
    assert full.sum() == 9 and full[0, 1:4, 1:4].all()


def test_gt_mask_excludes_background():
    d = torch.full((2, 8, 8), 1.1)
    d[0, 1:7, 1:7] = 0.95
    d[1, 2:6, 2:6] = 1.0
    d[1, 3, 3] = 0.9
    m = gt_mask(d)
    exp0 = torch.zeros(8, 8)
    exp0[2:6, 2:6] = 1
    exp1 = torch.zeros(8, 8)
    exp1[3:5, 3:5] = 1
    assert torch.equal(m[0], exp0) and torch.equal(m[1], exp1)
    assert gt_mask(d.unsqueeze(1)).shape == (2, 1, 8, 8)


def test_side():
    torch.manual_seed(0)
    gt = 0.9 + 0.2 * torch.rand(2, 6, 6)
    mask = torch.ones(2, 6, 6)
    mask[1, :3] = 0
    assert torch.allclose(side(gt, gt, mask), torch.zeros(2))
    assert torch.allclose(side(gt * 1.1, gt, mask), torch.zeros(2), atol=1e-6)
    pred = gt * (1 + 0.05 * torch.rand(2, 6, 6))
    assert (side(pred, gt, mask) > 0).all()
    # known pattern: log-difference ±a on half of the valid pixels -> std = a
    a = 0.1
    delta = torch.full((1, 4, 4), a)
    delta[0, :, 2:] = -a
    delta[0, 3] = 5.0            # outside the mask
    m = torch.ones(1, 4, 4)
    m[0, 3] = 0
    g = torch.ones(1, 4, 4)
    assert torch.allclose(side(g * torch.exp(delta), g, m), torch.tensor([a]), atol=1e-6)
    # non-symmetric pattern: values 0, 0, 0, 1 (+0.3 offset) -> population std sqrt(3)/4
    d2 = torch.tensor([[[0.3, 0.3], [0.3, 1.3]]])
    assert torch.allclose(side(torch.exp(d2), torch.ones(1, 2, 2), torch.ones(1, 2, 2)),
                          torch.tensor([math.sqrt(3) / 4]), atol=1e-6)


def test_mad_tilted_plane():
    s = 10
    c = torch.arange(s, dtype=torch.float64).view(1, 1, s)
    t = 0.5
    tilted = (1.0 + t * c).expand(1, s, s).clone()
    flat = torch.ones(1, s, s, dtype=torch.float64)
    mask = erode_mask(torch.ones(1, s, s)).double()  # interior: skip the (0,0,1) border normals
    ang = mad(fd_normals(tilted), fd_normals(flat), mask)
    assert torch.allclose(ang, torch.tensor([math.degrees(math.atan(t))], dtype=torch.float64), atol=1e-6)
    # identical: ~0 (the 1e-7 in the normalisation leaves |n| < 1, and acos(1 - ε) ≈ sqrt(2ε))
    assert torch.allclose(mad(fd_normals(tilted), fd_normals(tilted), mask), torch.zeros(1, dtype=torch.float64),
                          atol=0.05)
    # identical unit normals: ~0 (float32 acos near 1), the clamp keeps it finite
    n = torch.nn.functional.normalize(torch.randn(2, 4, 4, 3), dim=-1)
    assert torch.allclose(mad(n, n, torch.ones(2, 4, 4)), torch.zeros(2), atol=0.05)
    # opposite normals: 180°
    assert torch.allclose(mad(n, -n, torch.ones(2, 1, 4, 4)), torch.full((2,), 180.0), atol=0.05)


def test_depth_metrics():
    s = 12
    gt = torch.full((2, s, s), 1.1)
    gt[:, 2:10, 2:10] = 0.95
    gt[1, 4:8, 4:8] = 1.0
    recon = gt * 1.05
    recon[0, :, :3] = 5.0             # invalid (background) in the reconstruction
    out = depth_metrics(recon, gt, fd_normals)
    assert set(out) >= {"side", "mad", "mae", "mse"}
    m = out["mask"]
    exp = gt_mask(gt) * erode_mask((recon < 1.2).float())
    assert torch.equal(m, exp)
    assert m[0, :, :4].sum() == 0 and m[0].sum() == 6 * 5 and m[1].sum() == 6 * 6
    assert torch.allclose(out["side"], torch.zeros(2), atol=1e-6)
    assert out["mae"].shape == (2,)
    assert torch.allclose(out["mae"][0], torch.tensor(0.05 * 0.95), atol=1e-6)
    assert torch.allclose(out["mse"][0], torch.tensor((0.05 * 0.95) ** 2), atol=1e-7)
    same = depth_metrics(gt, gt, fd_normals)
    assert torch.allclose(same["mad"], torch.zeros(2), atol=0.05)
    assert torch.allclose(same["mae"], torch.zeros(2))
