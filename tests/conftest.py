"""Shared fixtures: a tiny, seeded GAN2Shape world (random small StyleGAN2, 32-px images)."""

from __future__ import annotations


import pytest
import torch

S = 32  # working resolution of the tiny world


def tiny_gan(seed: int = 0):
    """A random narrow StyleGAN2 at 64 px (the discriminator needs 4 residual blocks for the step-2
    loss); its images are resized to the 32-px working size like any GAN output."""
    from gan2shape.gan.stylegan2 import Discriminator, Generator

    torch.manual_seed(seed)
    g = Generator(64, style_dim=32, n_mlp=4, channel_multiplier=1, channel_max=32).eval()
    d = Discriminator(64, channel_multiplier=1, channel_max=32).eval()
    return g, d


def disc_mask(size: int = S, radius: float = 0.3) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = ((yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2).sqrt()
    return (r <= radius * size).float()[None, None]


def viewlight():
    from gan2shape.method.sampling import ViewLightDistribution

    return ViewLightDistribution.from_moments(
        torch.zeros(6), torch.diag(torch.tensor([0.05, 0.2, 0.02, 0.05, 0.05, 0.0])) ** 2,
        torch.tensor([0.0, 0.0, 0.0, 0.3]), torch.eye(4) * 0.01)


def tiny_config(**over):
    from gan2shape.method.config import Stage, preset

    kw = dict(image_size=S, n_p=2, collect_iters=2, prior_iters=3, lam_perc=1.0,
              schedule=[Stage(3, 3, 3, flip3=True)], seed=0)
    kw.update(over)
    return preset("car", **kw)


def tiny_model(cfg=None, seed: int = 0, perceptual: str = "discriminator"):
    """GAN2Shape with the tiny GAN; the network init is seeded so two calls give equal models."""
    from gan2shape.method.losses import PerceptualLoss
    from gan2shape.method.model import GAN2Shape

    g, d = tiny_gan(seed)
    torch.manual_seed(seed + 1)
    return GAN2Shape(cfg or tiny_config(), g, d, PerceptualLoss(perceptual, discriminator=d), viewlight())


def tiny_target(model, name: str = "img0", seed: int = 0):
    """A target image that is the GAN's own sample (so its latent is exact), with a disc mask and
    an ellipsoid prior."""
    from gan2shape.method.priors import make_prior
    from gan2shape.method.model import Target

    gen = torch.Generator().manual_seed(100 + seed)
    z = torch.randn(1, model.G.style_dim, generator=gen).to(model.view_mean.dtype)  # the model's precision
    with torch.no_grad():
        w = model.G.style(z)
        img, _ = model.G(w, input_is_w=True)
    mask = disc_mask()
    from gan2shape.method.sampling import postprocess_gan_image

    return Target(name=name, image=postprocess_gan_image(img, S), latent=w, mask=mask,
                  prior=make_prior("ellipsoid", mask=mask, category="car"), origin_size=S)


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def world(tmp_path):
    """Files of a tiny world for the stage commands: GAN checkpoint (gan.pt), one GAN sample
    (img0.png) with its W latent (img0.pt), a disc mask (mask0.png) and the view/light MVN files."""
    from gan2shape.data import save_png
    from gan2shape.gan.stylegan2 import save_latent, save_stylegan2

    g, d = tiny_gan()
    save_stylegan2(tmp_path / "gan.pt", g, d)
    z = torch.randn(1, g.style_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        w = g.style(z)
        img, _ = g(w, input_is_w=True)
    save_png(img[0].clamp(-1, 1), tmp_path / "img0.png")
    save_latent(tmp_path / "img0.pt", w[0])
    save_png(disc_mask()[0], tmp_path / "mask0.png", (0.0, 1.0))
    viewlight().save(tmp_path / "view_mvn.pth", tmp_path / "light_mvn.pth")
    return tmp_path

