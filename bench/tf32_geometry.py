"""Does TF32 matmul (on in the fast mode) change the renderer's geometry? On CUDA, the renderer's
outputs and the depth gradient of a photometric loss with ``torch.backends.cuda.matmul.allow_tf32``
off (the faithful mode) vs on, for ellipsoid-prior depth maps with small noise and random views.

    python bench/tf32_geometry.py --out OUT/tf32_geometry.json      # CUDA only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from gan2shape.method.renderer import Renderer, view_to_physical


def measure(size: int, n: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    bump = (1 - (xx / 0.7) ** 2 - (yy / 0.8) ** 2).clamp(min=0).sqrt()
    depth = (1.05 - 0.08 * bump).expand(n, size, size) + 0.003 * torch.randn(n, size, size, generator=g)
    view = view_to_physical(torch.rand(n, 6, generator=g) * 2 - 1)
    texture = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    target = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    r = Renderer(size).cuda()
    out = {}
    for key, tf32 in (("fp32", False), ("fp32_again", False), ("tf32", True)):  # fp32 twice: the noise floor
        torch.backends.cuda.matmul.allow_tf32 = tf32
        d = depth.cuda().requires_grad_(True)
        img, recon, _ = r.render(texture.cuda(), d, view.cuda())
        normals = r.normals(d)
        grid = r.inverse_warp_grid(recon.detach(), view.cuda())
        F.l1_loss(img, target.cuda()).backward()
        out[key] = {"img": img.detach(), "recon": recon.detach(), "normals": normals.detach(),
                     "grid": grid.detach(), "grad": d.grad.detach()}
    torch.backends.cuda.matmul.allow_tf32 = False
    return {"size": size, "tf32_vs_fp32": compare(out["fp32"], out["tf32"], size),
            "fp32_vs_fp32_again": compare(out["fp32"], out["fp32_again"], size)}


def compare(a: dict, b: dict, size: int) -> dict:
    """How far two renderings of the same inputs are apart."""
    cosang = (F.normalize(a["normals"], dim=-1) * F.normalize(b["normals"], dim=-1)).sum(-1).clamp(-1, 1)
    ga, gb = a["grad"].flatten(), b["grad"].flatten()
    return {
        "image_abs_diff_mean": float((a["img"] - b["img"]).abs().mean()),
        "image_abs_diff_max": float((a["img"] - b["img"]).abs().max()),
        "recon_depth_abs_diff_max": float((a["recon"] - b["recon"]).abs().max()),
        "normal_angle_deg_mean": float(torch.rad2deg(torch.acos(cosang)).mean()),
        "normal_angle_deg_max": float(torch.rad2deg(torch.acos(cosang)).max()),
        "grid_px_diff_max": float((a["grid"] - b["grid"]).abs().max() * (size - 1) / 2),
        "depth_grad_cosine": float(F.cosine_similarity(ga, gb, dim=0)),
        "depth_grad_rel_err": float((ga - gb).norm() / ga.norm()),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("tf32_geometry.py needs CUDA (TF32 exists only there)")
    res = {"device": torch.cuda.get_device_name(), "rows": [measure(s) for s in (64, 128)]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    for row in res["rows"]:
        print(json.dumps(row))
    return res


if __name__ == "__main__":
    main()
