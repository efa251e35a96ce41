"""Tests for gan2shape.method.raster: coarse-to-fine binning without overflow (issue 15, item 1)."""

from __future__ import annotations

import math

import pytest
import torch

from gan2shape.method.raster import (
    BinOverflowError,
    bin_settings,
    default_bin_size,
    faces_per_bin,
    opencv_cameras,
    rasterize_native,
)
from gan2shape.method.renderer import Renderer


def _rough_views(S: int, n_views: int, sigma: float, seed: int = 0):
    """A rough canonical depth (bump + N(0, sigma)) seen by ``n_views`` yaws over ±60°."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, S), torch.linspace(-1, 1, S), indexing="ij")
    depth = 1.0 - 0.05 * torch.exp(-(xx ** 2 + yy ** 2) * 3) + sigma * torch.randn(S, S, generator=g)
    view = torch.zeros(n_views, 6)
    view[:, 1] = torch.linspace(-1, 1, n_views)  # raw yaw × 60°
    return depth.expand(n_views, S, S).contiguous(), view


def _mesh_verts(r: Renderer, depth, view):
    """Camera-frame vertices ``B×S²×3``, the 2S raster's intrinsics and faces, as the renderer uses."""
    verts = r.transform(r.depth_to_3d(depth), view).reshape(depth.shape[0], -1, 3).float()
    K2 = r.K.float().clone()
    K2[:2] *= 2
    return verts, K2, r.faces


def _ndc_face_verts(verts, faces, K, H):
    from pytorch3d.renderer import MeshRasterizer
    from pytorch3d.structures import Meshes

    B = verts.shape[0]
    m = MeshRasterizer(cameras=opencv_cameras(K, B, H)).transform(Meshes(verts=verts, faces=faces.expand(B, -1, -1)))
    return m.verts_packed()[m.faces_packed()]


def _coarse(fv, B, F_, H, bin_size, max_faces_per_bin):
    """pytorch3d's own coarse pass (CPU): bin lists ``B×BH×BW×M`` (−1 = empty)."""
    from pytorch3d import _C

    first = torch.arange(B) * F_
    return _C._rasterize_meshes_coarse(fv, first, torch.full((B,), F_), (H, H), 0.0, bin_size, max_faces_per_bin)


def test_default_settings_and_heuristic():
    assert [default_bin_size(h) for h in (64, 65, 128, 256, 512, 1024)] == [8, 16, 16, 16, 32, 64]
    assert bin_settings(256, 32258) == (16, None)  # None: the fullest bin, counted per call
    assert bin_settings(256, 32258, 32, 5000) == (32, 5000)
    assert bin_settings(256, 32258, 0, 2000) == (0, None)
    with pytest.raises(ValueError, match="bins per side"):
        bin_settings(256, 32258, 8)


def test_binned_lists_complete_and_equal_naive_on_rough_rotated_depth():
    """On a rough, rotated depth mesh, (a) the face count per bin equals pytorch3d's coarse pass,
    (b) with max_faces_per_bin = the fullest bin (the default) every face that the naive rasteriser sees at a pixel is in that
    pixel's bin list, so the binned fine pass (nearest face of the list) equals naive."""
    S, B, bs = 24, 4, 8
    H = 2 * S
    r = Renderer(S)
    depth, view = _rough_views(S, B, 0.05)  # yaws ±60°, ±20°
    verts, K2, faces = _mesh_verts(r, depth, view)
    F_ = faces.shape[0]
    fv = _ndc_face_verts(verts, faces, K2, H)
    cnt = faces_per_bin(fv, F_, H, bs)
    lists = _coarse(fv, B, F_, H, bs, int(cnt.max()))
    assert torch.equal(cnt, (lists >= 0).sum(-1).long())
    assert cnt.max() > 4 * 2 * (bs // 2) ** 2  # 4× a flat grid's faces per bin: rough, crowded bins
    p2f, _, _ = rasterize_native(verts, faces, K2, H, bin_size=bs)  # CPU: naive
    hit = p2f >= 0
    assert hit.float().mean() > 0.3
    by, bx = torch.meshgrid(torch.arange(H) // bs, torch.arange(H) // bs, indexing="ij")
    # pytorch3d's bins run along NDC (+x left, +y up): pixel column c is in bin (W - 1 - c) // bs
    pix_lists = lists[:, (H - 1) // bs - by, (H - 1) // bs - bx]  # B×H×H×M
    packed = p2f + (torch.arange(B) * F_).view(B, 1, 1)
    found = (pix_lists == packed.unsqueeze(-1)).any(-1)
    assert bool(found[hit].all())


def test_overflow_raises_instead_of_dropping_faces():
    """A max_faces_per_bin below the fullest bin raises BinOverflowError on any device (pytorch3d's
    CPU coarse pass errors at exactly the same count; its CUDA pass only prints and drops faces)."""
    S, B, bs = 24, 2, 8
    H = 2 * S
    r = Renderer(S)
    depth, view = _rough_views(S, B, 0.05, seed=1)
    verts, K2, faces = _mesh_verts(r, depth, view)
    F_ = faces.shape[0]
    most = int(faces_per_bin(_ndc_face_verts(verts, faces, K2, H), F_, H, bs).max())
    assert most < F_
    with pytest.raises(BinOverflowError, match="max_faces_per_bin"):
        rasterize_native(verts, faces, K2, H, bin_size=bs, max_faces_per_bin=most - 1)
    with pytest.raises(RuntimeError, match="too many faces per bin"):
        _coarse(_ndc_face_verts(verts, faces, K2, H), B, F_, H, bs, most - 1)
    ok = rasterize_native(verts, faces, K2, H, bin_size=bs, max_faces_per_bin=most)[0]
    assert torch.equal(ok, rasterize_native(verts, faces, K2, H, bin_size=0)[0])
    with pytest.raises(BinOverflowError):
        Renderer(S, bin_size=bs, max_faces_per_bin=most // 2, raster="native").warp_canon_depth(depth, view)


def test_unrotated_grid_count_is_an_upper_bound():
    """Vertices exactly on bin edges (identity view) are counted in both bins: never below
    pytorch3d's own count."""
    S, bs = 16, 8
    H = 2 * S
    r = Renderer(S)
    depth, view = torch.ones(1, S, S), torch.zeros(1, 6)
    verts, K2, faces = _mesh_verts(r, depth, view)
    fv = _ndc_face_verts(verts, faces, K2, H)
    cnt = faces_per_bin(fv, faces.shape[0], H, bs)
    ref = (_coarse(fv, 1, faces.shape[0], H, bs, faces.shape[0]) >= 0).sum(-1).long()
    assert bool((cnt >= ref).all()) and int(cnt.max()) <= 2 * 6 * 6


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_binned_equals_naive_128px_rough():
    """128 px, depth + N(0, 0.05), 16 views over ±60° yaw: binned (default: counted; and the
    sync-free faces-per-mesh bound) == naive; a max_faces_per_bin below the fullest bin raises."""
    S = 128
    depth, view = _rough_views(S, 16, 0.05)
    depth, view = depth.cuda(), view.cuda()
    naive = Renderer(S, bin_size=0).cuda().warp_canon_depth(depth, view)
    binned = Renderer(S, bin_size=None).cuda().warp_canon_depth(depth, view)
    assert (naive < Renderer(S).depth_hi).float().mean() > 0.3
    assert (binned - naive).abs().max().item() < 1e-4
    bound = Renderer(S, bin_size=16, max_faces_per_bin=2 * (S - 1) ** 2).cuda().warp_canon_depth(depth, view)
    assert (bound - naive).abs().max().item() < 1e-4
    with pytest.raises(BinOverflowError):
        Renderer(S, bin_size=16, max_faces_per_bin=1000).cuda().warp_canon_depth(depth, view)
    assert math.isfinite(binned.sum().item())
