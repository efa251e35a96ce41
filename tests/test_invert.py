"""GAN inversion (gan2shape.gan.invert) on a tiny random StyleGAN2 at 32 px."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from conftest import disc_mask
from gan2shape.gan.invert import InversionConfig, add_cli, invert, lr_schedule, noise_schedule, psnr
from gan2shape.gan.stylegan2 import Discriminator, Generator, load_latent, save_latent, save_stylegan2

STEPS = 100


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny convs are much faster single-threaded (and robust to a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_g(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(32, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=32).eval()


@pytest.fixture(scope="module")
def G():
    return tiny_g()


def _w_targets(G, n=3, seed=5):
    z = torch.randn(n, G.style_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = G.style(z.to(next(G.parameters()).dtype))
        x, _ = G(w, input_is_w=True)
    return w, x


def _wplus_targets(G, n=3, seed=5):
    """Style-mixed images (two codes, switched half-way): in W+ but not in W."""
    gen = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(n, G.style_dim, generator=gen), torch.randn(n, G.style_dim, generator=gen)
    with torch.no_grad():
        x, _ = G([G.style(z1), G.style(z2)], input_is_w=True, inject_index=G.n_latent // 2)
    return x


@pytest.fixture(scope="module")
def w_result(G):
    w, x = _w_targets(G)
    return x, invert(G, x, InversionConfig(steps=STEPS, n_mean_samples=1024))


# ---------------------------------------------------------------------------------------------

def test_psnr_known_values():
    x = torch.zeros(2, 3, 8, 8)
    assert torch.equal(psnr(x, x), torch.full((2,), 100.0))  # identical -> capped at 100 dB
    y = x + 0.2  # 0.1 in [0, 1] units -> MSE 0.01 -> 20 dB
    assert torch.allclose(psnr(x, y), torch.full((2,), 20.0), atol=1e-4)
    assert math.isclose(float(psnr(-torch.ones(1, 3, 4, 4), torch.ones(1, 3, 4, 4))), 0.0, abs_tol=1e-6)
    # values outside [-1, 1] are clamped first
    assert torch.equal(psnr(x + 3, x + 1), torch.full((2,), 100.0))
    # masked: error only outside the mask -> cap; inside -> 20 dB regardless of the outside
    m = torch.zeros(2, 1, 8, 8)
    m[:, :, :4] = 1
    y2 = x.clone()
    y2[:, :, 4:] = 0.6
    assert torch.equal(psnr(x, y2, m), torch.full((2,), 100.0))
    y3 = y2.clone()
    y3[:, :, :4] = 0.2
    assert torch.allclose(psnr(x, y3, m[:, 0]), torch.full((2,), 20.0), atol=1e-4)
    # soft mask weights: half weight on an error 0.1 region, zero elsewhere still 20 dB
    assert torch.allclose(psnr(x, y3, 0.5 * m), torch.full((2,), 20.0), atol=1e-4)
    assert torch.isnan(psnr(x, y, torch.zeros(2, 1, 8, 8))).all()


def test_schedules():
    assert lr_schedule(0.0) == 0.0 and lr_schedule(0.05) == pytest.approx(1.0)
    assert lr_schedule(0.5) == pytest.approx(1.0) and lr_schedule(1.0) == pytest.approx(0.0)
    assert lr_schedule(0.875) == pytest.approx(0.5)
    assert noise_schedule(0.0) == 1.0 and noise_schedule(0.375) == pytest.approx(0.25)
    assert noise_schedule(0.75) == 0.0 and noise_schedule(0.9) == 0.0


def test_w_inversion_raises_psnr(w_result):
    x, r = w_result
    assert r.latents.shape == (3, 32) and r.reconstructions.shape == x.shape
    assert r.loss_history.shape == (STEPS, 3) and r.psnr_masked is None
    gain = r.psnr - r.psnr_init
    print("W: init", r.psnr_init.tolist(), "final", r.psnr.tolist())
    assert (gain > 5).all() and gain.mean() > 15
    assert r.loss_history[-5:].mean() < 0.25 * r.loss_history[:5].mean()


def test_saved_latent_regenerates_the_reconstruction_exactly(G, w_result, tmp_path):
    x, r = w_result
    for i in range(3):
        save_latent(tmp_path / f"{i}.pt", r.latents[i:i + 1])
        w = load_latent(tmp_path / f"{i}.pt", G.style_dim)
        assert w.shape == (1, 32)
        with torch.no_grad():
            img, _ = G(w, input_is_w=True, randomize_noise=False)
        assert torch.equal(img, r.reconstructions[i:i + 1])  # bit-identical
    assert not any(p.grad is not None for p in G.parameters())  # G untouched


def test_wplus_at_least_as_good_as_w_on_wplus_images(G, tmp_path):
    x = _wplus_targets(G)
    rw = invert(G, x, InversionConfig(space="w", steps=STEPS, n_mean_samples=1024))
    rp = invert(G, x, InversionConfig(space="w+", steps=STEPS, n_mean_samples=1024))
    print("W+ images: W", rw.psnr.tolist(), "W+", rp.psnr.tolist(), "init", rp.psnr_init.tolist())
    assert rp.latents.shape == (3, G.n_latent, 32)
    assert (rp.psnr - rp.psnr_init > 5).all()
    assert rp.psnr.mean() >= rw.psnr.mean() + 2
    save_latent(tmp_path / "p.pt", rp.latents[:1])
    wp = load_latent(tmp_path / "p.pt", 32)
    assert wp.shape == (1, G.n_latent, 32)
    with torch.no_grad():
        assert torch.equal(G(wp, input_is_w=True)[0], rp.reconstructions[:1])


@pytest.mark.parametrize("space", ["w", "w+"])
def test_per_image_independence_of_batch(space):
    """In float64 the result of an image does not depend on its batch mates (to 1e-9). In float32,
    batched convs differ from single ones by ~1e-7, which Adam on an L1 loss amplifies to ~5e-3
    in the latent after 25 steps -- numerical noise only, so there just the PSNR is compared."""
    g64 = tiny_g().double()
    _, x = _w_targets(g64, n=2, seed=11)
    masks = torch.cat([disc_mask(32), disc_mask(32, 0.4)]).double()
    cfg = InversionConfig(space=space, steps=25, n_mean_samples=512)
    both = invert(g64, x, cfg, masks=masks)
    alone = invert(g64, x[:1], cfg, masks=masks[:1])
    b_alone = invert(g64, x[1:], cfg, masks=masks[1:], image_ids=[1])
    assert both.latents.dtype == torch.float64
    assert torch.allclose(both.latents[:1], alone.latents, atol=1e-9, rtol=0)
    assert torch.allclose(both.latents[1:], b_alone.latents, atol=1e-9, rtol=0)
    assert torch.allclose(both.psnr_masked[:1], alone.psnr_masked, atol=1e-6)
    assert both.psnr_masked.shape == (2,)
    # a different batch mate changes nothing beyond float noise
    g32 = tiny_g()
    x32, m32 = x.float(), masks.float()
    other = _wplus_targets(g32, n=1, seed=4)
    r1 = invert(g32, torch.cat([x32[:1], x32[1:]]), cfg, masks=m32)
    r2 = invert(g32, torch.cat([x32[:1], other]), cfg, masks=m32)
    assert abs(float(r1.psnr[0] - r2.psnr[0])) < 0.1
    assert (r1.latents[0] - r2.latents[0]).abs().max() < 0.05


def test_discriminator_perceptual_term(G):
    from gan2shape.method.losses import PerceptualLoss

    torch.manual_seed(3)
    d = Discriminator(32, channel_multiplier=1, channel_max=32).eval()
    perc = PerceptualLoss("discriminator", discriminator=d, ftr_num=3)
    _, x = _w_targets(G, n=2, seed=13)
    r = invert(G, x, InversionConfig(steps=40, n_mean_samples=512, lam_perceptual=1.0), perceptual=perc)
    assert (r.psnr - r.psnr_init > 5).all()
    assert not any(p.grad is not None for p in d.parameters())


def test_masked_loss_focuses_on_object(G):
    _, x = _w_targets(G, n=1, seed=7)
    m = disc_mask(32)
    noisy = torch.where(m.bool(), x, torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    cfg = InversionConfig(steps=40, n_mean_samples=512, mask_bg_weight=0.0)
    r = invert(G, noisy, cfg, masks=m)
    assert r.psnr_masked[0] > r.psnr[0] + 3  # object fitted much better than the random background


def test_bad_inputs(G):
    with pytest.raises(ValueError, match="space"):
        invert(G, torch.zeros(1, 3, 32, 32), InversionConfig(space="z"))
    with pytest.raises(ValueError, match="B×3×S×S"):
        invert(G, torch.zeros(1, 32, 32), InversionConfig(steps=1))
    with pytest.raises(ValueError, match="perceptual"):
        invert(G, torch.zeros(1, 3, 32, 32), InversionConfig(steps=1, lam_perceptual=1.0))


@pytest.fixture
def world(tmp_path):
    g = tiny_g(1)
    torch.manual_seed(2)
    d = Discriminator(32, channel_multiplier=1, channel_max=32).eval()
    save_stylegan2(tmp_path / "gan.pt", g, d)
    from gan2shape.data import save_png

    _, x = _w_targets(g, n=2, seed=3)
    for i in range(2):
        save_png(x[i].clamp(-1, 1), tmp_path / f"im{i}.png")
        save_png(disc_mask(32)[0], tmp_path / f"m{i}.png", (0.0, 1.0))
    (tmp_path / "list.txt").write_text("im0.png\n\nim1.png\n")
    return tmp_path


def _run(argv):
    p = argparse.ArgumentParser()
    add_cli(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["invert", *argv])
    return args.func(args)


def test_cli_writes_latents_reconstructions_summary(world):
    out = world / "out"
    rc = _run(["--gan", str(world / "gan.pt"), "--images", str(world / "im0.png"), str(world / "im1.png"),
               "--masks", str(world / "m0.png"), str(world / "m1.png"), "--out-dir", str(out),
               "--steps", "40", "--batch-size", "1", "--device", "cpu", "--n-mean-samples", "512"])
    assert rc == 0
    s = json.loads((out / "inversion_summary.json").read_text())
    assert set(s["images"]) == {"im0", "im1"}
    for name, rec in s["images"].items():
        w = load_latent(out / f"{name}.pt", 32)
        assert w.shape == (1, 32)
        assert torch.load(out / f"{name}.pt", weights_only=True).shape == (32,)  # official W format
        assert (out / f"{name}_inv.png").is_file()
        assert rec["psnr_masked"] > rec["psnr_init"] + 3 and rec["psnr"] > rec["psnr_init"]
    assert s["mean_psnr"] == pytest.approx(sum(r["psnr"] for r in s["images"].values()) / 2)
    assert s["config"]["lam_perceptual"] == 0.0 and s["config"]["steps"] == 40
    assert not list(out.glob(".*"))  # no temp files left behind

    # --list/--root, W+, batch of 2: W+ latents in the (1, n, C) format
    out2 = world / "out2"
    assert _run(["--gan", str(world / "gan.pt"), "--list", str(world / "list.txt"), "--out-dir", str(out2),
                 "--steps", "3", "--space", "w+", "--device", "cpu", "--n-mean-samples", "64"]) == 0
    assert torch.load(out2 / "im1.pt", weights_only=True).shape == (1, 8, 32)
    assert json.loads((out2 / "inversion_summary.json").read_text())["mean_psnr_masked"] is None


def test_cli_missing_image_names_the_file(world, monkeypatch):
    import gan2shape.cli as cli

    # through the package CLI (the stage registry lists this module)
    assert "gan2shape.gan.invert" in cli.STAGE_MODULES
    with pytest.raises(FileNotFoundError, match="nope.png"):
        cli.main(["invert", "--gan", str(world / "gan.pt"), "--images", str(world / "im0.png"),
                  str(world / "nope.png"), "--out-dir", str(world / "o"), "--steps", "1", "--device", "cpu"])
    assert not (world / "o" / "im0.pt").exists()  # inputs are validated before any work
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        _run(["--gan", str(world / "gan.pt"), "--list", str(world / "missing.txt"), "--out-dir", str(world / "o")])
    with pytest.raises(ValueError, match="1 masks for 2 images"):
        _run(["--gan", str(world / "gan.pt"), "--list", str(world / "list.txt"), "--masks", str(world / "m0.png"),
              "--out-dir", str(world / "o")])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_invert_on_cuda(G):
    g = tiny_g().cuda()
    _, x = _w_targets(g, n=4)
    r = invert(g, x.cuda(), InversionConfig(steps=50, n_mean_samples=512), masks=disc_mask(32).repeat(4, 1, 1, 1))
    assert r.latents.is_cuda and (r.psnr - r.psnr_init > 5).all()
