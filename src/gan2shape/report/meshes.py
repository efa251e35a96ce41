"""Textured mesh export of a canonical depth map (METHOD §1.8): OBJ/MTL/PNG and PLY.

Vertices are the canonical depth lifted to 3-D (§3.2), mapped to (x, −y, 1 − z)·100 (y up, the
camera on the +z side). The OBJ follows the original: S² grid vertices plus one vertex at the
centre of every pixel quad (mean of its 4 corners), 4 triangles per quad fanning around the
centre, i.e. S² + (S−1)² vertices and 4(S−1)² faces, counter-clockwise seen from the camera; UVs
(c/(S−1), 1 − r/(S−1)); per-vertex normals = §3.6 normals with x negated (the camera-facing normal
in mesh coordinates), centre normals = renormalised mean. The PLY uses the S² grid vertices only
and the renderer's 2 triangles per quad (§3.3), with colours. Files are written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..io import atomic_path, atomic_write_text
from .frames import save_rgb, to_uint8


def mesh_vertices(depth: Tensor, renderer) -> Tensor:
    """Canonical depth ``S×S`` lifted to 3-D (§3.2) in the export convention (x, −y, 1 − z)·100,
    ``S×S×3``."""
    d = depth.detach().reshape(1, *depth.shape[-2:]).float()
    P = renderer.depth_to_3d(d)[0]
    return torch.stack([P[..., 0], -P[..., 1], 1 - P[..., 2]], -1) * 100


def _fmt_rows(prefix: str, a: np.ndarray, fmt: str) -> str:
    buf = io.StringIO()
    np.savetxt(buf, a, fmt=fmt)
    return "".join(f"{prefix} {line}\n" for line in buf.getvalue().splitlines())


def save_mesh_obj(depth: Tensor, renderer, texture: Tensor, path_obj: str | Path) -> dict[str, Path]:
    """Textured OBJ of the canonical depth (§1.8): ``path_obj`` + ``.mtl`` + ``.png`` (the texture,
    ``3×S×S`` in [−1, 1]) next to it. S² grid vertices + (S−1)² quad centres, 4 triangles per
    quad (see the module docstring). Returns the three paths."""
    path_obj = Path(path_obj)
    path_mtl, path_png = path_obj.with_suffix(".mtl"), path_obj.with_suffix(".png")
    S = depth.shape[-1]
    V = mesh_vertices(depth, renderer)  # S×S×3
    n = renderer.normals(depth.detach().reshape(1, S, S).float())[0]
    N = torch.stack([-n[..., 0], n[..., 1], n[..., 2]], -1)
    r = torch.arange(S, dtype=torch.float32)
    rr, cc = torch.meshgrid(r, r, indexing="ij")
    UV = torch.stack([cc / (S - 1), 1 - rr / (S - 1)], -1)

    def centres(x: Tensor) -> Tensor:  # mean of each quad's 4 corners, (S−1)²×k
        return ((x[:-1, :-1] + x[:-1, 1:] + x[1:, :-1] + x[1:, 1:]) / 4).reshape(-1, x.shape[-1])

    Nc = centres(N)
    Nc = Nc / Nc.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    verts = torch.cat([V.reshape(-1, 3), centres(V)], 0).numpy()
    uvs = torch.cat([UV.reshape(-1, 2), centres(UV)], 0).numpy()
    norms = torch.cat([N.reshape(-1, 3), Nc], 0).numpy()
    # 1-based indices: grid vertex r·S + c + 1, centre of quad (r, c) S² + r·(S−1) + c + 1
    idx = torch.arange(S * S).view(S, S) + 1
    tl, tr, bl, br = (idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1),
                      idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1))
    c = torch.arange((S - 1) ** 2) + S * S + 1
    # counter-clockwise seen from the camera (mesh y points up): TL → BL → BR → TR around C
    tris = torch.stack([torch.stack([c, tl, bl], 1), torch.stack([c, bl, br], 1),
                        torch.stack([c, br, tr], 1), torch.stack([c, tr, tl], 1)], 1).reshape(-1, 3)
    t = tris.numpy()
    faces = np.stack([t, t, t], -1).reshape(len(t), 9)
    text = (f"# gan2shape mesh: {S}x{S} depth map, {len(verts)} vertices, {len(t)} faces\n"
            f"mtllib {path_mtl.name}\n"
            + _fmt_rows("v", verts, "%.6f") + _fmt_rows("vt", uvs, "%.6f") + _fmt_rows("vn", norms, "%.6f")
            + "usemtl material_0\n"
            + _fmt_rows("f", faces, "%d/%d/%d %d/%d/%d %d/%d/%d"))
    save_rgb(texture.reshape(3, S, S), path_png, (-1.0, 1.0))
    atomic_write_text("newmtl material_0\nKa 1.0 1.0 1.0\nKd 1.0 1.0 1.0\nKs 0.0 0.0 0.0\nd 1.0\n"
                      f"illum 1\nmap_Kd {path_png.name}\n", path_mtl)
    atomic_write_text(text, path_obj)  # last: an existing .obj implies its .mtl and .png
    return {"obj": path_obj, "mtl": path_mtl, "png": path_png}


def save_mesh_ply(depth: Tensor, renderer, colors: Tensor, path: str | Path, binary: bool = False) -> Path:
    """PLY of the canonical depth with per-vertex colours (``3×S×S`` in [−1, 1]) and normals:
    S² vertices (export convention), 2(S−1)² triangles (§3.3 grid, counter-clockwise from the
    camera). ASCII unless ``binary`` (little endian)."""
    from ..method.renderer import grid_faces

    S = depth.shape[-1]
    V = mesh_vertices(depth, renderer).reshape(-1, 3).numpy().astype(np.float32)
    n = renderer.normals(depth.detach().reshape(1, S, S).float())[0]
    Nm = torch.stack([-n[..., 0], n[..., 1], n[..., 2]], -1).reshape(-1, 3).numpy().astype(np.float32)
    C = to_uint8(colors.reshape(3, S, S)).reshape(-1, 3)
    faces = grid_faces(S).numpy().astype(np.int32)
    header = ("ply\n" + ("format binary_little_endian 1.0\n" if binary else "format ascii 1.0\n")
              + "comment gan2shape canonical depth mesh\n"
              + f"element vertex {len(V)}\n"
              + "property float x\nproperty float y\nproperty float z\n"
              + "property float nx\nproperty float ny\nproperty float nz\n"
              + "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              + f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    path = Path(path)
    if binary:
        vdt = np.dtype([("p", "<f4", 3), ("n", "<f4", 3), ("c", "u1", 3)])
        va = np.empty(len(V), vdt)
        va["p"], va["n"], va["c"] = V, Nm, C
        fdt = np.dtype([("k", "u1"), ("i", "<i4", 3)])
        fa = np.empty(len(faces), fdt)
        fa["k"], fa["i"] = 3, faces
        data = header.encode("ascii") + va.tobytes() + fa.tobytes()
    else:
        buf = io.StringIO()
        np.savetxt(buf, np.concatenate([V, Nm], 1), fmt="%.6f")
        vlines = [f"{a} {c[0]} {c[1]} {c[2]}" for a, c in zip(buf.getvalue().splitlines(), C.tolist())]
        buf = io.StringIO()
        np.savetxt(buf, faces, fmt="3 %d %d %d")
        data = (header + "\n".join(vlines) + "\n" + buf.getvalue()).encode("ascii")
    with atomic_path(path, suffix=".ply") as tmp:
        tmp.write_bytes(data)
    return path

