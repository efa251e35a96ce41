"""Tests for gan2shape.method.renderer (METHOD §3). CPU, tiny, seeded."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gan2shape.method.renderer import (
    Renderer,
    compose_texture,
    grid_faces,
    light_to_physical,
    rotation_matrix,
    shade,
    view_to_physical,
)

DT = torch.float64


def _view(rx=0.0, ry=0.0, rz=0.0, tx=0.0, ty=0.0, tz=0.0, dtype=DT):
    return torch.tensor([[rx, ry, rz, tx, ty, tz]], dtype=dtype)


def _ray_x(r: Renderer, u):
    """Normalised image-plane coordinate x = (u − cx)/fx."""
    return (u - r.cx) / r.fx


# --------------------------------------------------------------------------- camera & geometry
def test_intrinsics_match_spec():
    r128, r64 = Renderer(128), Renderer(64)
    assert r128.K[0, 0].item() == pytest.approx(725.808, abs=1e-3)
    assert r128.K[1, 1].item() == pytest.approx(725.808, abs=1e-3)
    assert r128.K[0, 2].item() == r128.K[1, 2].item() == 63.5
    assert r64.K[0, 0].item() == pytest.approx(360.047, abs=1e-3)
    assert r64.K[0, 2].item() == r64.K[1, 2].item() == 31.5
    assert torch.allclose(r64.inv_K @ r64.K, torch.eye(3, dtype=DT))
    # no parameters, and nothing leaks into checkpoints
    assert len(list(r64.parameters())) == 0 and len(r64.state_dict()) == 0


def test_rotation_matrix_order_and_orthonormal():
    torch.manual_seed(0)
    a = torch.rand(4, 3, dtype=DT) * 2 - 1
    R = rotation_matrix(a[:, 0], a[:, 1], a[:, 2])

    def rx(t):
        c, s = math.cos(t), math.sin(t)
        return torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=DT)

    def ry(t):
        c, s = math.cos(t), math.sin(t)
        return torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=DT)

    def rz(t):
        c, s = math.cos(t), math.sin(t)
        return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=DT)

    for b in range(4):
        x, y, z = a[b].tolist()
        assert torch.allclose(R[b], rz(z) @ ry(y) @ rx(x), atol=1e-12)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=DT).expand(4, 3, 3), atol=1e-12)
    # yaw +90°: x axis → −z
    R90 = rotation_matrix(*torch.tensor([[0.0], [math.pi / 2], [0.0]], dtype=DT))
    assert torch.allclose(R90[0] @ torch.tensor([1.0, 0, 0], dtype=DT),
                          torch.tensor([0.0, 0, -1], dtype=DT), atol=1e-12)


def test_view_to_physical_scaling():
    raw = torch.tensor([[1.0, -0.5, 0.25, 1.0, -1.0, 1.0]])
    v = view_to_physical(raw)
    exp = torch.tensor([[math.pi / 3, -math.pi / 6, math.pi / 12, 0.1, -0.1, 0.0]])
    assert torch.allclose(v, exp, atol=1e-6)
    assert view_to_physical(raw, z_range=0.2)[0, 5].item() == pytest.approx(0.2)
    assert view_to_physical(raw, rot_range_deg=30.0)[0, 0].item() == pytest.approx(math.pi / 6)


def test_light_to_physical():
    k_a, k_d, d = light_to_physical(torch.zeros(2, 4))
    assert torch.allclose(k_a, torch.full((2,), 0.5)) and torch.allclose(k_d, torch.full((2,), 0.5))
    assert torch.allclose(d, torch.tensor([[0.0, 0, 1]]).expand(2, 3))
    k_a, k_d, d = light_to_physical(torch.tensor([[0.2, -0.4, 1.0, 1.0]]))
    assert k_a.item() == pytest.approx(0.6) and k_d.item() == pytest.approx(0.3)
    assert torch.allclose(d, torch.ones(1, 3) / math.sqrt(3))


def test_shade_and_compose_texture():
    n = torch.zeros(1, 2, 2, 3)
    n[0, 0, 0] = torch.tensor([0.0, 0, 1])
    n[0, 0, 1] = torch.tensor([1.0, 0, 0])
    n[0, 1, 0] = torch.tensor([-1.0, 0, 0])
    n[0, 1, 1] = torch.tensor([0.0, 1, 0])
    direction = torch.tensor([[0.6, 0.0, 0.8]])
    shading, s_diff = shade(n, torch.tensor([0.2]), torch.tensor([0.5]), direction)
    assert s_diff.shape == shading.shape == (1, 1, 2, 2)
    assert torch.allclose(s_diff[0, 0], torch.tensor([[0.8, 0.6], [0.0, 0.0]]))
    assert torch.allclose(shading[0, 0], torch.tensor([[0.6, 0.5], [0.2, 0.2]]))
    albedo = torch.tensor([-1.0, 0.0, 1.0, 0.5]).view(1, 1, 2, 2)
    tex = compose_texture(albedo, torch.tensor([1.0, 1.0, 0.5, 2.0]).view(1, 1, 2, 2))
    assert torch.allclose(tex.flatten(), torch.tensor([-1.0, 0.0, 0.0, 2.0]))


def test_faces_layout():
    S = 5
    f = grid_faces(S)
    assert f.shape == (2 * (S - 1) ** 2, 3)
    assert f[0].tolist() == [0, S, 1]                       # (TL, BL, TR) of quad (0, 0)
    assert f[(S - 1) ** 2].tolist() == [1, S, S + 1]        # (TR, BL, BR) of quad (0, 0)
    assert f[1].tolist() == [1, S + 1, 2]
    assert torch.equal(Renderer(S).faces, f)


def test_lift_project_roundtrip_identity_grid():
    S = 16
    r = Renderer(S)
    torch.manual_seed(0)
    depth = 0.9 + 0.2 * torch.rand(2, S, S, dtype=DT)
    P = r.depth_to_3d(depth)
    assert P.shape == (2, S, S, 3)
    assert torch.allclose(P[..., 2], depth)
    assert torch.allclose(P[0, 3, 7, 0], depth[0, 3, 7] * (7 - r.cx) / r.fx)
    assert torch.allclose(P[0, 3, 7, 1], depth[0, 3, 7] * (3 - r.cx) / r.fx)
    grid = r.project_to_grid(P)
    lin = torch.linspace(-1, 1, S, dtype=DT)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    assert torch.allclose(grid, torch.stack([gx, gy], -1).expand(2, S, S, 2), atol=1e-12)
    # identity view: forward and inverse warp grids are the identity too
    assert torch.allclose(r.forward_warp_grid(depth, _view().expand(2, 6)), grid, atol=1e-12)
    assert torch.allclose(r.inverse_warp_grid(depth, _view().expand(2, 6)), grid, atol=1e-12)


def test_transform_inverse_roundtrip():
    r = Renderer(16)
    torch.manual_seed(1)
    pts = torch.randn(3, 16, 16, 3, dtype=DT) * 0.1 + torch.tensor([0, 0, 1.0], dtype=DT)
    view = torch.randn(3, 6, dtype=DT) * 0.3
    out = r.transform(pts, view)
    assert torch.allclose(r.inverse_transform(out, view), pts, atol=1e-12)
    assert not torch.allclose(out, pts)
    # the rotation centre C = (0, 0, 1) moves only by T
    C = torch.tensor([0.0, 0.0, 1.0], dtype=DT).expand(3, 1, 3)
    assert torch.allclose(r.transform(C, view), C + view[:, None, 3:6], atol=1e-12)
    # yaw +90° about C: C + (0.1, 0, 0) → C + (0, 0, −0.1)
    p = torch.tensor([[[0.1, 0.0, 1.0]]], dtype=DT)
    q = r.transform(p, _view(ry=math.pi / 2))
    assert torch.allclose(q, torch.tensor([[[0.0, 0.0, 0.9]]], dtype=DT), atol=1e-12)


# --------------------------------------------------------------------------- depth rendering
def test_identity_plane_faithful_last_row_col_invalid():
    S = 16
    r = Renderer(S)
    rd = r.warp_canon_depth(torch.ones(2, S, S), torch.zeros(2, 6))
    exp_valid = torch.ones(S, S, dtype=torch.bool)
    exp_valid[-1, :] = False
    exp_valid[:, -1] = False
    assert torch.allclose(rd[:, exp_valid], torch.ones(()), atol=1e-6)
    assert torch.all((rd[:, ~exp_valid] - 1.2).abs() < 1e-6)
    _, _, mask = r.render(torch.zeros(2, 3, S, S), torch.ones(2, S, S), torch.zeros(2, 6))
    assert torch.equal(mask[:, 0].bool(), exp_valid.expand(2, S, S))
    assert not mask.requires_grad


def test_identity_plane_64px():
    S = 64
    r = Renderer(S)
    rd = r.warp_canon_depth(torch.ones(1, S, S), torch.zeros(1, 6))
    assert (rd[:, :-1, :-1] - 1).abs().max() < 1e-6
    assert torch.all(rd[:, -1] > 1.19) and torch.all(rd[:, :, -1] > 1.19)


def test_batch_equals_single_renders():
    S = 16
    r = Renderer(S)
    torch.manual_seed(3)
    depth = _bump(S).expand(3, S, S) + 0.01 * torch.rand(3, S, S)
    tex = torch.rand(3, 3, S, S) * 2 - 1
    view = 0.1 * torch.randn(3, 6)
    im, rd, mask = r.render(tex, depth, view)
    for b in range(3):
        im1, rd1, mask1 = r.render(tex[b:b + 1], depth[b:b + 1], view[b:b + 1])
        assert torch.allclose(im[b:b + 1], im1, atol=1e-6)
        assert torch.allclose(rd[b:b + 1], rd1, atol=1e-6)
        assert torch.equal(mask[b:b + 1], mask1)
    assert not torch.allclose(rd[0], rd[1])


def test_identity_plane_clean_all_valid():
    S = 16
    r = Renderer(S, faithful=False)
    rd = r.warp_canon_depth(torch.ones(1, S, S), torch.zeros(1, 6))
    assert torch.allclose(rd, torch.ones(()), atol=1e-6)


def _bump(S, amp=0.05, dtype=torch.float32, off=0.0):
    """Gentle Gaussian bump, sampled at pixel positions shifted by ``off`` (in pixels)."""
    lin = -1 + 2 * (torch.arange(S, dtype=dtype) + off) / (S - 1)
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    return (1.0 + amp * torch.exp(-(x ** 2 + y ** 2) / 0.3)).unsqueeze(0)


@pytest.mark.parametrize("faithful", [True, False])
def test_identity_render_reproduces_texture(faithful):
    S = 16
    r = Renderer(S, faithful=faithful)
    torch.manual_seed(0)
    tex = torch.rand(1, 3, S, S) * 1.8 - 0.9
    for depth in (torch.ones(1, S, S), _bump(S)):
        im, rd, mask = r.render(tex, depth, torch.zeros(1, 6))
        m = mask.expand_as(im).bool()
        assert m[:, :, 1:-1, 1:-1].all()
        assert torch.allclose(im[m], tex[m], atol=1e-4)
    # the bump's rendered depth is the input depth sampled at the output pixel centres:
    # (c + 0.5, r + 0.5) when faithful, (c, r) when clean (up to the mesh's linear interpolation)
    rd = r.warp_canon_depth(_bump(S), torch.zeros(1, 6))
    exp = _bump(S, off=0.5 if faithful else 0.0)
    assert (rd - exp)[:, 1:-1, 1:-1].abs().max() < 2e-3


def _interior_valid(mask):
    """Valid pixels whose 4-neighbours are valid too (``B×S×S`` bool)."""
    m = mask[:, 0] > 0.5
    e = m.clone()
    e[:, 1:] &= m[:, :-1]
    e[:, :-1] &= m[:, 1:]
    e[:, :, 1:] &= m[:, :, :-1]
    e[:, :, :-1] &= m[:, :, 1:]
    e[:, 0] = e[:, -1] = e[:, :, 0] = e[:, :, -1] = False
    return e


@pytest.mark.parametrize("theta", [0.5, -0.3])
def test_yaw_rotated_plane_matches_ray_plane_intersection(theta):
    S = 32
    r = Renderer(S)
    view = _view(ry=theta)
    rd = r.warp_canon_depth(torch.ones(1, S, S, dtype=DT), view)
    # rotated plane: passes through C = (0, 0, 1), normal n = Ry(θ)·e_z = (sin θ, 0, cos θ);
    # ray (x, y, 1) hits it at z = cos θ / (sin θ·x + cos θ). NR samples u = c + 0.25, c + 0.75.
    c = torch.arange(S, dtype=DT)

    def z_at(u):
        x = _ray_x(r, u)
        return math.cos(theta) / (math.sin(theta) * x + math.cos(theta))

    exp = ((z_at(c + 0.25) + z_at(c + 0.75)) / 2).expand(1, S, S)
    inner = _interior_valid(r.valid_mask(rd))
    assert inner.sum() > 0.6 * S * S
    assert torch.allclose(rd[inner], exp[inner], atol=1e-4)
    # foreshortening: the side turned away from the camera loses columns
    assert r.valid_mask(rd).sum() < (S - 1) ** 2


def test_clean_mode_rotated_plane_lifts_back_onto_the_canonical_plane():
    S = 32
    r = Renderer(S, faithful=False)
    view = _view(rx=0.2, ry=-0.4, rz=0.3)
    rd = r.warp_canon_depth(torch.ones(1, S, S, dtype=DT), view)
    canon = r.inverse_transform(r.depth_to_3d(rd), view)
    inner = _interior_valid(r.valid_mask(rd))
    assert inner.sum() > 0.5 * S * S
    assert (canon[..., 2][inner] - 1).abs().max() < 1e-4


def test_translation_shifts_render_by_t_fx_over_z():
    S = 32
    r = Renderer(S)
    tx, ty = 0.02, -0.01
    sx, sy = tx * r.fx, ty * r.fx  # pixel shift at z = 1
    c = torch.arange(S, dtype=DT)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    # a texture linear in (u, v): bilinear sampling is exact
    tex = torch.stack([(xx - 16) / 20, (yy - 16) / 20, 0 * xx]).unsqueeze(0)
    im, rd, mask = r.render(tex, torch.ones(1, S, S, dtype=DT), _view(tx=tx, ty=ty))
    # the surface covers u ∈ [sx, S−1+sx]; pixel c is valid iff both of its samples are inside
    col_ok = (c + 0.25 >= sx) & (c + 0.75 <= S - 1 + sx)
    row_ok = (c + 0.25 >= sy) & (c + 0.75 <= S - 1 + sy)
    assert torch.equal(mask[0, 0].bool(), row_ok[:, None] & col_ok[None, :])
    m = mask[0, 0].bool()
    assert (rd[0][m] - 1).abs().max() < 1e-6
    assert torch.allclose(im[0, 0][m], ((xx - sx - 16) / 20)[m], atol=1e-5)
    assert torch.allclose(im[0, 1][m], ((yy - sy - 16) / 20)[m], atol=1e-5)


def test_forward_warp_grid_matches_projection_of_warped_points():
    S = 16
    r = Renderer(S)
    depth = _bump(S, dtype=DT)
    view = _view(ry=0.3, tx=0.01)
    grid = r.forward_warp_grid(depth, view)
    # canonical centre pixel (on the bump's top) moves right under a positive yaw + tx
    P = r.transform(r.depth_to_3d(depth), view)
    u = r.fx * P[..., 0] / P[..., 2] + r.cx
    assert torch.allclose(grid[..., 0], 2 * u / (S - 1) - 1, atol=1e-12)
    # warping a mask into the canonical frame with the identity view is the identity
    mask = (torch.rand(1, 1, S, S) > 0.5).to(DT)
    g0 = r.forward_warp_grid(depth, _view())
    assert torch.allclose(F.grid_sample(mask, g0, align_corners=True), mask, atol=1e-12)


# --------------------------------------------------------------------------- normals
def _unit(n):
    return n / n.norm(dim=-1, keepdim=True)


def test_normals_fronto_parallel_plane():
    S, z = 16, 1.05
    r = Renderer(S)
    n = r.normals(torch.full((2, S, S), z, dtype=DT))
    assert n.shape == (2, S, S, 3)
    assert torch.allclose(_unit(n), torch.tensor([0.0, 0, 1], dtype=DT).expand(2, S, S, 3))
    # spec normalisation n / (|n| + 1e-7) with |t_u × t_v| = 4z²/fx² (slightly shorter than 1)
    m = 4 * z * z / r.fx ** 2
    assert torch.allclose(n[:, 1:-1, 1:-1, 2], torch.tensor(m / (m + 1e-7), dtype=DT))
    assert torch.all(n[:, 0, :, 2] == 1) and torch.all(n[:, :, -1, 2] == 1)


def test_normals_tilted_plane():
    S = 16
    r = Renderer(S)
    a = 0.5
    c = torch.arange(S, dtype=DT)
    x = _ray_x(r, c).expand(S, S)
    depth = (1.0 / (1.0 - a * x)).unsqueeze(0)  # plane Z = 1 + a·X
    n = r.normals(depth)
    exp = torch.tensor([-a, 0.0, 1.0], dtype=DT) / math.sqrt(1 + a * a)
    assert torch.allclose(_unit(n[0, 1:-1, 1:-1]), exp.expand(S - 2, S - 2, 3), atol=1e-9)
    assert torch.allclose(n[0, 0], torch.tensor([0.0, 0, 1], dtype=DT).expand(S, 3))


def test_normals_sphere_cap():
    S = 32
    r = Renderer(S)
    Zc, R = 1.2, 0.3
    c = torch.arange(S, dtype=DT)
    yy, xx = torch.meshgrid(_ray_x(r, c), _ray_x(r, c), indexing="ij")
    d2 = xx ** 2 + yy ** 2 + 1
    z = (Zc - torch.sqrt(Zc ** 2 - d2 * (Zc ** 2 - R ** 2))) / d2  # nearest ray-sphere hit
    n = r.normals(z.unsqueeze(0))[0]
    P = r.depth_to_3d(z.unsqueeze(0))[0]
    exp = (torch.tensor([0, 0, Zc], dtype=DT) - P) / R  # +z convention: away from the camera
    cos = (_unit(n) * exp).sum(-1)[1:-1, 1:-1]
    assert torch.rad2deg(torch.arccos(cos.clamp(max=1))).max() < 1.0
    assert (n[1:-1, 1:-1, 2] > 0.9).all()


# --------------------------------------------------------------------------- colour meshes
@pytest.mark.parametrize("faithful", [True, False])
def test_render_mesh_colors_identity_and_background(faithful):
    S = 16
    r = Renderer(S, faithful=faithful)
    c = torch.arange(S, dtype=DT)
    yy, xx = torch.meshgrid(c, c, indexing="ij")

    def colors(u, v):
        return torch.stack([u / S - 0.5, v / S - 0.5, 0.3 * u / S - 0.2 * v / S]).unsqueeze(0)

    img = r.render_mesh_colors(torch.ones(1, S, S, dtype=DT), colors(xx, yy), _view())
    assert img.shape == (1, 3, S, S)
    off = 0.5 if faithful else 0.0  # faithful output pixels are centred at (c + 0.5, r + 0.5)
    exp = colors(xx + off, yy + off)
    assert torch.allclose(img[..., 1:-1, 1:-1], exp[..., 1:-1, 1:-1], atol=1e-5)
    # shift the plane right by ~5 px: the uncovered left columns are white
    img = r.render_mesh_colors(torch.ones(1, S, S, dtype=DT), colors(xx, yy),
                               _view(tx=5.0 / r.fx))
    assert torch.all(img[..., :4] == 1.0)
    assert img.min() >= -1 and img.max() <= 1


# --------------------------------------------------------------------------- gradients
def _step3_loss(r, depth, albedo, view_raw, light_raw, w):
    view = view_to_physical(view_raw)
    k_a, k_d, direction = light_to_physical(light_raw)
    shading, _ = shade(r.normals(depth), k_a, k_d, direction)
    tex = compose_texture(albedo, shading)
    im, _, mask = r.render(tex, depth, view)
    return (im * w * mask).sum()


def _fd(f, x, idx, h=1e-6):
    xp, xm = x.detach().clone(), x.detach().clone()
    xp.view(-1)[idx] += h
    xm.view(-1)[idx] -= h
    return (f(xp) - f(xm)).item() / (2 * h)


def test_gradients_match_finite_differences_float64():
    S = 10
    r = Renderer(S)
    g = torch.Generator().manual_seed(0)
    depth = (_bump(S, 0.04, DT) + 0.01 * torch.rand(1, S, S, generator=g, dtype=DT))
    albedo = torch.rand(1, 3, S, S, generator=g, dtype=DT) - 0.5
    view_raw = torch.tensor([[0.03, -0.06, 0.02, 0.05, -0.04, 0.0]], dtype=DT)
    light_raw = torch.tensor([[0.1, -0.2, 0.3, -0.2]], dtype=DT)
    w = torch.randn(1, 3, S, S, generator=g, dtype=DT)
    args = [t.clone().requires_grad_() for t in (depth, albedo, view_raw, light_raw)]
    loss = _step3_loss(r, *args, w)
    grads = torch.autograd.grad(loss, args)
    for gr in grads:
        assert torch.isfinite(gr).all() and gr.abs().sum() > 0

    checks = {0: [23, 34, 45, 56, 67], 1: [5, 150, 250], 2: [0, 1, 2, 3, 4], 3: [0, 1, 2, 3]}
    for k, idxs in checks.items():
        for i in idxs:
            def f(x, k=k):
                a = [t.detach() for t in args]
                a[k] = x
                return _step3_loss(r, *a, w)
            num = _fd(f, args[k], i)
            ana = grads[k].reshape(-1)[i].item()
            assert ana == pytest.approx(num, rel=1e-4, abs=1e-6), (k, i, ana, num)
    assert grads[2][0, 5] == 0  # tz is scaled by z_range = 0


def test_depth_gradient_through_rendered_depth_only():
    """Path (b) of §3.9: rasteriser depth → inverse-warp grid → grid_sample (texture fixed)."""
    S = 10
    r = Renderer(S)
    g = torch.Generator().manual_seed(1)
    tex = torch.rand(1, 3, S, S, generator=g, dtype=DT) * 1.6 - 0.8
    view = _view(rx=0.04, ry=-0.08, tx=0.004)
    w = torch.randn(1, 3, S, S, generator=g, dtype=DT)

    def f(d):
        im, rd, mask = r.render(tex, d, view)
        return (im * w * mask).sum()

    depth = _bump(S, 0.04, DT).requires_grad_()
    gd, = torch.autograd.grad(f(depth), depth)
    assert torch.isfinite(gd).all() and gd.abs().max() > 1e-3
    for i in [22, 33, 44, 55, 66, 77]:
        assert gd.view(-1)[i].item() == pytest.approx(_fd(f, depth, i), rel=1e-4, abs=1e-6)


def test_gradients_nonzero_float32_step3():
    S = 16
    r = Renderer(S)
    torch.manual_seed(0)
    depth = (_bump(S, 0.05) + 0.01 * torch.rand(2, S, S)).requires_grad_()
    albedo = (torch.rand(2, 3, S, S) - 0.5).requires_grad_()
    view_raw = (0.05 * torch.randn(2, 6)).requires_grad_()
    light_raw = (0.2 * torch.randn(2, 4)).requires_grad_()
    target = torch.rand(2, 3, S, S) * 2 - 1
    view = view_to_physical(view_raw)
    k_a, k_d, direction = light_to_physical(light_raw)
    tex = compose_texture(albedo, shade(r.normals(depth), k_a, k_d, direction)[0])
    im, rd, mask = r.render(tex, depth, view)
    loss = ((im - target).abs() * mask).mean() + rd.mean()
    loss.backward()
    for t in (depth, albedo, view_raw, light_raw):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    assert view_raw.grad[:, :5].abs().min() > 0


# --------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_cuda_agree():
    S = 32
    torch.manual_seed(0)
    depth = _bump(S, 0.05) + 0.01 * torch.rand(2, S, S)
    tex = torch.rand(2, 3, S, S) * 2 - 1
    view = 0.05 * torch.randn(2, 6)
    r = Renderer(S)
    out_cpu = r.render(tex, depth, view)
    rc = Renderer(S).cuda()
    out_gpu = rc.render(tex.cuda(), depth.cuda(), view.cuda())
    for a, b in zip(out_cpu, out_gpu):
        # sub-samples on triangle edges may pick a different (equal-depth) face
        assert (a - b.cpu()).abs().gt(1e-3).float().mean() < 0.01
    cols = torch.rand(2, 3, S, S) * 2 - 1
    a = r.render_mesh_colors(depth, cols, view)
    b = rc.render_mesh_colors(depth.cuda(), cols.cuda(), view.cuda())
    assert (a - b.cpu()).abs().gt(1e-3).float().mean() < 0.01


@pytest.mark.parametrize("faithful", [True, False])
def test_tiled_rasteriser_equals_pytorch3d_native(faithful):
    """The tiled rasteriser (CPU default) finds the same faces as pytorch3d's whole-mesh one,
    for rotated bumpy surfaces whose back faces are visible."""
    S = 24
    g = torch.Generator().manual_seed(0)
    depth = 1.0 + 0.03 * torch.randn(2, S, S, generator=g).cumsum(1).cumsum(2) / S
    view = torch.tensor([[0.2, 0.5, 0.1, 0.01, -0.02, 0.0], [-0.3, -0.7, 0.0, 0.0, 0.0, 0.0]])
    tiled = Renderer(S, faithful=faithful, raster="tiled")
    native = Renderer(S, faithful=faithful, raster="native")
    a, b = tiled.warp_canon_depth(depth, view), native.warp_canon_depth(depth, view)
    assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("S", [64, 128])
def test_tf32_matmul_does_not_change_the_geometry(S):
    """With TF32 matmuls on (the fast mode) a render and its depth gradient equal the fp32 ones
    (before method/exact.py: relative gradient error 0.57 at 64 px, 0.94 at 128 px on an H200)."""
    torch.manual_seed(0)
    depth = _bump(S, 0.08) + 0.003 * torch.randn(4, S, S)
    tex, target = torch.rand(2, 4, 3, S, S) * 2 - 1
    view = view_to_physical(torch.rand(4, 6) * 2 - 1)
    r = Renderer(S).cuda()
    out = {}
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            d = depth.cuda().requires_grad_(True)
            img, recon, _ = r.render(tex.cuda(), d, view.cuda())
            torch.nn.functional.l1_loss(img, target.cuda()).backward()
            out[tf32] = (img.detach(), recon.detach(), d.grad)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    (a_img, a_rec, a_g), (b_img, b_rec, b_g) = out[False], out[True]
    assert (a_img - b_img).abs().max() < 1e-5 and (a_rec - b_rec).abs().max() < 1e-5
    assert (a_g - b_g).norm() / a_g.norm() < 1e-4
