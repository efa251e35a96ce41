"""Device check of the rasteriser settings (issue 15, item 1): at 128 px, a rough canonical depth
(bump + N(0, σ)) seen by 16 views with yaw over ±60° is rendered by ``Renderer.warp_canon_depth``
with naive rasterisation (bin 0) and with binned settings; prints how many pixels differ from naive,
the fullest bin, and the time of the rasteriser call and of a whole forward + backward.

    python3 bench/raster_check.py            # CUDA; JSON to $OUT/raster_check.json when $OUT is set
    RASTER_CHECK_SIZE=16 python3 bench/raster_check.py   # dry run on a CPU (pytorch3d is naive there)

"old 16/2000" reproduces the former settings by skipping the overflow check (pytorch3d then
drops faces silently); every other row goes through :func:`gan2shape.method.raster.rasterize_native`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from pytorch3d.renderer import MeshRasterizer
from pytorch3d.structures import Meshes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gan2shape.method import raster
from gan2shape.method.renderer import Renderer

DEV = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU only for a dry run (all naive)


def rough_views(S: int, n: int, sigma: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, S), torch.linspace(-1, 1, S), indexing="ij")
    depth = 1.0 - 0.05 * torch.exp(-(xx ** 2 + yy ** 2) * 3) + sigma * torch.randn(S, S, generator=g)
    view = torch.zeros(n, 6)
    view[:, 1] = torch.linspace(-1, 1, n)
    return depth.expand(n, S, S).contiguous().to(DEV), view.to(DEV)


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, n: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def main() -> None:
    S, n = int(os.environ.get("RASTER_CHECK_SIZE", "128")), 16
    settings = {"naive": (0, None), "old 16/2000": (16, 2000), "16/F no sync": (16, "F"),
                "32/F no sync": (32, "F"), "16/counted": (16, None), "32/counted": (32, None)}
    real_check = raster.check_bins
    rows = []
    for sigma in (0.0, 0.05, 0.1):
        depth, view = rough_views(S, n, sigma)
        ref = None
        for name, (bs, M) in settings.items():
            r = Renderer(S, bin_size=bs, raster="native").to(DEV)
            verts = r.transform(r.depth_to_3d(depth), view).reshape(n, -1, 3).float()
            K2 = r.K.float().clone()
            K2[:2] *= 2
            K2[:2, 2] += 1e-3
            F_ = r.faces.shape[0]
            most = None
            if bs:
                m = MeshRasterizer(cameras=raster.opencv_cameras(K2, n, 2 * S)).transform(
                    Meshes(verts=verts, faces=r.faces.expand(n, -1, -1)))
                most = int(raster.faces_per_bin(m.verts_packed()[m.faces_packed()], F_, 2 * S, bs).max())
            # F: faces per mesh (no count); None: the default, the fullest bin counted per call
            r.max_faces_per_bin = F_ if M == "F" else M

            def call(bs=bs, r=r, verts=verts, K2=K2):
                return raster.rasterize_native(verts, r.faces, K2, 2 * S, bs, r.max_faces_per_bin)
            raster.check_bins = (lambda *a: None) if name.startswith("old") else real_check
            with torch.no_grad():
                out = r.warp_canon_depth(depth, view)
            if ref is None:
                ref = out
            diff = (out - ref).abs()
            t_raster = median_ms(call)
            d = depth.clone().requires_grad_(True)

            def fwd_bwd(r=r, d=d, view=view):
                r.warp_canon_depth(d, view).sum().backward()
            t_fb = median_ms(fwd_bwd)
            row = {"sigma": sigma, "setting": name, "bin_size": bs, "faces": F_, "fullest_bin": most,
                   "pct_pixels_differ": 100 * (diff > 1e-4).float().mean().item(), "max_abs_diff": diff.max().item(),
                   "raster_ms": t_raster, "warp_fwd_bwd_ms": t_fb}
            rows.append(row)
            print(f"σ={sigma:<5} {name:<14} fullest bin {most!s:>6}  differ {row['pct_pixels_differ']:7.3f} % "
                  f"(max {row['max_abs_diff']:.4f})  raster {t_raster:7.2f} ms  warp fwd+bwd {t_fb:7.2f} ms")
    raster.check_bins = real_check
    res = {"device": torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu", "torch": torch.__version__, "S": S, "views": n,
           "raster_px": 2 * S, "rows": rows}
    if "OUT" in os.environ:
        Path(os.environ["OUT"], "raster_check.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
