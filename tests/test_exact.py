"""Geometry in full fp32 whatever the TF32 settings (method/exact.py): mm3 equals matmul, and no
TF32-able matmul runs in the renderer's geometry or the rasterisers with TF32 switched on."""

from __future__ import annotations

import pytest
import torch

from gan2shape.method.exact import mm3, no_tf32
from gan2shape.method.renderer import Renderer, view_to_physical


@pytest.mark.parametrize("shape_a,shape_b", [((5, 7, 3), (5, 3, 3)), ((4, 4, 3), (3, 3)), ((2, 6, 6, 3, 3), (3, 3)),
                                             ((8, 3, 3), (8, 3, 3))])
def test_mm3_equals_matmul_with_gradients(shape_a, shape_b):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(shape_a, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape_b, generator=g, dtype=torch.float64, requires_grad=True)
    ref = a @ b
    out = mm3(a, b)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-12)
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ga, gb = torch.autograd.grad((ref * w).sum(), (a, b))
    ha, hb = torch.autograd.grad((out * w).sum(), (a, b))
    assert torch.allclose(ga, ha, atol=1e-12) and torch.allclose(gb, hb, atol=1e-12)


def test_no_tf32_restores_the_setting():
    flag = torch.backends.cuda.matmul
    saved = flag.allow_tf32
    try:
        flag.allow_tf32 = True
        with no_tf32():
            assert flag.allow_tf32 is False
        assert flag.allow_tf32 is True
    finally:
        flag.allow_tf32 = saved


def test_renderer_runs_no_matmul_while_tf32_is_on(monkeypatch):
    """With TF32 matmuls allowed globally (as in the fast mode), a render, its normals and the
    backward pass make every matmul-family call with TF32 off (pytorch3d inside no_tf32) or none at
    all (mm3): on CUDA the geometry is then exact."""
    calls = []

    def guard(fn):
        def wrapped(*args, **kwargs):
            calls.append(torch.backends.cuda.matmul.allow_tf32)
            return fn(*args, **kwargs)
        return wrapped

    for mod, name in [(torch, "matmul"), (torch, "bmm"), (torch, "einsum"), (torch.Tensor, "__matmul__"),
                      (torch.Tensor, "bmm"), (torch.Tensor, "matmul")]:
        monkeypatch.setattr(mod, name, guard(getattr(mod, name)))
    S, n = 24, 2
    g = torch.Generator().manual_seed(1)
    depth = (1.0 + 0.02 * torch.randn(n, S, S, generator=g)).requires_grad_(True)
    view = view_to_physical(torch.rand(n, 6, generator=g) * 2 - 1)
    r = Renderer(S)
    flag = torch.backends.cuda.matmul
    saved = flag.allow_tf32
    flag.allow_tf32 = True
    try:
        img, recon, _ = r.render(torch.rand(n, 3, S, S, generator=g), depth, view)
        (img.sum() + r.normals(depth).sum() + r.forward_warp_grid(depth, view).sum()).backward()
        assert flag.allow_tf32 is True   # the caller's setting is left as it was
    finally:
        flag.allow_tf32 = saved
    assert depth.grad is not None and torch.isfinite(depth.grad).all()
    assert calls and True not in calls, f"{calls.count(True)} of {len(calls)} matmul calls with TF32 on"
