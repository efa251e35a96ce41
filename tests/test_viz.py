"""Frames, GIFs, meshes, plots, per-image figures and the HTML report (gan2shape.report.*), on 32-px sphere caps."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from PIL import Image

from gan2shape.report import figures as figs, frames as fr, meshes, page, plots
from gan2shape.method.renderer import Renderer, compose_texture, shade

S = 32


def sphere_cap(size: int = S, near: float = 0.95, far: float = 1.1, radius: float = 0.42) -> torch.Tensor:
    """``1×S×S`` depth: a spherical bump (centre nearest) on a far plane."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    c = (size - 1) / 2
    rho2 = ((yy - c) ** 2 + (xx - c) ** 2) / (radius * size) ** 2
    return (far - (far - near) * (1 - rho2).clamp(min=0).sqrt())[None]


def hemisphere(size: int = S, radius: float = 0.06, plane: float = 1.0) -> torch.Tensor:
    """``1×S×S`` depth: a physical hemisphere of ``radius`` (world units, ≈ 0.34·S px) on a
    fronto-parallel plane at the rotation-centre depth, so rotations keep it centred."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    c = (size - 1) / 2
    f = c / math.tan(math.radians(10.0) / 2)  # the renderer's focal length (fov 10°)
    rho2 = ((yy - c) ** 2 + (xx - c) ** 2) / f ** 2
    return (plane - (radius ** 2 - rho2).clamp(min=0).sqrt())[None]


def striped_albedo(size: int = S) -> torch.Tensor:
    """``1×3×S×S`` albedo in [−1, 1] with a horizontal colour ramp (so rotations are visible)."""
    x = torch.linspace(-0.8, 0.8, size)
    a = torch.stack([x.expand(size, size), -x.expand(size, size), torch.full((size, size), 0.3)], 0)
    return a[None]


# --------------------------------------------------------------------------------------------
# maps → images
# --------------------------------------------------------------------------------------------

def test_depth_to_color_near_is_bright_and_in_range():
    d = sphere_cap()[0]
    img = fr.depth_to_color(d)
    assert img.shape == (3, S, S)
    assert img.min() >= 0 and img.max() <= 1
    lum = img.mean(0)
    assert lum[S // 2, S // 2] > lum[0, 0] + 0.5  # centre (near) much brighter than the far corner
    # monotone along a radius: nearer pixels are never darker
    row = lum[S // 2, S // 2:]
    assert (row[:-1] >= row[1:] - 1e-6).all()
    # fixed range and another colour map
    t = fr.depth_to_color(d, lo=0.9, hi=1.2, cmap="turbo")
    assert t.shape == (3, S, S) and t.min() >= 0 and t.max() <= 1


def test_normals_and_shading_images_of_a_plane():
    n = torch.zeros(S, S, 3)
    n[..., 2] = 1
    img = fr.normals_to_image(n)
    assert img.shape == (3, S, S)
    assert torch.allclose(img, torch.tensor([0.5, 0.5, 1.0]).view(3, 1, 1).expand(3, S, S))
    sh = fr.shading_image(n)
    assert torch.allclose(sh, torch.full((3, S, S), 0.7))
    # oblique light: 0.7·cos(45°)
    assert torch.allclose(fr.shading_image(n, (1.0, 0.0, 1.0)), torch.full((3, S, S), 0.7 / math.sqrt(2)), atol=1e-6)
    # the renderer's normals of a fronto-parallel plane give an (almost) constant image
    rn = Renderer(S).normals(torch.ones(1, S, S))
    ri = fr.normals_to_image(rn)
    assert (ri - ri[:, S // 2, S // 2].view(3, 1, 1)).abs().max() < 0.01


# --------------------------------------------------------------------------------------------
# relighting and rotations
# --------------------------------------------------------------------------------------------

def test_relight_frames_original_set():
    r = Renderer(S)
    depth, albedo = sphere_cap(), striped_albedo()
    view = torch.tensor([[0.05, -0.1, 0.0, 0.01, 0.0, 0.0]])
    frames = fr.relight_frames(r, depth, albedo, view, 0.6, 0.5)
    assert frames.shape == (20, 3, S, S)
    assert torch.isfinite(frames).all() and frames.min() >= -1 and frames.max() <= 1
    flat = frames.reshape(20, -1)
    diff = (flat[:, None] - flat[None]).abs().amax(-1)
    assert (diff + torch.eye(20) > 1e-3).all()  # every pair of frames differs
    assert len(fr.ORIGINAL_RELIGHT) == 20 and len(set(fr.ORIGINAL_RELIGHT)) == 20
    circ = fr.relight_frames(r, depth, albedo, view, 0.6, 0.5, lights="circle", n_frames=6)
    assert circ.shape == (6, 3, S, S)
    with pytest.raises(ValueError):
        fr.relight_frames(r, depth, albedo, view, 0.6, 0.5, lights="nope")


def test_relight_frames_match_the_formula_at_identity_view():
    r = Renderer(S, faithful=False)  # identity view reproduces every pixel exactly
    depth, albedo = sphere_cap(), striped_albedo()
    k_a, k_d = 0.55, 0.45
    dx, dy, s = 0.7, 0.6, 0.3
    frames = fr.relight_frames(r, depth, albedo, torch.zeros(1, 6), k_a, k_d, lights=[(dx, dy, s)])
    d = torch.tensor([dx, dy, 1.0])
    d = d / d.norm()
    s_diff = (r.normals(depth) * d).sum(-1).clamp(min=0).unsqueeze(1)
    want = compose_texture(albedo, k_a - 0.6 * s + (k_d + s) * s_diff).clamp(-1, 1)
    assert torch.allclose(frames, want, atol=1e-4)


def test_rotate_frames_identity_reproduces_the_shaded_texture():
    # a smooth (linear) albedo: the 2×2 anti-aliasing sub-samples average to the vertex value
    depth, albedo = sphere_cap(), striped_albedo() * 0.2
    k_a, k_d, ldir = 0.5, 0.5, torch.tensor([0.3, -0.2, 1.0])
    ident = torch.zeros(1, 6)
    clean = Renderer(S, faithful=False)
    tex = compose_texture(albedo, shade(clean.normals(depth), torch.tensor([k_a]), torch.tensor([k_d]),
                                        (ldir / ldir.norm())[None])[0]).clamp(-1, 1)
    out = fr.rotate_frames(clean, depth, albedo, k_a, k_d, ldir, ident)
    assert out.shape == (1, 3, S, S)
    err = (out - tex)[..., 1:-1, 1:-1].abs()
    # exact on the flat part; on the curved cap the 2×2 anti-aliasing sub-samples average the shading
    assert err.mean() < 0.015 and err.flatten().median() < 1e-3 and err.max() < 0.15
    # faithful sub-sample positions: half a pixel off, still close on interior pixels
    out_f = fr.rotate_frames(Renderer(S), depth, albedo, k_a, k_d, ldir, ident)
    assert (out_f - tex)[..., 2:-2, 2:-2].abs().mean() < 0.03


def test_rotate_frames_yaw_sweep():
    r = Renderer(S, faithful=False)
    depth = sphere_cap()
    albedo = torch.zeros(1, 3, S, S)  # uniform grey: the frames show the shape only
    views = torch.zeros(2, 6)
    views[0, 1], views[1, 1] = math.radians(30), math.radians(-30)
    out = fr.rotate_frames(r, depth, albedo, 0.3, 0.7, (0.0, 0.0, 1.0), views)
    assert out.shape == (2, 3, S, S) and out.min() >= -1 and out.max() <= 1
    assert (out[0] - out[1]).abs().max() > 0.5
    for f in out:  # the rotated patch no longer covers the whole view: white background appears
        assert (f.min(0).values > 0.99).any()
    # a hemisphere on a plane through the rotation centre: the plane shrinks horizontally, so all
    # four corners become background, and the bump's silhouette moves towards the far side
    hemi = fr.rotate_frames(r, hemisphere(), albedo, 0.3, 0.7, (0.0, 0.0, 1.0), views)
    for f in hemi:
        for rr, cc in ((0, 0), (0, S - 1), (S - 1, 0), (S - 1, S - 1)):
            assert f[:, rr, cc].min() > 0.99
        assert f[:, S // 2, S // 2].max() < 0.9  # the object is still in the middle
    assert (hemi[0] - hemi[1]).abs().max() > 0.5
    # a left-right symmetric shape with a frontal light: +30° is the mirror image of −30°
    # (up to rim pixels: the rasteriser's 1e-3-sub-pixel sample nudge is not mirror symmetric)
    mirror = (out[0].flip(-1) - out[1]).abs()
    assert mirror.mean() < 0.01 and mirror.flatten().quantile(0.8) < 1e-3
    # the sweep of the original figure (9 yaw + 5 pitch)
    from gan2shape.method.sampling import rotation_sweep

    sweep = fr.rotate_frames(r, depth, albedo, 0.3, 0.7, (0.0, 0.0, 1.0), rotation_sweep())
    assert sweep.shape == (14, 3, S, S) and torch.isfinite(sweep).all()


# --------------------------------------------------------------------------------------------
# GIF and meshes
# --------------------------------------------------------------------------------------------

def test_save_gif_roundtrip(tmp_path):
    import imageio.v3 as iio

    frames = torch.linspace(-1, 1, 5).view(5, 1, 1, 1).expand(5, 3, 8, 10).clone()
    frames[:, 0, :4] = -1
    path = fr.save_gif(frames, tmp_path / "a.gif", fps=5, upscale=3)
    arr = iio.imread(path, index=None)
    assert arr.shape[0] == 5 and arr.shape[1:3] == (24, 30)
    assert not list(tmp_path.glob(".a.gif*"))  # no temp files left behind
    # nearest upscaling and no upscaling
    arr = iio.imread(fr.save_gif(frames, tmp_path / "b.gif", upscale=1, mode="nearest"), index=None)
    assert arr.shape[:3] == (5, 8, 10)
    with pytest.raises(ValueError):
        fr.save_gif(frames[0], tmp_path / "c.gif")


def _parse_obj(path: Path):
    v, vt, vn, f, mtllib, usemtl = [], [], [], [], None, None
    for line in path.read_text().splitlines():
        p = line.split()
        if not p or p[0] == "#":
            continue
        if p[0] == "v":
            v.append([float(x) for x in p[1:]])
        elif p[0] == "vt":
            vt.append([float(x) for x in p[1:]])
        elif p[0] == "vn":
            vn.append([float(x) for x in p[1:]])
        elif p[0] == "f":
            f.append([[int(i) for i in q.split("/")] for q in p[1:]])
        elif p[0] == "mtllib":
            mtllib = p[1]
        elif p[0] == "usemtl":
            usemtl = p[1]
    return np.array(v), np.array(vt), np.array(vn), np.array(f), mtllib, usemtl


def test_save_mesh_obj(tmp_path):
    r = Renderer(S)
    depth = sphere_cap()[0]
    tex = striped_albedo()[0]
    paths = meshes.save_mesh_obj(depth, r, tex, tmp_path / "m" / "mesh.obj")
    v, vt, vn, f, mtllib, usemtl = _parse_obj(paths["obj"])
    nv, nf = S * S + (S - 1) ** 2, 4 * (S - 1) ** 2
    assert v.shape == (nv, 3) and vt.shape == (nv, 2) and vn.shape == (nv, 3)
    assert f.shape == (nf, 3, 3)
    assert f.min() == 1 and f.max() == nv  # 1-based, every vertex used
    assert (f[..., 0] == f[..., 1]).all() and (f[..., 0] == f[..., 2]).all()
    assert vt.min() >= 0 and vt.max() <= 1
    assert np.allclose(np.linalg.norm(vn, axis=1), 1, atol=0.02)
    # .obj → .mtl → .png
    assert mtllib == "mesh.mtl" and (paths["obj"].parent / mtllib).is_file()
    mtl = (paths["obj"].parent / mtllib).read_text()
    assert f"newmtl {usemtl}" in mtl
    png = [ln.split()[1] for ln in mtl.splitlines() if ln.startswith("map_Kd")][0]
    assert png == "mesh.png" and Image.open(paths["obj"].parent / png).size == (S, S)
    # one vertex by hand: pixel (r, c) = (3, 20) → P = z·((c − cx)/f, (r − cx)/f, 1) → (x, −y, 1 − z)·100
    rr, cc = 3, 20
    z = float(depth[rr, cc])
    fx = (S - 1) / 2 / math.tan(math.radians(10.0) / 2)
    cx = (S - 1) / 2
    want = [100 * z * (cc - cx) / fx, -100 * z * (rr - cx) / fx, 100 * (1 - z)]
    assert np.allclose(v[rr * S + cc], want, atol=1e-4)
    assert np.allclose(vt[rr * S + cc], [cc / (S - 1), 1 - rr / (S - 1)], atol=1e-6)
    # the centre vertex of quad (rr, cc) is the mean of its corners
    ctr = v[S * S + rr * (S - 1) + cc]
    corners = v[[rr * S + cc, rr * S + cc + 1, (rr + 1) * S + cc, (rr + 1) * S + cc + 1]]
    assert np.allclose(ctr, corners.mean(0), atol=1e-4)
    # faces are counter-clockwise seen from the camera (+z in mesh coordinates): normals face +z
    tri = v[f[..., 0] - 1]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert (fn[:, 2] > 0).all()
    # vertex normals agree with the face orientation (camera-facing)
    assert (vn[:, 2] > 0).all()


def _read_ply(path: Path):
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    counts = {ln.split()[1]: int(ln.split()[2]) for ln in header if ln.startswith("element")}
    props = [ln.split()[-1] for ln in header if ln.startswith("property") and "list" not in ln]
    return header, counts, props, data[end:]


def test_save_mesh_ply_ascii_and_binary(tmp_path):
    r = Renderer(S)
    depth = sphere_cap()[0]
    tex = striped_albedo()[0]
    p = meshes.save_mesh_ply(depth, r, tex, tmp_path / "mesh.ply")
    header, counts, props, body = _read_ply(p)
    assert header[0] == "ply" and header[1] == "format ascii 1.0"
    assert counts == {"vertex": S * S, "face": 2 * (S - 1) ** 2}
    assert props[-3:] == ["red", "green", "blue"]
    lines = body.decode("ascii").splitlines()
    assert len(lines) == S * S + 2 * (S - 1) ** 2
    vert = np.array([ln.split() for ln in lines[:S * S]], dtype=float)
    cols = vert[:, -3:]
    assert cols.min() >= 0 and cols.max() <= 255 and (cols == cols.round()).all()
    assert cols[:, 0].std() > 10  # the colour ramp is there
    faces = np.array([ln.split() for ln in lines[S * S:]], dtype=int)
    assert (faces[:, 0] == 3).all() and faces[:, 1:].min() == 0 and faces[:, 1:].max() == S * S - 1
    # same vertex convention as the OBJ
    obj_v = meshes.mesh_vertices(depth, r).reshape(-1, 3).numpy()
    assert np.allclose(vert[:, :3], obj_v, atol=1e-4)

    pb = meshes.save_mesh_ply(depth, r, tex, tmp_path / "mesh_b.ply", binary=True)
    header, counts, _, body = _read_ply(pb)
    assert header[1] == "format binary_little_endian 1.0"
    assert len(body) == counts["vertex"] * (6 * 4 + 3) + counts["face"] * 13
    vb = np.frombuffer(body[:counts["vertex"] * 27], dtype=[("p", "<f4", 3), ("n", "<f4", 3), ("c", "u1", 3)])
    assert np.allclose(vb["p"], obj_v, atol=1e-4)
    assert (vb["c"] == cols.astype(np.uint8)).all()


# --------------------------------------------------------------------------------------------
# per-image outputs, plots and report
# --------------------------------------------------------------------------------------------

def make_reconstruction(root: Path, name: str = "img0", prior: str = "ellipsoid") -> tuple[Path, Path]:
    """A fake `gan2shape reconstruct` folder (reconstruct/<prior>/<name>) and its input image, with
    a prior (prior/<prior>/<name>.npy) and a ground truth (<name>_depth.npy) beside."""
    from gan2shape.data import save_json, save_npy

    rd = root / "reconstruct" / prior / name
    depth = sphere_cap()
    save_npy(depth[0], rd / "depth.npy")
    save_npy(Renderer(S).warp_canon_depth(depth, torch.zeros(1, 6))[0], rd / "recon_depth.npy")
    save_npy(striped_albedo()[0], rd / "albedo.npy")
    save_json({"view_raw": [0.0, -0.1, 0.0, 0.0, 0.0, 0.0], "rotation_rad": [0.0, -0.1, 0.0],
               "translation": [0.0, 0.0, 0.0]}, rd / "view.json")
    save_json({"light_raw": [0.0, 0.0, 0.2, -0.1], "ambient": 0.5, "diffuse": 0.5,
               "direction": [0.2, -0.1, 1.0]}, rd / "light.json")
    save_json({"name": name, "seconds": 1.5, "iterations": 9, "side": 0.012, "mad": 14.0, "final_side": 0.011,
               "final_mad": 13.0}, rd / "metrics.json")
    save_json([{"iteration": 0, "step": 0, "prior_mse": 0.01},
               *({"iteration": i, "stage": 0, "step": 1 + (i - 1) // 3, "loss": 1.0 / i,
                  **({"side": 0.02 - 0.001 * i, "mad": 20.0 - i} if i <= 3 or i > 6 else {})} for i in range(1, 10))],
              rd / "log.json")
    save_npy(sphere_cap(near=1.0)[0], root / "prior" / prior / f"{name}.npy")
    save_npy(sphere_cap(near=0.9)[0], root / f"{name}_depth.npy")
    img = root / f"{name}.png"
    a = ((striped_albedo()[0] + 1) / 2 * 255).byte().permute(1, 2, 0).numpy()
    Image.fromarray(a).resize((64, 64)).save(img)
    return rd, img


def write_figures(root: Path, name: str = "img0", prior: str = "ellipsoid", **kw) -> tuple[Path, dict]:
    rd, img = make_reconstruction(root, name, prior)
    out = root / "figures" / prior / name
    files = figs.write_image_outputs(rd, img, out, image_size=S, prior_path=root / "prior" / prior / f"{name}.npy",
                                     prior_name=prior, gt_path=root / f"{name}_depth.npy", **kw)
    return out, files


@pytest.fixture(scope="module")
def figured(tmp_path_factory):
    root = tmp_path_factory.mktemp("viz")
    out, files = write_figures(root)
    return root, out, files


def test_write_image_outputs(figured):
    import imageio.v3 as iio

    root, out, files = figured
    for name in ("input.png", "prior.png", "depth_view.png", "gt.png", "error.png", "depth.png", "normal.png",
                 "albedo.png", "shading.png", "recon.png", "relight.gif", "rotate.gif", "mesh.obj", "mesh.mtl",
                 "mesh.png", "mesh.ply", "panel.png", "run.json"):
        assert (out / name).is_file(), name
        assert files[name] == out / name
    assert Image.open(out / "depth.png").size == (S, S)
    relight = iio.imread(out / "relight.gif", index=None)
    rotate = iio.imread(out / "rotate.gif", index=None)
    assert relight.shape[:3] == (20, 256, 256) and rotate.shape[:3] == (14, 256, 256)
    # depth.png is a colour map (not grey), near centre brighter than the far corner
    d = np.asarray(Image.open(out / "depth.png").convert("RGB")).astype(float)
    assert d[S // 2, S // 2].sum() > d[0, 0].sum() + 100
    # run.json carries the reconstruction's name, prior, metrics and log for the report
    run = json.loads((out / "run.json").read_text())
    assert run["name"] == "img0" and run["prior"] == "ellipsoid" and run["metrics"]["seconds"] == 1.5
    assert len(run["log"]) == 10 and run["log"][1]["side"] == pytest.approx(0.019)
    assert not list(out.glob(".*"))  # no temp files left behind


def test_rotate_gif_starts_in_the_input_view(figured):
    import imageio.v3 as iio

    root, out, _ = figured
    rec = figs.load_reconstruction(root / "reconstruct" / "ellipsoid" / "img0", S)
    views = fr.rotation_loop(rec["view"], 9, 70.0, 5, 20.0)
    assert views.shape == (14, 6)
    assert torch.allclose(views[0], rec["view"][0]) and torch.allclose(views[9], rec["view"][0])
    yaw = torch.rad2deg(views[:9, 1] - rec["view"][0, 1])
    assert float(yaw.max()) == pytest.approx(70 * math.sin(2 * math.pi * 2 / 9), abs=1e-3)
    assert float(yaw.min()) == pytest.approx(-float(yaw.max()), abs=1e-3)  # a symmetric loop
    assert torch.allclose(views[:9, [0, 2, 3, 4, 5]], rec["view"][:, [0, 2, 3, 4, 5]].expand(9, -1))
    # frame 0 of the GIF is the shape rendered in the input view: it resembles the re-rendered input
    first = iio.imread(out / "rotate.gif", index=0)[..., :3].astype(float)
    small = np.asarray(Image.fromarray(first.astype(np.uint8)).resize((S, S), Image.BILINEAR)).astype(float)
    recon = np.asarray(Image.open(out / "recon.png").convert("RGB")).astype(float)
    far = iio.imread(out / "rotate.gif", index=2)[..., :3].astype(float)
    far = np.asarray(Image.fromarray(far.astype(np.uint8)).resize((S, S), Image.BILINEAR)).astype(float)
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(small - recon)[inner].mean() < 0.5 * np.abs(far - recon)[inner].mean()


def test_comparison_maps_share_a_scale_and_show_side():
    gt = sphere_cap(near=0.9)
    maps = figs.comparison_maps(gt * 1.05, sphere_cap(near=1.0), gt)
    assert set(maps) == {"depth_view.png", "prior.png", "gt.png", "error.png"}
    # a depth that is the ground truth times a constant has SIDE 0: the error map is the colour map's
    # start inside the mask, grey outside
    err = maps["error.png"]
    black = fr.colorize(torch.zeros(1, 1), 0.0, 1.0)[:, 0, 0]
    grey = (err - 0.5).abs().amax(0) < 1e-6
    inside = ~grey
    assert inside.sum() > 50 and grey.sum() > 50
    assert torch.allclose(err[:, inside], black[:, None].expand(3, int(inside.sum())), atol=1e-6)
    # one scale: the ground truth's far plane and the prior's far plane (same depth) share a colour
    assert torch.allclose(maps["gt.png"][:, 0, 0], maps["prior.png"][:, 0, 0])
    # a bump of 5 % in log depth saturates the map (ERROR_MAX = 0.05)
    bumped = gt.clone()
    bumped[0, S // 2, S // 2] *= math.exp(0.2)
    e = figs.comparison_maps(bumped, None, gt)["error.png"]
    assert set(figs.comparison_maps(bumped)) == {"depth_view.png"}
    top = fr.colorize(torch.ones(1, 1), 0.0, 1.0)[:, 0, 0]
    assert torch.allclose(e[:, S // 2, S // 2], top, atol=1e-6)


def test_comparison_figure_one_row_per_image(tmp_path):
    """gan2shape comparison-figure: one row per reconstruction, 8 columns with priors (input, prior,
    depth, ground truth, error, relit, rotated −/+), 7 without; its rows match the per-image error map."""
    from gan2shape.cli import main

    dirs, imgs = zip(*(make_reconstruction(tmp_path, n) for n in ("img0", "img1")))
    args = ["comparison-figure", "--result-dir", *map(str, dirs), "--image", *map(str, imgs),
            "--gt-depth", *(str(tmp_path / f"{n}_depth.npy") for n in ("img0", "img1")), "--image-size", str(S)]
    priors = [str(tmp_path / "prior" / "ellipsoid" / f"{n}.npy") for n in ("img0", "img1")]
    assert main(args + ["--prior-depth", *priors, "--out", str(tmp_path / "with.png")]) == 0
    assert main(args + ["--name", "a", "b", "--out", str(tmp_path / "without.png")]) == 0
    w, h = Image.open(tmp_path / "with.png").size
    w2, h2 = Image.open(tmp_path / "without.png").size
    assert w > 2 * h and w2 < w and abs(h2 - h) <= 2  # 2 rows; one column less
    with pytest.raises(ValueError, match="2 result folders but 1 priors"):
        main(args + ["--prior-depth", priors[0], "--out", str(tmp_path / "bad.png")])


def test_write_image_outputs_errors(tmp_path):
    rd, img = make_reconstruction(tmp_path)
    (rd / "view.json").unlink()
    with pytest.raises(FileNotFoundError, match="view.json"):
        figs.write_image_outputs(rd, img, tmp_path / "out")
    np.save(rd / "albedo.npy", np.zeros((3, 16, 16), np.float32))
    with pytest.raises(ValueError, match="albedo.npy"):
        figs.load_reconstruction(rd)


def test_plots(tmp_path):
    rows = [{"dataset": ds, "method": m, "image": f"i{i}", "side": str(1 + 0.1 * i + (m == "b")),
             "mad": 10 + i + 3 * (m == "b")}
            for ds in ("face", "cat") for m in ("a", "b") for i in range(4)]
    side, mad = plots.plot_metrics(rows, tmp_path / "side.png", tmp_path / "mad.png")
    plots.plot_metrics([r for r in rows if r["dataset"] == "face"], tmp_path / "s1.png", tmp_path / "m1.png")
    runs = [{"image": "a", "prior": "ellipsoid",
             "log": [{"iteration": i, "step": 1 + i // 4, "loss": 2.0 / (i + 1), "side": 3.0 - 0.1 * i,
                      "mad": float("nan")} for i in range(12)]},
            {"image": "b", "prior": "box",
             "log": [{"iteration": 0, "step": 0, "prior_mse": 0.1},
                     *({"iteration": i, "step": 1 + i // 4, "loss": 1.0 / (i + 1)} for i in range(12))]}]
    recs = plots.curve_records(runs)
    assert len(recs) == 24 and sum("side" in r for r in recs) == 12 and not any("mad" in r for r in recs)
    # SIDE is logged as a fraction and plotted ×10⁻² like the tables
    assert recs[0] == {"image": "a", "prior": "ellipsoid", "step": 1, "iteration": 0, "loss": 2.0, "side": 300.0}
    curves = plots.plot_training_curves(runs, tmp_path / "curves.png")
    loss_only = plots.plot_training_curves(runs[1:], tmp_path / "loss.png")
    empty = plots.plot_training_curves([], tmp_path / "empty.png")
    for p in (side, mad, tmp_path / "s1.png", tmp_path / "m1.png", curves, loss_only, empty):
        im = Image.open(p)
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    # two panels (loss, SIDE) are wider than one
    assert Image.open(curves).size[0] > 1.6 * Image.open(loss_only).size[0]
    panel = plots.image_panel([torch.rand(3, S, S), torch.rand(S, S)], ["a", "b"], tmp_path / "panel.png")
    assert Image.open(panel).size[0] > Image.open(panel).size[1]
    with pytest.raises(ValueError):
        plots.image_panel([torch.rand(3, S, S)], ["a", "b"], tmp_path / "bad.png")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") and v:
                self.links.append(v)


def _check_links(html_path: Path) -> list[str]:
    p = _Links()
    p.feed(html_path.read_text())
    for link in p.links:
        assert "://" not in link and not link.startswith("//"), link  # nothing external
        assert (html_path.parent / unquote(link)).is_file(), link
    return p.links


def test_write_report(figured, tmp_path):
    root, fig_dir, files = figured
    side, mad = plots.plot_metrics([{"method": "m", "side": 1.0, "mad": 10.0},
                                    {"method": "m", "side": 2.0, "mad": 12.0}],
                                   tmp_path / "plots" / "side.png", tmp_path / "plots" / "mad.png")
    summary = {"dataset": "synface", "images": 2, "main_method": "gan2shape-box",
               "methods": {"gan2shape-box": {"n": 2, "side_mean": 1.5, "side_std": 0.5, "mad_mean": 11.0,
                                             "mad_std": 1.0, "mad_unit_mean": 10.5, "mad_unit_std": 1.0},
                           "constant": {"n": 2, "side_mean": 1.25, "side_std": 0.5, "mad_mean": 12.0,
                                        "mad_std": 1.0, "mad_unit_mean": float("nan"), "mad_unit_std": 1.0}}}
    out = tmp_path / "site" / "my report.html"
    page.write_report(out, [{"note": "smoke <run>"}, {"title": "Metrics", "summary": summary},
                            {"title": "Plots", "figures": [side, mad]},
                            {"title": "Images", "images": [{"dir": fig_dir, "name": "img0", "prior": "box",
                                                            "metrics": {"SIDE": 1.2, "MAD": 14.0}}]}],
                      title="Test <report>", machine="test machine", date="2025-01-01")
    text = out.read_text()
    assert "Test &lt;report&gt;" in text and "test machine" in text and "2025-01-01" in text
    assert "<div class=note>smoke &lt;run&gt;</div>" in text
    # the headline row is marked, each column's best mean is bold, NaN shows as a dash
    assert "GAN2Shape from the box prior (headline)" in text and "constant depth (baseline)" in text
    assert "<b>1.250 ± 0.500</b>" in text and "1.500 ± 0.500</td>" in text and "<b>11.000 ± 1.000</b>" in text
    assert "<td data-key=mad_unit_mean>–</td>" in text
    assert "SIDE: 1.200" in text and "prior: box" in text
    assert "<script" not in text and "stylesheet" not in text
    links = _check_links(out)
    for name in ("relight.gif", "rotate.gif", "depth_view.png", "gt.png", "error.png", "prior.png", "mesh.obj",
                 "mesh.ply", "input.png"):
        assert any(unquote(l).endswith(name) for l in links), name
    with pytest.raises(FileNotFoundError):
        page.write_report(tmp_path / "x.html", [{"figures": [tmp_path / "missing.png"]}])


def report_inputs(root: Path) -> tuple[list[Path], Path, Path]:
    """Two images × two priors through `gan2shape figures` (the CLI), an evaluate CSV and a
    summarize JSON: the inputs of `gan2shape report` as the workflow passes them."""
    import csv

    from gan2shape.cli import main

    dirs, rows = [], []
    for prior in ("ellipsoid", "box"):
        for i, name in enumerate(("img0", "img1")):
            rd, img = make_reconstruction(root, name, prior)
            out = root / "figures" / prior / name
            assert main(["figures", "--result-dir", str(rd), "--image", str(img), "--out-dir", str(out),
                         "--n-frames", "3", "--lights", "circle", "--prior-depth",
                         str(root / "prior" / prior / f"{name}.npy"), "--prior-name", prior,
                         "--gt-depth", str(root / f"{name}_depth.npy")]) == 0
            dirs.append(out)
            for method, side in ((f"gan2shape-{prior}", 1.0 + i + (prior == "box")), (f"prior-{prior}", 0.5 + i)):
                rows.append({"dataset": "d", "method": method, "image": name, "side": side, "mad": 9.0 + i,
                             "mad_unit": 8.0, "mae": 0.1, "mse": 0.01})
    metrics_csv = root / "per_image.csv"
    with open(metrics_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    methods = {m: {"n": 2, "side_mean": 1.5 + 0.25 * k, "side_std": 0.5, "mad_mean": 9.5, "mad_std": 0.5,
                   "mad_unit_mean": 8.0, "mad_unit_std": 0.0}
               for k, m in enumerate(dict.fromkeys(r["method"] for r in rows))}
    metrics_json = root / "metrics.json"
    metrics_json.write_text(json.dumps({"dataset": "d", "preset": "demo", "np": 4, "runs": 4,
                                        "seconds_per_image": 134.9, "main_method": "gan2shape-ellipsoid",
                                        "methods": methods}))
    return dirs, metrics_json, metrics_csv


def run_report(root: Path) -> tuple[Path, dict]:
    from gan2shape.cli import main

    dirs, metrics_json, metrics_csv = report_inputs(root)
    out = root / "report" / "index.html"
    assert main(["report", "--metrics-json", str(metrics_json), "--metrics-csv", str(metrics_csv),
                 "--image-dirs", *map(str, dirs), "--out", str(out), "--title", "CLI report",
                 "--param", "dataset=d", "presets.demo.stage_iters=[10, 10, 10]", "np=4",
                 "--smoke-run", "demo preset: 10/10/10 iterations, 1 stage"]) == 0
    return out, json.loads(metrics_json.read_text())


def test_cli_report_from_figure_folders(tmp_path):
    out, summary = run_report(tmp_path)
    text = out.read_text()
    for name in ("side.png", "mad.png", "curves.png"):
        assert (out.parent / "index_files" / name).is_file()
    links = _check_links(out)
    assert any(unquote(l).endswith("curves.png") for l in links)  # the log.json of each run was found
    assert sum(unquote(l).endswith("rotate.gif") for l in links) == 2 * 4  # each image and its link
    assert "Training curves" in text and "Smoke run (demo preset: 10/10/10 iterations, 1 stage)" in text
    assert "lower is better" in text and "134.900" in text and "<td>4</td>" in text
    # every image row names its image and prior, with that run's numbers from the CSV
    for prior in ("ellipsoid", "box"):
        for i, name in enumerate(("img0", "img1")):
            assert f'alt="{name} {prior} rotated"' in text
    row = text[text.index('alt="img1 box input"') - 400:text.index('alt="img1 box input"')]
    assert "<b>img1</b>" in row and "prior: box" in row and "SIDE (×10⁻²): 3.000" in row
    assert "prior alone: SIDE: 1.500" in row and "seconds: 1.500" in row and "iterations: 9" in row
    for m, s in summary["methods"].items():
        assert f"{s['side_mean']:.3f} ± {s['side_std']:.3f}" in text and f"<code>{m}</code>" in text
    assert "presets.demo.stage_iters</td><td>[10, 10, 10]" in text
    # per-image table: SIDE / MAD per method (CSV order: gan2shape-ellipsoid, prior-ellipsoid, gan2shape-box, …)
    assert ("<td class=l>img0</td><td>1.000 / 9.000</td><td>0.500 / 9.000</td><td>2.000 / 9.000</td>"
            "<td>0.500 / 9.000</td></tr>") in text


def test_cli_report_refuses_folders_without_run_json(tmp_path):
    from gan2shape.cli import main

    rd, _ = make_reconstruction(tmp_path)
    with pytest.raises(FileNotFoundError, match="run.json"):
        main(["report", "--image-dirs", str(rd.parent), "--out", str(tmp_path / "r.html")])


def test_cli_report_without_evaluation_shows_the_runs_own_numbers(figured, tmp_path):
    from gan2shape.cli import main

    _, fig_dir, _ = figured
    out = tmp_path / "r.html"
    assert main(["report", "--image-dirs", str(fig_dir), "--out", str(out)]) == 0
    text = out.read_text()
    assert "SIDE (×10⁻²): 1.100" in text and "MAD (°): 13.000" in text  # final_side × 100, final_mad
    assert "seconds per image</td><td>1.500" in text and "Smoke run" not in text and "Parameters" not in text
    _check_links(out)


def test_cli_figures_crops_the_input_like_the_presets_reconstruction(tmp_path):
    from gan2shape.cli import main

    rd, _ = make_reconstruction(tmp_path)
    a = np.zeros((200, 200, 3), np.uint8)
    a[:, :] = (255, 0, 0)  # a red frame 15 px wide (outside synface's 170-px centre crop) around grey
    a[15:185, 15:185] = 128
    Image.fromarray(a).save(tmp_path / "big.png")
    corners = {}
    for flags in (["--preset", "synface"], ["--preset", "synface", "--crop", "0"]):
        out = tmp_path / "_".join(flags)
        assert main(["figures", "--result-dir", str(rd), "--image", str(tmp_path / "big.png"), "--out-dir", str(out),
                     "--image-size", str(S), "--n-frames", "3", *flags]) == 0
        corners[len(flags)] = np.asarray(Image.open(out / "input.png").convert("RGB"))[0, 0].tolist()
    assert corners == {2: [128, 128, 128], 4: [255, 0, 0]}


def test_report_names_a_pre_train_start_as_a_pre_train(tmp_path):
    """The start `joint` (a committed joint pre-train) is not a prior: its rows read "joint pre-train alone"
    and "GAN2Shape from the joint pre-train", its image cards "start: joint pre-train"; priors keep their names."""
    assert page.method_text("prior-joint") == "joint pre-train alone"
    assert page.method_text("gan2shape-joint") == "GAN2Shape from the joint pre-train"
    assert page.method_text("gan2shape-official") == "GAN2Shape from the released pre-train"
    assert page.method_text("prior-smoothed_box") == "smoothed_box prior alone"
    assert page.method_text("gan2shape-car-ellipsoid") == "GAN2Shape from the car-ellipsoid prior"
    assert page.method_text("constant") == "constant depth (baseline)"
    rd, _ = make_reconstruction(tmp_path, "img0", "joint")
    card = page._image_row({"dir": rd, "name": "img0", "prior": "joint", "metrics": {"pre-train alone: SIDE": 1.2}},
                           tmp_path)
    assert "start: joint pre-train<br>" in card and "prior: joint" not in card
    assert "prior: box<br>" in page._image_row({"dir": rd, "name": "img0", "prior": "box"}, tmp_path)
