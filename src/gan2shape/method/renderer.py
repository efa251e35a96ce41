"""Renderer and geometry (METHOD §3): camera, lifting, rigid view warps, depth-map meshes,
rasterised depth of a warped canonical depth map, inverse-warp re-rendering, normals, shading.

Conventions (METHOD §3.1–3.2): pinhole camera at the origin looking along +z, OpenCV axes
(x right, y down). Pixel (r, c) has image coordinates (u, v) = (c, r). Grids are meant for
``grid_sample(..., align_corners=True)``.

Rasterisation uses pytorch3d's ``MeshRasterizer`` only to find which face covers each
anti-aliasing sub-sample (``pix_to_face``). The depth of that sub-sample is then recomputed in
PyTorch as the perspective-correct interpolation of the face's camera-space z (METHOD §3.4:
"or, equivalently, barycentric interpolation ... with perspective-correct barycentrics"). This
is mathematically the rasteriser's ``zbuf`` and has the same gradient w.r.t. vertex positions,
but works in any dtype (pytorch3d's CPU rasteriser is float32 only) and on any device.

``faithful=True`` reproduces neural_renderer 1.1.3 (METHOD §3.4): 2S×2S sub-samples at
(u, v) = (c + 0.25 | c + 0.75, r + 0.25 | r + 0.75), background sub-samples = 100, 2×2 mean,
clamp. With an identity view the last row and column are therefore background (invalid).
``faithful=False`` is a "clean" variant: sub-samples at (c ± 0.25, r ± 0.25), i.e. output pixels
centred on the vertex positions (a 0.5 px shift), and the 2×2 mean is taken over the covered
sub-samples only (a pixel is background only when none of its sub-samples hits the surface), so an
identity view reproduces every pixel. Colour rendering (``render_mesh_colors``) uses the same
sub-sample positions and blends with the background in both modes (ordinary anti-aliasing).

Other notes:
* ``bin_size=0`` (naive rasterisation, the spec's recipe) is this class's default; the method's
  config passes ``None``, naive on the CPU. On CUDA,
  ``bin_size=None`` (pytorch3d's heuristic, 16 at 128 px) or any bin size > 0 rasterises coarse-to-fine
  with ``max_faces_per_bin`` = faces per mesh unless given, which cannot overflow (see
  :mod:`gan2shape.method.raster`; a smaller value is checked and raises ``BinOverflowError``
  rather than letting pytorch3d drop faces, which it did at 128 px with 16 / 2000 on rough depth).
* NR ignores faces with z ≤ 0.1 or ≥ 100; depths here stay in about [0.5, 1.5], so no such
  clipping is done.
* Normals use the spec's n / (‖n‖ + 1e-7) on unscaled cross products, so their length is slightly
  below 1 (≈ 0.987 at S = 128 for a plane at depth 1), exactly as in the original.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .exact import mm3, no_tf32
from .raster import rasterize_native, rasterize_tiled

__all__ = [
    "rotation_matrix",
    "view_to_physical",
    "light_to_physical",
    "shade",
    "compose_texture",
    "grid_faces",
    "Renderer",
]

# neural_renderer's default far value of the depth rasteriser (METHOD §3.4)
NR_FAR = 100.0
# offset (in 2S-resolution pixels) of the rasteriser's sample positions, see Renderer._rasterize
_EDGE_NUDGE = 1e-3


def rotation_matrix(rx: Tensor, ry: Tensor, rz: Tensor) -> Tensor:
    """``B×3×3`` rotation R = Rz(rz)·Ry(ry)·Rx(rx) from angles in radians (each of shape ``B``)."""
    one, zero = torch.ones_like(rx), torch.zeros_like(rx)
    cx, sx = torch.cos(rx), torch.sin(rx)
    cy, sy = torch.cos(ry), torch.sin(ry)
    cz, sz = torch.cos(rz), torch.sin(rz)
    Rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).view(-1, 3, 3)
    Ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    Rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).view(-1, 3, 3)
    return mm3(mm3(Rz, Ry), Rx)


def view_to_physical(view: Tensor, rot_range_deg: float = 60.0, xy_range: float = 0.1,
                     z_range: float = 0.0) -> Tensor:
    """Raw ``B×6`` view (network units) → physical ``B×6`` (rx, ry, rz radians, tx, ty, tz), §2.4."""
    rot = view[:, 0:3] * (rot_range_deg * math.pi / 180.0)
    txy = view[:, 3:5] * xy_range
    tz = view[:, 5:6] * z_range
    return torch.cat([rot, txy, tz], 1)


def light_to_physical(light: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Raw ``B×4`` light → (k_a ``B``, k_d ``B``, unit direction ``B×3`` = normalize([l2, l3, 1]))."""
    k_a = light[:, 0] / 2 + 0.5
    k_d = light[:, 1] / 2 + 0.5
    d = torch.cat([light[:, 2:4], torch.ones_like(light[:, :1])], 1)
    return k_a, k_d, d / d.norm(dim=1, keepdim=True)


def shade(normals: Tensor, k_a: Tensor, k_d: Tensor, direction: Tensor) -> tuple[Tensor, Tensor]:
    """Lambertian shading (§3.6): (shading = k_a + k_d·s_diff, s_diff = max(0, n·dir)), ``B×1×S×S``."""
    s_diff = (normals * direction[:, None, None, :]).sum(-1).clamp(min=0).unsqueeze(1)
    shading = k_a.view(-1, 1, 1, 1) + k_d.view(-1, 1, 1, 1) * s_diff
    return shading, s_diff


def compose_texture(albedo: Tensor, shading: Tensor) -> Tensor:
    """Canonical texture ((a + 1)/2 · shading)·2 − 1 (§3.6)."""
    return ((albedo + 1) / 2 * shading) * 2 - 1


def grid_faces(size: int) -> Tensor:
    """Faces of an S×S vertex grid (index r·S + c), §3.3: all (TL, BL, TR), then all (TR, BL, BR)."""
    idx = torch.arange(size * size).view(size, size)
    tl, tr = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1)
    bl, br = idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    return torch.cat([torch.stack([tl, bl, tr], 1), torch.stack([tr, bl, br], 1)], 0)


def _cross2(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


class Renderer(torch.nn.Module):
    """Fixed pinhole camera + depth-map mesh renderer (METHOD §3). Has no parameters."""

    def __init__(self, image_size: int, fov: float = 10.0, min_depth: float = 0.9,
                 max_depth: float = 1.1, rot_center_depth: float = 1.0, faithful: bool = True,
                 bin_size: int | None = 0, max_faces_per_bin: int | None = None, raster: str = "auto"):
        super().__init__()
        S = int(image_size)
        self.image_size = S
        self.fov = float(fov)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        margin = (self.max_depth - self.min_depth) / 2
        self.depth_lo, self.depth_hi = self.min_depth - margin, self.max_depth + margin
        self.rot_center_depth = float(rot_center_depth)
        self.faithful = bool(faithful)
        self.bin_size, self.max_faces_per_bin = bin_size, max_faces_per_bin
        if raster not in ("auto", "tiled", "native"):
            raise ValueError(f"raster must be 'auto', 'tiled' or 'native', got {raster!r}")
        # "auto": whole-mesh rasterisation on CUDA, tiled on the CPU; "native" = pytorch3d's own
        # rasteriser everywhere (the spec's recipe; slow on the CPU)
        self.raster = raster
        # §3.1: fx = fy = ((S-1)/2)/tan(fov/2), cx = cy = (S-1)/2
        self.fx = (S - 1) / 2 / math.tan(math.radians(self.fov) / 2)
        self.cx = (S - 1) / 2
        K = torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fx, self.cx], [0.0, 0.0, 1.0]],
                         dtype=torch.float64)
        self.register_buffer("K", K, persistent=False)
        self.register_buffer("inv_K", torch.linalg.inv(K), persistent=False)
        self.register_buffer("faces", grid_faces(S), persistent=False)

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, fov={self.fov}, depth=[{self.min_depth}, "
                f"{self.max_depth}], faithful={self.faithful}")

    # ------------------------------------------------------------------ geometry (§3.2)
    def _pixel_grid(self, ref: Tensor) -> Tensor:
        """``S×S×3`` homogeneous pixel coordinates (c, r, 1)."""
        r = torch.arange(self.image_size, device=ref.device, dtype=ref.dtype)
        rr, cc = torch.meshgrid(r, r, indexing="ij")
        return torch.stack([cc, rr, torch.ones_like(rr)], -1)

    def depth_to_3d(self, depth: Tensor) -> Tensor:
        """Lift ``B×S×S`` depth to camera-frame points ``B×S×S×3``: P = z·K⁻¹[c, r, 1]ᵀ."""
        rays = mm3(self._pixel_grid(depth), self.inv_K.to(depth).T)
        return depth.unsqueeze(-1) * rays

    def _center(self, ref: Tensor) -> Tensor:
        return ref.new_tensor([0.0, 0.0, self.rot_center_depth])

    def transform(self, points: Tensor, view: Tensor) -> Tensor:
        """Canonical → view: P' = R(P − C) + C + T for points ``B×...×3``, physical view ``B×6``."""
        B = points.shape[0]
        R = rotation_matrix(view[:, 0], view[:, 1], view[:, 2]).to(points)
        C = self._center(points)
        p = points.reshape(B, -1, 3)
        out = mm3(p - C, R.transpose(1, 2)) + C + view[:, None, 3:6].to(points)
        return out.reshape(points.shape)

    def inverse_transform(self, points: Tensor, view: Tensor) -> Tensor:
        """View → canonical: P = Rᵀ(P' − T − C) + C."""
        B = points.shape[0]
        R = rotation_matrix(view[:, 0], view[:, 1], view[:, 2]).to(points)
        C = self._center(points)
        p = points.reshape(B, -1, 3)
        out = mm3(p - view[:, None, 3:6].to(points) - C, R) + C
        return out.reshape(points.shape)

    def project(self, points: Tensor) -> Tensor:
        """Camera-frame points ``...×3`` → pixel coordinates (u, v) ``...×2``."""
        uvw = mm3(points, self.K.to(points).T)
        return uvw[..., :2] / uvw[..., 2:3]

    def project_to_grid(self, points: Tensor) -> Tensor:
        """Points ``B×S×S×3`` → normalised grid ``B×S×S×2`` (align_corners=True: pixel 0 ↔ −1)."""
        return self.project(points) * (2.0 / (self.image_size - 1)) - 1.0

    # ------------------------------------------------------------------ rasterisation (§3.3–3.4)
    def _subsample_positions(self, ref: Tensor) -> Tensor:
        """Image-plane positions (in K units) of the 2S anti-aliasing sub-samples along one axis."""
        j = torch.arange(2 * self.image_size, device=ref.device, dtype=ref.dtype)
        # pytorch3d screen pixel j is centred at j + 0.5 in the 2×-scaled camera (K2 = diag(2,2,1)K)
        off = 0.5 if self.faithful else -0.5
        return (j + off) / 2

    def _rasterize(self, verts: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Rasterise the grid mesh with vertices ``B×S×S×3`` (camera frame) at 2S×2S.

        Returns (covered ``B×2S×2S`` bool, perspective-correct depth ``B×2S×2S``,
        perspective-correct barycentric weights ``B×2S×2S×3``, packed vertex indices
        ``B×2S×2S×3`` of the covering face). Depth and weights are differentiable w.r.t.
        ``verts``; values at uncovered samples are finite placeholders.
        """
        B, S = verts.shape[0], self.image_size
        N = S * S
        dev = verts.device
        faces = self.faces.to(dev)
        v = verts.reshape(B, N, 3)
        with torch.no_grad():
            # 2× scaled intrinsics for anti-aliasing; the clean mode shifts by half an output pixel
            K2 = self.K.to(device=dev, dtype=torch.float32).clone()
            K2[:2] *= 2
            if not self.faithful:
                K2[:2, 2] += 1.0
            # pytorch3d's inside test is strict, so a sample lying exactly on a shared edge (every
            # quad diagonal, for an identity view) can be dropped by both faces; nudge the
            # rasteriser's samples off such edges (depth is still evaluated at the exact position)
            K2[:2, 2] += _EDGE_NUDGE
            # which face covers a sample: pytorch3d's camera transform in full fp32 (exact.py), so that it
            # agrees with the barycentrics below
            with no_tf32():
                if self.raster == "native" or (self.raster == "auto" and dev.type == "cuda"):
                    p2f, _, _ = rasterize_native(v.detach().float(), faces, K2, 2 * S, self.bin_size,
                                                 self.max_faces_per_bin)
                else:
                    # tiles: on the CPU ~40x faster than pytorch3d's naive rasteriser, same faces
                    p2f, _, _ = rasterize_tiled(v.detach().float(), faces, K2, 2 * S, cull_backfaces=False)
            p2f = torch.where(p2f >= 0, p2f + (torch.arange(B, device=dev) * faces.shape[0]).view(B, 1, 1), p2f)
        covered = p2f >= 0
        # packed face index → the three vertex positions (packed vertex index b·N + i)
        faces_packed = (faces.unsqueeze(0) + (torch.arange(B, device=dev) * N).view(B, 1, 1))
        vidx = faces_packed.reshape(-1, 3)[p2f.clamp(min=0)]  # B×2S×2S×3
        # index_select (backward = index_add_) is much faster on CUDA than advanced indexing
        tri = v.reshape(B * N, 3).index_select(0, vidx.reshape(-1)).view(*vidx.shape, 3)
        # uncovered samples get a harmless dummy triangle so that no inf/NaN reaches the backward
        dummy = tri.new_tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
        tri = torch.where(covered[..., None, None], tri, dummy)
        Z = tri[..., 2]
        p = self.project(tri)  # screen positions of the triangle vertices, B×2S×2S×3×2
        pos = self._subsample_positions(verts)
        pv, pu = torch.meshgrid(pos, pos, indexing="ij")
        q = torch.stack([pu, pv], -1).expand(B, -1, -1, -1)
        # screen-space barycentrics of the sample
        e1, e2, dq = p[..., 1, :] - p[..., 0, :], p[..., 2, :] - p[..., 0, :], q - p[..., 0, :]
        area = _cross2(e1, e2)
        area = torch.where(area.abs() < 1e-12, torch.full_like(area, 1e-12), area)
        l1, l2 = _cross2(dq, e2) / area, _cross2(e1, dq) / area
        lam = torch.stack([1 - l1 - l2, l1, l2], -1)
        # perspective correction: 1/z is affine in screen space
        w = lam / Z
        inv_z = w.sum(-1)
        return covered, 1.0 / inv_z, w / inv_z.unsqueeze(-1), vidx

    def rasterize_depth(self, verts: Tensor) -> Tensor:
        """Anti-aliased depth ``B×S×S`` of the grid mesh with vertices ``B×S×S×3`` (before clamping)."""
        covered, z, _, _ = self._rasterize(verts)
        if self.faithful:
            # NR: background sub-samples carry far = 100, then 2×2 mean
            z = torch.where(covered, z, torch.full_like(z, NR_FAR))
            return F.avg_pool2d(z.unsqueeze(1), 2).squeeze(1)
        # clean: mean over covered sub-samples; background where none is covered
        num = F.avg_pool2d(torch.where(covered, z, torch.zeros_like(z)).unsqueeze(1), 2)
        den = F.avg_pool2d(covered.to(z.dtype).unsqueeze(1), 2)
        bg = torch.full_like(num, NR_FAR)
        return torch.where(den > 0, num / den.clamp(min=1e-8), bg).squeeze(1)

    def warp_canon_depth(self, canon_depth: Tensor, view: Tensor) -> Tensor:
        """Depth ``B×S×S`` of the canonical depth mesh seen from ``view`` (§3.4), clamped to
        [min − m, max + m]; background = max + m."""
        verts = self.transform(self.depth_to_3d(canon_depth), view)
        return self.rasterize_depth(verts).clamp(self.depth_lo, self.depth_hi)

    # ------------------------------------------------------------------ warping (§3.5)
    def inverse_warp_grid(self, recon_depth: Tensor, view: Tensor) -> Tensor:
        """Grid ``B×S×S×2`` that samples the canonical frame for every pixel of the view."""
        return self.project_to_grid(self.inverse_transform(self.depth_to_3d(recon_depth), view))

    def forward_warp_grid(self, canon_depth: Tensor, view: Tensor) -> Tensor:
        """Grid ``B×S×S×2`` that samples an input-view map for every canonical pixel (§3.5)."""
        return self.project_to_grid(self.transform(self.depth_to_3d(canon_depth), view))

    def valid_mask(self, recon_depth: Tensor) -> Tensor:
        """Detached validity mask ``B×1×S×S``: recon_depth < max + m."""
        return (recon_depth < self.depth_hi).unsqueeze(1).to(recon_depth.dtype).detach()

    def render(self, texture: Tensor, canon_depth: Tensor, view: Tensor, mode: str = "bilinear",
               clamp: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """Re-render a canonical ``texture`` (B×C×S×S) in ``view`` by inverse warping (§3.5).

        Returns (image ``B×C×S×S`` [clamped to [−1, 1] if ``clamp``], recon_depth ``B×S×S``,
        detached valid mask ``B×1×S×S``).
        """
        recon_depth = self.warp_canon_depth(canon_depth, view)
        grid = self.inverse_warp_grid(recon_depth, view).to(texture.dtype)
        image = F.grid_sample(texture, grid, mode=mode, padding_mode="zeros", align_corners=True)
        if clamp:
            image = image.clamp(-1, 1)
        return image, recon_depth, self.valid_mask(recon_depth)

    # ------------------------------------------------------------------ normals (§3.6)
    def normals(self, depth: Tensor) -> Tensor:
        """Normals ``B×S×S×3`` from central differences of lifted points; border (0, 0, 1);
        a fronto-parallel plane gives (0, 0, +1) (pointing away from the camera)."""
        P = self.depth_to_3d(depth)
        t_u = P[:, 1:-1, 2:] - P[:, 1:-1, :-2]
        t_v = P[:, 2:, 1:-1] - P[:, :-2, 1:-1]
        n = torch.linalg.cross(t_u, t_v, dim=-1)
        n = n / (n.norm(dim=-1, keepdim=True) + 1e-7)
        out = torch.zeros_like(P)
        out[..., 2] = 1.0
        # write the interior without in-place ops on a tensor that needs grad
        return torch.cat([out[:, :1], torch.cat([out[:, 1:-1, :1], n, out[:, 1:-1, -1:]], 2),
                          out[:, -1:]], 1)

    # ------------------------------------------------------------------ visualisation (§3.8)
    def render_mesh_colors(self, canon_depth: Tensor, colors: Tensor, view: Tensor,
                           background: float = 1.0) -> Tensor:
        """Rasterise the canonical depth mesh seen from ``view`` with per-vertex ``colors``
        (``B×C×S×S``, the pixel values), barycentric interpolation, anti-aliased, background
        ``background``; clamped to [−1, 1]. Visualisation only (§3.8)."""
        B, C, S = colors.shape[0], colors.shape[1], self.image_size
        verts = self.transform(self.depth_to_3d(canon_depth), view)
        covered, _, w, vidx = self._rasterize(verts)
        col = colors.permute(0, 2, 3, 1).reshape(B * S * S, C)
        img = (col.index_select(0, vidx.reshape(-1)).view(*vidx.shape, C)
               * w.unsqueeze(-1).to(col)).sum(-2)  # B×2S×2S×C
        img = torch.where(covered.unsqueeze(-1), img, torch.full_like(img, background))
        img = F.avg_pool2d(img.permute(0, 3, 1, 2), 2)
        return img.clamp(-1, 1)
