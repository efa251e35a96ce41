"""Geometry in full fp32 whatever the TF32 settings.

With ``torch.backends.cuda.matmul.allow_tf32`` on (the fast mode, or a user's
``torch.set_float32_matmul_precision("high")``), CUDA matmuls round their inputs to a 10-bit
mantissa. For image and feature maps that is harmless; for the renderer's geometry it is not:
pixel positions differ by ~0.03 px, pytorch3d (TF32 camera transform) and the differentiable
barycentrics (TF32 projection) then disagree on which face covers a sample, and the depth gradient of
a rendered image is wrong. Measured on an H200 (``bench/tf32_geometry.py``): relative error of
the depth gradient 0.57 at 64 px and 0.94 at 128 px, vs 1e-7 between two fp32 runs.

* :func:`mm3` — ``a @ b`` for a contraction over 3 (points × 3×3 matrices) as a sum of three
  broadcast products: elementwise kernels in forward and backward, never TF32.
* :func:`no_tf32` — a context with TF32 matmuls off, for code that runs without autograd inside it
  (pytorch3d's camera transform before rasterisation; the world renderer).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

__all__ = ["mm3", "no_tf32"]


def mm3(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` (``...×n×k`` times ``...×k×m``, small ``k``) without matmul kernels: Σ_j a[:, j] b[j, :]
    (no ``k``-times larger intermediate)."""
    out = a[..., :, 0:1] * b[..., 0:1, :]
    for j in range(1, a.shape[-1]):
        out = out + a[..., :, j:j + 1] * b[..., j:j + 1, :]
    return out


@contextlib.contextmanager
def no_tf32():
    """TF32 matmuls off inside (restored after). Forward-only code: a backward pass run later
    would use the settings of its own time."""
    flag = torch.backends.cuda.matmul
    saved = flag.allow_tf32
    flag.allow_tf32 = False
    try:
        yield
    finally:
        flag.allow_tf32 = saved
