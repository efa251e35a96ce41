"""Mesh rasterisation with pytorch3d: the whole mesh at once (CUDA, coarse-to-fine binning) or
in screen tiles (any device; on the CPU ~40× faster than pytorch3d's naive rasteriser).

Both return, per sample of an ``H×H`` raster seen by an OpenCV pinhole camera ``K`` at the origin,
the index of the nearest face (into ``faces``, −1 where nothing is hit), its camera z and its
perspective-correct barycentric weights.

Binning without overflow. pytorch3d's coarse pass (CUDA) files every face into each
``bin_size``² screen bin that its bounding box overlaps, keeping at most ``max_faces_per_bin``
faces per (mesh, bin); when a bin overflows it drops the rest of the faces, prints "Bin size was
too small in the coarse rasterization phase…" from the GPU (a device ``printf``, which Python cannot
catch) and returns wrong faces. Here, by default, every call counts the faces of each bin
(:func:`faces_per_bin`, pytorch3d's own bin test, never below its count) and passes the fullest
bin as ``max_faces_per_bin``: no overflow, and the fine pass (which loops over all
``max_faces_per_bin`` slots of a bin) stays as fast as with a hand-tuned value; the count costs
one host sync. A fixed ``max_faces_per_bin`` avoids the sync: ``faces per mesh`` can never
overflow (a bin of mesh ``b`` only holds faces of mesh ``b``) but is ~4× slower at 128 px; a
smaller value is checked by the same count and raises :class:`BinOverflowError` if it overflows.
"""

from __future__ import annotations

import torch
from torch import Tensor

# pytorch3d's limit on bins per image side (kMaxItemsPerBin / kMaxFacesPerBin)
MAX_BINS_PER_SIDE = 22


class BinOverflowError(RuntimeError):
    """A coarse-rasterisation bin would hold more faces than ``max_faces_per_bin``."""


def default_bin_size(image_size: int) -> int:
    """pytorch3d's bin size heuristic: 8 up to 64 px, else 2^max(⌈log2 H⌉ − 4, 4)."""
    if image_size <= 64:
        return 8
    return int(2 ** max((image_size - 1).bit_length() - 4, 4))


def faces_per_bin(face_verts: Tensor, num_faces: int, image_size: int, bin_size: int) -> Tensor:
    """Faces that pytorch3d's coarse pass files into each bin: ``N×BH×BW`` (int64).

    ``face_verts`` (``N·num_faces×3×3``, packed, pytorch3d NDC: x, y in [−1, 1]) of ``N`` meshes of
    ``num_faces`` faces each, square ``image_size``. Bin ``k`` spans NDC [−1 + k·w, −1 + (k+1)·w],
    w = 2·bin_size/H, and holds a face iff bbox_min ≤ bin_max and bin_min < bbox_max (pytorch3d's
    test). Never below pytorch3d's count: faces with a vertex behind the camera (which it skips)
    are counted, and so are faces whose box touches a bin edge to within 5e-7 (float32 rounding of
    the edges; e.g. an unrotated grid, whose vertices lie on the edges), in both bins.
    """
    H, bs = int(image_size), int(bin_size)
    nb = 1 + (H - 1) // bs
    w = 2.0 * bs / H
    fv = face_verts.detach().double()
    eps = 5e-7
    lo, hi = fv[..., :2].amin(1) - eps, fv[..., :2].amax(1) + eps  # F×2 (x, y)
    k_lo = torch.ceil((lo + 1) / w - 1).long()
    k_hi = torch.ceil((hi + 1) / w).long() - 1
    hit = ((k_lo <= k_hi) & (k_hi >= 0) & (k_lo < nb)).all(-1).long()
    k_lo, k_hi = k_lo.clamp(0, nb - 1), k_hi.clamp(0, nb - 1) + 1
    n = torch.arange(fv.shape[0], device=fv.device) // num_faces
    # 2-D difference array over (mesh, y bin, x bin), then prefix sums
    diff = torch.zeros(fv.shape[0] // num_faces, nb + 1, nb + 1, dtype=torch.long, device=fv.device)
    for ky, kx, sign in ((k_lo[:, 1], k_lo[:, 0], 1), (k_lo[:, 1], k_hi[:, 0], -1),
                         (k_hi[:, 1], k_lo[:, 0], -1), (k_hi[:, 1], k_hi[:, 0], 1)):
        diff.index_put_((n, ky, kx), sign * hit, accumulate=True)
    return diff.cumsum(1).cumsum(2)[:, :nb, :nb]


def bin_settings(image_size: int, num_faces: int, bin_size: int | None = None,
                 max_faces_per_bin: int | None = None) -> tuple[int, int | None]:
    """(bin_size, max_faces_per_bin): naive (0, None) when ``bin_size == 0``; otherwise
    ``bin_size`` (None: pytorch3d's heuristic) and ``max_faces_per_bin`` (None: count per call)."""
    if bin_size == 0:
        return 0, None
    bs = default_bin_size(image_size) if bin_size is None else int(bin_size)
    if 1 + (image_size - 1) // bs >= MAX_BINS_PER_SIDE:
        raise ValueError(f"bin_size {bs} gives more than {MAX_BINS_PER_SIDE - 1} bins per side "
                         f"at {image_size} px (pytorch3d's limit); use a larger bin or 0 (naive)")
    return bs, None if max_faces_per_bin is None else int(max_faces_per_bin)


def check_bins(face_verts: Tensor, num_faces: int, image_size: int, bin_size: int,
               max_faces_per_bin: int) -> None:
    """Raise :class:`BinOverflowError` where pytorch3d's coarse pass would overflow (and print
    "Bin size was too small…"). Free when ``max_faces_per_bin ≥ num_faces``; else one host sync."""
    if bin_size == 0 or max_faces_per_bin >= num_faces:
        return
    most = int(faces_per_bin(face_verts, num_faces, image_size, bin_size).max())
    if most > max_faces_per_bin:
        raise BinOverflowError(
            f"coarse rasterisation overflow: a {bin_size}-px bin of a {image_size}-px raster holds "
            f"{most} faces > max_faces_per_bin={max_faces_per_bin}; pytorch3d would drop faces "
            f"('Bin size was too small in the coarse rasterization phase') and return wrong depth. "
            f"Use max_faces_per_bin=None (= faces per mesh, {num_faces}, never overflows) or bin_size=0 (naive).")


def raster_settings(image_size: int, bin_size, max_faces_per_bin=None):
    from pytorch3d.renderer import RasterizationSettings

    return RasterizationSettings(image_size=image_size, blur_radius=0.0, faces_per_pixel=1,
                                 cull_backfaces=False, perspective_correct=True, bin_size=bin_size,
                                 max_faces_per_bin=max_faces_per_bin)


def opencv_cameras(K: Tensor, n: int, image_size: int):
    from pytorch3d.utils import cameras_from_opencv_projection

    dev = K.device
    return cameras_from_opencv_projection(
        R=torch.eye(3, device=dev).expand(n, 3, 3), tvec=torch.zeros(n, 3, device=dev),
        camera_matrix=K if K.dim() == 3 else K.expand(n, 3, 3),
        image_size=torch.tensor([[image_size, image_size]], device=dev).expand(n, 2))


def rasterize_native(verts: Tensor, faces: Tensor, K: Tensor, H: int, bin_size: int | None = None,
                     max_faces_per_bin: int | None = None):
    """Whole-mesh pytorch3d rasterisation of ``B`` meshes (``verts`` ``B×V×3``, shared ``faces``):
    (face index ``B×H×H`` into ``faces`` or −1, zbuf, bary).

    Settings from :func:`bin_settings` (by default binned, ``max_faces_per_bin`` = the fullest
    bin, counted on CUDA); a fixed ``max_faces_per_bin`` below ``faces`` is checked with
    :func:`check_bins` on every device, so settings that would overflow on CUDA fail on the CPU
    too, where the rasterisation itself is naive (pytorch3d has no binned CPU rasteriser). No
    z-clipping or frustum culling, so pytorch3d sees exactly ``faces``.
    """
    from pytorch3d.renderer import MeshRasterizer
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    B, F_ = verts.shape[0], faces.shape[0]
    bs, M = bin_settings(H, F_, bin_size, max_faces_per_bin)
    meshes = MeshRasterizer(cameras=opencv_cameras(K, B, H)).transform(
        Meshes(verts=verts, faces=faces.expand(B, -1, -1)))
    if verts.device.type != "cuda" and M is None:
        bs = 0
    if bs and M is None:
        M = max(int(faces_per_bin(meshes.verts_packed()[meshes.faces_packed()], F_, H, bs).max()), 1)
    elif bs and M < F_:
        check_bins(meshes.verts_packed()[meshes.faces_packed()], F_, H, bs, M)
    if verts.device.type != "cuda":
        bs, M = 0, None
    p2f, zbuf, bary, _ = rasterize_meshes(
        meshes, image_size=H, blur_radius=0.0, faces_per_pixel=1, bin_size=bs, max_faces_per_bin=M,
        perspective_correct=True, clip_barycentric_coords=False, cull_backfaces=False,
        z_clip_value=None, cull_to_frustum=False)
    p2f = p2f[..., 0]
    p2f = torch.where(p2f >= 0, p2f - torch.arange(B, device=p2f.device).view(B, 1, 1) * F_, p2f)
    return p2f, zbuf[..., 0], bary[..., 0, :]


def rasterize_tiled(verts: Tensor, faces: Tensor, K: Tensor, H: int, tile: int = 16,
                    cap: int = 128, cull_backfaces: bool = True):
    """Tiled pytorch3d rasterisation (same outputs as :func:`rasterize_native`).

    pytorch3d's naive rasteriser (the only one on the CPU) costs O(pixels × faces) per image; this
    costs ~40× less. Every (front-facing, with ``cull_backfaces``) face is assigned to the screen tiles its bounding box overlaps; the faces of
    each (image, tile) are cut into chunks of at most ``cap`` faces, and every non-empty chunk becomes
    one small mesh (its faces' vertices unrolled) seen by a camera whose principal point is moved to
    the tile. All chunks are rasterised in one ``MeshRasterizer`` call; per tile pixel the chunk with
    the nearest hit wins (ties: lowest chunk). ``cull_backfaces`` is for closed, outward-oriented
    meshes, whose back faces are never the nearest surface; open surfaces (depth-map meshes) keep
    both sides.
    """
    from pytorch3d.renderer import MeshRasterizer
    from pytorch3d.structures import Meshes

    dev = verts.device
    B, F_ = verts.shape[0], faces.shape[0]
    T = -(-H // tile)
    tri = verts[:, faces]  # B×F×3×3
    uvw = tri @ K.T
    uv = uvw[..., :2] / uvw[..., 2:3]
    fn = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    front = (fn * tri.mean(2)).sum(-1) < 0
    # tiles touched by the bounding box (widened by one sample), B×F×2
    lo = uv.amin(2).floor() - 1
    hi = uv.amax(2).floor() + 1
    valid = (hi >= 0).all(-1) & (lo < T * tile).all(-1)
    if cull_backfaces:
        valid = valid & front
    lo_t = (lo.clamp(0, T * tile - 1) // tile).long()
    hi_t = (hi.clamp(0, T * tile - 1) // tile).long()
    p2f = torch.full((B, H, H), -1, dtype=torch.long, device=dev)
    zbuf = torch.full((B, H, H), -1.0, device=dev)
    bary = torch.zeros(B, H, H, 3, device=dev)
    if not bool(valid.any()):
        return p2f, zbuf, bary
    span = int((hi_t - lo_t)[valid].max()) + 1
    # (image, face, tile) triples, one tile offset at a time (spans are 1–3 tiles)
    b_all = torch.arange(B, device=dev).view(B, 1).expand(B, F_)
    f_all = torch.arange(F_, device=dev).view(1, F_).expand(B, F_)
    tids, fids, bids = [], [], []
    for dy in range(span):
        for dx in range(span):
            ty, tx = lo_t[..., 1] + dy, lo_t[..., 0] + dx
            ok = valid & (ty <= hi_t[..., 1]) & (tx <= hi_t[..., 0])
            tids.append((b_all * T * T + ty * T + tx)[ok])
            fids.append(f_all[ok])
            bids.append(b_all[ok])
    tid, fidx, bidx = torch.cat(tids), torch.cat(fids), torch.cat(bids)
    # group by tile, then cut each tile's list into chunks of ≤ cap faces (one mesh per chunk)
    order = torch.argsort(tid, stable=True)
    tid, fidx, bidx = tid[order], fidx[order], bidx[order]
    cnt = torch.bincount(tid, minlength=B * T * T)
    pos = torch.arange(tid.numel(), device=dev) - (torch.cumsum(cnt, 0) - cnt)[tid]
    key = tid * (F_ // cap + 2) + pos // cap  # chunk key, increasing along the sorted list
    ukey, mid = torch.unique_consecutive(key, return_inverse=True)
    M = ukey.numel()
    mtile = ukey // (F_ // cap + 2)  # global tile of each mesh
    slot = pos % cap
    Fm = int(slot.max()) + 1
    tv = torch.zeros(M * Fm * 3, 3, device=dev)
    vslot = ((mid * Fm + slot) * 3)[:, None] + torch.arange(3, device=dev)
    tv[vslot.reshape(-1)] = tri[bidx, fidx].reshape(-1, 3)
    tf = torch.full((M * Fm, 3), -1, dtype=torch.long, device=dev)
    tf[mid * Fm + slot] = slot[:, None] * 3 + torch.arange(3, device=dev)
    # camera of each mesh: K with the principal point moved to its tile's origin
    t_local = mtile % (T * T)
    Kt = K.expand(M, 3, 3).clone()
    Kt[:, 0, 2] -= (t_local % T).to(K.dtype) * tile
    Kt[:, 1, 2] -= (t_local // T).to(K.dtype) * tile
    frag = MeshRasterizer(cameras=opencv_cameras(Kt, M, tile), raster_settings=raster_settings(tile, 0))(
        Meshes(verts=tv.view(M, Fm * 3, 3), faces=tf.view(M, Fm, 3)))
    pf = frag.pix_to_face[..., 0]  # M×t×t; packed order (mesh, slot) = the sorted list's order
    hit = pf >= 0
    z = torch.where(hit, frag.zbuf[..., 0], torch.full_like(frag.zbuf[..., 0], float("inf")))
    # z-test across the chunks of a tile, ties to the lowest mesh index
    NT = B * T * T
    idx = mtile.view(M, 1, 1).expand_as(z)
    zmin = torch.full((NT, tile, tile), float("inf"), device=dev).scatter_reduce(0, idx, z, "amin")
    cand = hit & (z == zmin.gather(0, idx))
    marange = torch.arange(M, device=dev).view(M, 1, 1).expand_as(z)
    mbest = torch.full((NT, tile, tile), M, dtype=torch.long, device=dev).scatter_reduce(
        0, idx, torch.where(cand, marange, torch.full_like(marange, M)), "amin")
    win = cand & (marange == mbest.gather(0, idx))
    # assemble the per-tile results
    tz = torch.full((NT, tile, tile), -1.0, device=dev)
    tp = torch.full((NT, tile, tile), -1, dtype=torch.long, device=dev)
    tb = torch.zeros(NT, tile, tile, 3, device=dev)
    wm, wy, wx = win.nonzero(as_tuple=True)
    wt = mtile[wm]
    tz[wt, wy, wx] = z[wm, wy, wx]
    tp[wt, wy, wx] = fidx[pf[wm, wy, wx]]
    tb[wt, wy, wx] = frag.bary_coords[wm, wy, wx, 0]

    def untile(x: Tensor) -> Tensor:
        x = x.reshape(B, T, T, tile, tile, *x.shape[3:]).transpose(2, 3)
        return x.reshape(B, T * tile, T * tile, *x.shape[5:])[:, :H, :H]

    return untile(tp), untile(tz), untile(tb)
