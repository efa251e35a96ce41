"""Tests for gan2shape.method.priors (METHOD §2.6, EXTENSIONS §1)."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from gan2shape.method.priors import (PRIOR_NAMES, _bounding_boxes, _cap_t, box_prior, confidence_prior,
                              ellipsoid_prior, make_prior, masked_box_prior, prior_fits_depth_range,
                              smooth_prior, smoothed_box_prior)

NEAR, FAR = 0.91, 1.02
F32_FAR = torch.tensor(FAR, dtype=torch.float32).item()
F32_NEAR = torch.tensor(NEAR, dtype=torch.float32).item()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def disc(size=64, radius=16, cy=32.0, cx=32.0):
    i, j = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    return (((i - cy) ** 2 + (j - cx) ** 2) <= radius ** 2).float()


def rect(size=64, rows=(10, 40), cols=(12, 48)):
    m = torch.zeros(size, size)
    m[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = 1.0
    return m


def soft_disc(size=64, radius_frac=0.3, up=4):
    """Soft mask as the parse pipeline makes it: a hard disc at higher res, area-shrunk."""
    big = size * up
    c = (big - 1) / 2
    hard = disc(big, radius_frac * big, c, c)
    return F.interpolate(hard[None, None], size=size, mode="area")[0, 0]


def reference_ellipsoid(H, W, box, near=NEAR, far=FAR, R=0.4):
    """Per-pixel loop straight from METHOD §2.6."""
    y0, y1, x0, x1 = box
    r, ratio = (x1 - x0) / 2, (y1 - y0) / (x1 - x0)
    cx, cy = (x1 + x0) / 2, (y1 + y0) / 2
    t = math.sqrt(R ** 2 - (R - (far - near)) ** 2)
    out = torch.empty(H, W, dtype=torch.float64)
    for i in range(H):
        for j in range(W):
            ii = (i - H / 2) / ratio + H / 2
            d = math.sqrt((ii - cy) ** 2 + (j - cx) ** 2)
            out[i, j] = R - math.sqrt(abs(R ** 2 - (d * t / r) ** 2)) + near if d <= r else far
    return out


# ---------------------------------------------------------------- ellipsoid

def test_cap_t_constants():
    assert _cap_t(0.4, 0.91, 1.02) == pytest.approx(0.27550, abs=5e-6)
    assert _cap_t(0.4, 0.91, 1.0) == pytest.approx(0.25278, abs=5e-6)


def test_ellipsoid_disc_values():
    m = disc()
    p = ellipsoid_prior(m, category="cat")
    assert p.shape == (1, 64, 64) and p.dtype == torch.float32
    assert p.min().item() == pytest.approx(NEAR, abs=1e-3)
    assert p[0, 32, 32].item() == pytest.approx(NEAR, abs=1e-6)  # centre of the disc
    assert torch.all(p[0][m == 0] == F32_FAR)  # exactly far outside the disc
    assert p.min() >= F32_NEAR - 1e-6 and p.max() <= F32_FAR
    assert torch.all(p[0][m == 1] <= F32_FAR) and (p[0][m == 1] < F32_FAR - 1e-4).sum() > 700


BOX_MASK = dict(rows=(10, 40), cols=(12, 48))
EXPECTED_BOXES = {  # (y0, y1, x0, x1), hand-computed from METHOD §2.6 for rows 10..40, cols 12..48
    "cat": (10, 40, 12, 48),
    "horse": (10, 40, 12, 48),
    "other": (10, 40, 12, 48),
    "car": (10, 45, 12, 48),  # y1 + 30/6
    "church": (10, 45, 12, 48),
    "synface": (5, 40, 12, 48),  # y0 - 30/6
    "face": (10, 63, 15, 45),  # y1 -> H-1, x0 + 36/12, x1 - 36/12
}


@pytest.mark.parametrize("category", sorted(EXPECTED_BOXES))
def test_ellipsoid_category_boxes(category):
    m = rect(**BOX_MASK)
    box = _bounding_boxes(m, category)[0].tolist()
    assert box == pytest.approx(EXPECTED_BOXES[category])
    # replication mode drops every adjustment
    assert _bounding_boxes(m, category, adjust="replication")[0].tolist() == pytest.approx((10, 40, 12, 48))
    p = ellipsoid_prior(m, category=category)[0].double()
    torch.testing.assert_close(p, reference_ellipsoid(64, 64, EXPECTED_BOXES[category]), atol=1e-6, rtol=0)


def test_ellipsoid_adjustments_move_cap():
    m = rect(**BOX_MASK)
    rows_cat = (ellipsoid_prior(m, category="cat")[0] < F32_FAR).any(dim=1).nonzero()
    rows_car = (ellipsoid_prior(m, category="car")[0] < F32_FAR).any(dim=1).nonzero()
    assert rows_car.max() > rows_cat.max()
    cols_face = (ellipsoid_prior(m, category="face")[0] < F32_FAR).any(dim=0).nonzero()
    cols_cat = (ellipsoid_prior(m, category="cat")[0] < F32_FAR).any(dim=0).nonzero()
    assert cols_face.min() > cols_cat.min() and cols_face.max() < cols_cat.max()
    with pytest.raises(ValueError):
        ellipsoid_prior(m, adjust="bogus")


def test_ellipsoid_church_far_override():
    p = ellipsoid_prior(disc(), category="church", far=1.0)
    assert p.max().item() == pytest.approx(1.0, abs=1e-7)
    assert p.min().item() == pytest.approx(NEAR, abs=1e-3)
    assert prior_fits_depth_range(p)


def test_ellipsoid_vertical_stretch_quirk():
    # rows 10..40 (h = 30), cols 30..50 (w = 20): ratio 1.5, c_y = 25, c_x = 40
    m = rect(rows=(10, 40), cols=(30, 50))
    p = ellipsoid_prior(m, category="cat")[0]
    col = p[:, 40]
    # cap centre lands at S/2 + ratio*(c_y - S/2) = 32 + 1.5*(25 - 32) = 21.5, not at c_y = 25
    assert col[21].item() == pytest.approx(col[22].item(), abs=1e-7)
    assert int(col.argmin()) in (21, 22)
    assert col[25] > col[22]
    # cap rows: |(i - 32)/1.5 + 32 - 25| <= 10  ->  i in [6.5, 36.5]
    inside = (col < F32_FAR).nonzero().flatten().tolist()
    assert inside == list(range(7, 37))


def test_ellipsoid_batched_shapes_and_empty_mask():
    a, b = disc(), rect(**BOX_MASK)
    batch = ellipsoid_prior(torch.stack([a, b])[:, None], category="car")
    assert batch.shape == (2, 64, 64)
    torch.testing.assert_close(batch[0], ellipsoid_prior(a, category="car")[0])
    torch.testing.assert_close(batch[1], ellipsoid_prior(b[None], category="car")[0])
    with pytest.warns(UserWarning, match="no pixel"):
        p = ellipsoid_prior(torch.zeros(32, 32), category="cat")
    assert torch.isfinite(p).all() and prior_fits_depth_range(p)


# ---------------------------------------------------------------- masked box

def test_masked_box_clean_values():
    m = soft_disc()
    p = masked_box_prior(m)[0]
    assert torch.all(p[m == 1] == F32_NEAR)
    assert torch.all(p[m < 0.7] == F32_FAR)
    rim = (m >= 0.7) & (m < 1)
    assert rim.sum() > 0
    assert torch.all((p[rim] > F32_NEAR) & (p[rim] <= F32_FAR))
    strict = (m > 0.7) & (m < 1)
    assert torch.all((p[strict] > F32_NEAR) & (p[strict] < F32_FAR))
    torch.testing.assert_close(p[rim], FAR - (FAR - NEAR) * (m[rim] - 0.7) / 0.3)
    assert prior_fits_depth_range(p)


def test_masked_box_compat_reproduces_impl_and_warns():
    m = soft_disc()
    with pytest.warns(UserWarning, match="outside the depth"):
        p = masked_box_prior(m, compat=True)[0]
    assert torch.all(p[m == 1] == 0.0)
    torch.testing.assert_close(p[m < 0.7], torch.full_like(p[m < 0.7], 3.40))
    rim = (m >= 0.7) & (m < 1)
    torch.testing.assert_close(p[rim], FAR * (1 - (m[rim] - 0.7) / 0.3))
    assert torch.all((p[rim] > 0) & (p[rim] <= F32_FAR + 1e-6))
    assert not prior_fits_depth_range(p)


# ---------------------------------------------------------------- smoothing operator S

def test_smooth_range_frame_and_plateau():
    m = disc(64, 22, 31.5, 31.5)
    p = smoothed_box_prior(m)
    assert p.shape == (1, 64, 64)
    assert p.min().item() == pytest.approx(NEAR, abs=1e-6)
    assert p.max().item() == pytest.approx(FAR, abs=1e-6)
    assert p.min() >= F32_NEAR and p.max() <= F32_FAR
    frame = torch.ones(64, 64, dtype=torch.bool)
    frame[5:-5, 5:-5] = False
    assert torch.all(p[0][frame] == F32_FAR)
    assert p[0, 31, 31].item() == pytest.approx(NEAR, abs=1e-6)  # deep inside


def test_smooth_profile_across_disc():
    # EXTENSIONS §1.4 example: 1.02 ... ramp ... 0.91 plateau ... ramp ... 1.02, ~15 px each side
    S, R = 128, 40
    p = smoothed_box_prior(disc(S, R, 63.5, 63.5))[0]
    row = p[64]
    left, right = row[:64], row[64:]
    assert torch.all(left[1:] <= left[:-1] + 1e-7) and torch.all(right[1:] >= right[:-1] - 1e-7)
    edge = 63.5 - R  # boundary column 23.5
    cols = torch.arange(64, dtype=torch.float32)
    assert torch.all(left[cols < edge - 16] > FAR - 1.5e-3)  # background: far
    assert torch.all(left[cols > edge + 16] < NEAR + 1.5e-3)  # interior plateau: near
    ramp = (left > NEAR + 5e-3) & (left < FAR - 5e-3)
    assert 12 <= int(ramp.sum()) <= 30
    assert NEAR + 0.02 < row[int(edge)].item() < FAR - 0.02
    torch.testing.assert_close(row, row.flip(0), atol=1e-6, rtol=0)  # symmetric disc


def test_smooth_constant_and_degenerate_inputs():
    for x in (torch.full((1, 32, 32), 0.95), torch.zeros(2, 11, 11)):
        out = smooth_prior(x)
        assert not torch.isnan(out).any()
        assert torch.all(out == F32_FAR)
    assert torch.all(smoothed_box_prior(torch.zeros(24, 24)) == F32_FAR)  # empty mask
    with pytest.raises(ValueError):
        smooth_prior(torch.rand(1, 10, 32))
    with pytest.raises(ValueError):
        smooth_prior(torch.rand(1, 32, 32), kernel_size=10)


def test_smooth_batch_equals_per_image_and_nonsquare():
    imgs = torch.stack([disc(40, 12, 20, 20), rect(40, (5, 30), (8, 20)), torch.rand(40, 40)])
    batch = smoothed_box_prior(imgs[:, None])
    for k in range(3):
        torch.testing.assert_close(batch[k], smoothed_box_prior(imgs[k])[0], atol=0, rtol=0)
    out = smooth_prior(torch.rand(2, 20, 37) + 0.9)
    assert out.shape == (2, 20, 37) and prior_fits_depth_range(out)


def test_smoothed_box_compat_vs_clean():
    """What holds (S rescales min-max after a linear box filter, so affine maps of its input cancel):
    * hard masks (each pixel < τ or = 1): compat and clean differ by a decreasing affine map
      (m̃ ∈ {-7/3, 1} vs {0, 1}) -> identical smoothed priors (up to float rounding);
    * soft masks: background m̃ = -7/3 (compat) vs 0 (clean) while rim m̃ ∈ [0, 1) is shared, so the
      maps are not affinely related and the smoothed priors differ slightly near the outline.
    Both are in range either way."""
    hard = disc(64, 20, 31.5, 31.5)
    torch.testing.assert_close(smoothed_box_prior(hard, compat=True), smoothed_box_prior(hard),
                               atol=1e-5, rtol=0)
    soft = soft_disc(64, 0.3)
    a, b = smoothed_box_prior(soft, compat=True), smoothed_box_prior(soft)
    diff = (a - b).abs().max().item()
    assert 1e-4 < diff < 5e-3
    assert prior_fits_depth_range(a) and prior_fits_depth_range(b)


# ---------------------------------------------------------------- confidence

def test_confidence_clean_compat_and_smoothed():
    c = torch.rand(1, 32, 32)
    c[0, 20, 7] = 1.0
    c[0, 3, 3] = 0.0
    p = confidence_prior(c, smoothed=False)
    assert p.min() >= F32_NEAR - 1e-6 and p.max() <= F32_FAR + 1e-6
    assert int(p.flatten().argmin()) == int(c.flatten().argmax())
    assert p[0, 20, 7].item() == pytest.approx(NEAR, abs=1e-6) and p[0, 3, 3].item() == pytest.approx(FAR)
    assert prior_fits_depth_range(p)
    with pytest.warns(UserWarning, match="outside the depth"):
        pc = confidence_prior(c, smoothed=False, compat=True)
    torch.testing.assert_close(pc, FAR - FAR * c)
    assert not prior_fits_depth_range(pc)
    # smoothed: in range; compat == clean since both are decreasing affine maps of c
    c2 = soft_disc(48, 0.3)[None] * 0.8 + 0.2 * torch.rand(1, 48, 48)
    ps = confidence_prior(c2)
    assert prior_fits_depth_range(ps) and ps.min().item() == pytest.approx(NEAR, abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # smoothed compat is in range: no warning
        ps_c = confidence_prior(c2, compat=True)
    torch.testing.assert_close(ps_c, ps, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- box, factory, range check

def test_box_prior_depth_units():
    p = box_prior((2, 20, 40))
    assert p.shape == (2, 20, 40)
    assert torch.all(p[:, 2:18, 10:30] == F32_NEAR)
    assert (p == F32_NEAR).sum() == 2 * 16 * 20 and (p == F32_FAR).sum() == 2 * 20 * 40 - 2 * 16 * 20
    assert box_prior(16).shape == (1, 16, 16) and prior_fits_depth_range(p)


def test_make_prior_dispatch():
    m = soft_disc(32, 0.3)[None, None]
    c = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(make_prior("ellipsoid", m, category="face"), ellipsoid_prior(m, category="face"))
    torch.testing.assert_close(make_prior("ellipsoid", m, adjust="replication", radius=0.5),
                               ellipsoid_prior(m, radius=0.5, adjust="replication"))
    torch.testing.assert_close(make_prior("masked_box", m), masked_box_prior(m))
    torch.testing.assert_close(make_prior("smoothed_box", m, passes=2), smoothed_box_prior(m, passes=2))
    torch.testing.assert_close(make_prior("confidence", confidence=c), confidence_prior(c, smoothed=False))
    torch.testing.assert_close(make_prior("smoothed_confidence", confidence=c), confidence_prior(c))
    torch.testing.assert_close(make_prior("box", m), box_prior((1, 32, 32)))
    torch.testing.assert_close(make_prior("box", shape=(3, 16, 16)), box_prior((3, 16, 16)))
    with pytest.warns(UserWarning):
        assert make_prior("masked_box", m, compat=True).max().item() == pytest.approx(3.40)
    assert make_prior("none") is None and make_prior("none", m) is None
    with pytest.raises(ValueError) as e:
        make_prior("sphere", m)
    assert all(n in str(e.value) for n in PRIOR_NAMES)
    with pytest.raises(ValueError, match="confidence"):
        make_prior("smoothed_confidence", m)
    with pytest.raises(ValueError, match="confidence"):
        make_prior("confidence", mask=m)
    for name in ("ellipsoid", "masked_box", "smoothed_box"):
        with pytest.raises(ValueError, match="mask"):
            make_prior(name, confidence=c)
    with pytest.raises(ValueError):
        make_prior("box")


@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_every_default_prior_fits_depth_range(name):
    masks = torch.stack([soft_disc(48, 0.3), rect(48, (6, 30), (10, 40)), torch.zeros(48, 48)])[:, None]
    conf = torch.rand(3, 1, 48, 48)
    cats = ("car", "church", "face", "synface", "cat", "horse") if name == "ellipsoid" else ("car",)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty-mask warning of the ellipsoid
        for cat in cats:
            for adjust in ("original", "replication"):
                far = 1.0 if cat == "church" else FAR
                p = make_prior(name, masks, conf, category=cat, adjust=adjust, far=far)
                if name == "none":
                    assert p is None
                    continue
                assert p.shape == (3, 48, 48) and p.dtype == torch.float32 and not p.requires_grad
                assert prior_fits_depth_range(p), (name, cat, adjust)


def test_dtype_grad_and_range_check():
    m = disc(32, 8, 16, 16).double().requires_grad_()
    p = smoothed_box_prior(m)
    assert p.dtype == torch.float32 and not p.requires_grad
    assert not prior_fits_depth_range(torch.tensor([0.9, 1.0]))  # tanh never reaches the endpoints
    assert not prior_fits_depth_range(torch.tensor([float("nan"), 1.0]))
    assert prior_fits_depth_range(torch.tensor([0.91, 1.02])) and prior_fits_depth_range(None)
