"""StyleGAN2 training loop: runs at tiny size, resumes exactly, writes official checkpoints."""

from __future__ import annotations

import json

import torch

from gan2shape.gan.stylegan2 import load_stylegan2
from gan2shape.gan.train_gan import GANConfig, GANTrainer, add_cli, d_logistic_loss, g_nonsaturating_loss

TINY = GANConfig(size=16, style_dim=16, n_mlp=2, channel_max=16, batch=4, d_reg_every=2, seed=0)


def toy_batch(step: int, n: int = 4, size: int = 16) -> torch.Tensor:
    """Deterministic per step: bright discs on dark backgrounds."""
    g = torch.Generator().manual_seed(1000 + step)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = torch.rand(n, 2, generator=g) * size * 0.5 + size * 0.25
    r = ((yy - c[:, :1, None]) ** 2 + (xx - c[:, 1:, None]) ** 2).sqrt()
    disc = (r < size * 0.3).float()
    colour = torch.rand(n, 3, 1, 1, generator=g)
    return (disc[:, None] * colour * 2 - 1)


def test_losses_on_known_logits():
    zero = torch.zeros(4, 1)
    assert torch.isclose(d_logistic_loss(zero, zero), 2 * torch.log(torch.tensor(2.0)))
    assert torch.isclose(g_nonsaturating_loss(zero), torch.log(torch.tensor(2.0)))
    assert g_nonsaturating_loss(torch.full((4, 1), 10.0)) < 1e-4


def test_training_resumes_exactly(tmp_path):
    a = GANTrainer(TINY)
    a.fit(lambda: toy_batch(a.step), steps=4, out_dir=tmp_path / "a", log_every=1, sample_every=2)
    b = GANTrainer(TINY)
    b.fit(lambda: toy_batch(b.step), steps=2, out_dir=tmp_path / "b", log_every=1)
    c = GANTrainer.resume(tmp_path / "b" / "checkpoint.pt")
    assert c.step == 2
    c.fit(lambda: toy_batch(c.step), steps=4, out_dir=tmp_path / "b", log_every=1)
    for m1, m2 in ((a.g, c.g), (a.g_ema, c.g_ema), (a.d, c.d)):
        for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
            assert torch.equal(v1, v2), k
    assert [e["d_loss"] for e in a.log] == [e["d_loss"] for e in c.log]
    assert (tmp_path / "a" / "samples_000002.png").exists() and (tmp_path / "a" / "losses.png").exists()
    assert len((tmp_path / "a" / "log.jsonl").read_text().splitlines()) == 4
    # the checkpoint is an official-format file: it loads with the safe loader
    ck = load_stylegan2(tmp_path / "a" / "checkpoint.pt")
    assert ck.generator.size == 16 and ck.discriminator is not None and ck.args.latent == 16
    img, _ = ck.generator(torch.randn(2, 16))
    assert img.shape == (2, 3, 16, 16)


def test_discriminator_learns_to_separate(tmp_path):
    t = GANTrainer(TINY)
    t.fit(lambda: toy_batch(t.step), steps=30, out_dir=tmp_path, log_every=5)
    assert t.log[-1]["d_loss"] < t.log[0]["d_loss"]


def test_cli_trains_on_an_image_folder_and_exports(tmp_path):
    import argparse

    from gan2shape.data import save_png

    imgs = tmp_path / "imgs"
    for i in range(3):
        save_png(toy_batch(i, 1)[0], imgs / f"{i}.png")
    p = argparse.ArgumentParser()
    add_cli(p.add_subparsers())
    out = tmp_path / "run"
    args = p.parse_args(["train-gan", "--out-dir", str(out), "--images", str(imgs), "--steps", "3",
                         "--size", "16", "--style-dim", "16", "--n-mlp", "2", "--channel-max", "16",
                         "--batch", "2", "--export", str(tmp_path / "gan.pt"), "--device", "cpu"])
    assert args.func(args) == 0
    st = json.loads((out / "status.json").read_text())
    assert st["step"] == 3 and st["done"]
    ck = torch.load(tmp_path / "gan.pt", weights_only=False)
    assert set(ck) == {"g_ema", "d", "args"}


def test_synthetic_pool_source_is_seeded_and_flips():
    from gan2shape.gan.train_gan import _synthetic_source

    a = _synthetic_source(["face", "box"], 16, 3, seed=0, device="cpu", pool=4)
    b = _synthetic_source(["face", "box"], 16, 3, seed=0, device="cpu", pool=4)
    xa, xb = a(), b()
    assert xa.shape == (3, 3, 16, 16) and torch.equal(xa, xb)
    assert -1 <= float(xa.min()) and float(xa.max()) <= 1
