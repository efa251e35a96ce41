"""Training a StyleGAN2 on an image stream (the synthetic world's GAN, or a user's own collection).

Non-saturating logistic loss, lazy R1 regularisation of the discriminator, style mixing, an EMA
copy of the generator (``g_ema``), TF32 matmuls on CUDA. Path-length regularisation is left out
(it mostly improves latent-space smoothness at high resolution; our 64-px GAN trains within
minutes). Training is resumable: the checkpoint is an official rosinality-format file (``g``,
``d``, ``g_ema``, ``g_optim``, ``d_optim``, ``args``) plus our progress entries, so it loads with
:func:`gan2shape.gan.stylegan2.load_stylegan2` like any released checkpoint. Outputs: a checkpoint,
a sample grid per interval (fixed z), a loss log (JSON lines) and a loss-curve figure.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..io import CheckpointError, atomic_write_text, safe_torch_load
from .stylegan2 import Discriminator, Generator, save_stylegan2


@dataclass
class GANConfig:
    size: int = 64
    style_dim: int = 128
    n_mlp: int = 8
    channel_multiplier: int = 1
    channel_max: int = 128
    batch: int = 32
    lr: float = 0.002
    r1: float = 0.5               # R1 weight γ (loss γ/2·‖∇D‖², applied lazily; the committed GAN's value)
    d_reg_every: int = 16
    mixing: float = 0.9           # style-mixing probability
    ema_kimg: float = 10.0        # EMA half-life in thousands of images
    seed: int = 0

    def namespace(self) -> argparse.Namespace:
        """The rosinality ``args`` entry (``latent`` = style_dim)."""
        d = asdict(self)
        d["latent"] = d.pop("style_dim")
        return argparse.Namespace(**d)

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> "GANConfig":
        d = dict(vars(ns))
        d["style_dim"] = d.pop("latent")
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def d_logistic_loss(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    """softplus(D(fake)) + softplus(−D(real))."""
    return F.softplus(fake_pred).mean() + F.softplus(-real_pred).mean()


def g_nonsaturating_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """‖∇_x D(x)‖² per image, averaged."""
    (grad,) = torch.autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def make_z(n: int, dim: int, mixing: float, n_latent: int, generator: torch.Generator,
           device) -> tuple[list[torch.Tensor], int | None]:
    """One or (with probability ``mixing``) two latent codes per batch, and the layer where the
    second code takes over (drawn from ``generator`` so that training is reproducible)."""
    two = torch.rand((), generator=generator).item() < mixing
    z = torch.randn(2 if two else 1, n, dim, generator=generator).to(device)
    inject = int(torch.randint(1, n_latent, (), generator=generator)) if two else None
    return list(z.unbind(0)), inject


class GANTrainer:
    """Resumable StyleGAN2 training loop."""

    def __init__(self, cfg: GANConfig, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        kw = dict(style_dim=cfg.style_dim, n_mlp=cfg.n_mlp, channel_multiplier=cfg.channel_multiplier,
                  channel_max=cfg.channel_max)
        self.g = Generator(cfg.size, **kw).to(self.device)
        self.g_ema = Generator(cfg.size, **kw).to(self.device).eval().requires_grad_(False)
        self.g_ema.load_state_dict(self.g.state_dict())
        self.d = Discriminator(cfg.size, channel_multiplier=cfg.channel_multiplier,
                               channel_max=cfg.channel_max).to(self.device)
        # lazy regularisation: scale lr and betas of D (StyleGAN2 appendix)
        c = cfg.d_reg_every / (cfg.d_reg_every + 1)
        self.g_optim = torch.optim.Adam(self.g.parameters(), lr=cfg.lr, betas=(0.0, 0.99))
        self.d_optim = torch.optim.Adam(self.d.parameters(), lr=cfg.lr * c, betas=(0.0, 0.99 ** c))
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.sample_z = torch.randn(16, cfg.style_dim, generator=torch.Generator().manual_seed(cfg.seed + 1))
        self.step = 0
        self.seconds = 0.0
        self.log: list[dict] = []

    # -- checkpoint ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        save_stylegan2(path, self.g_ema, self.d, args=self.cfg.namespace(), g=self.g, extra={
            "g_optim": self.g_optim.state_dict(), "d_optim": self.d_optim.state_dict(),
            "step": self.step, "seconds": self.seconds, "rng": self.rng.get_state(),
            "torch_rng": torch.get_rng_state(), "log": self.log})

    @classmethod
    def resume(cls, path: str | Path, device: str | torch.device = "cpu") -> "GANTrainer":
        ck = safe_torch_load(path)
        for k in ("g", "d", "g_ema", "g_optim", "d_optim", "args", "step"):
            if k not in ck:
                raise CheckpointError(f"{path}: not a resumable training checkpoint (no '{k}')")
        self = cls(GANConfig.from_namespace(ck["args"]), device)
        self.g.load_state_dict(ck["g"])
        self.g_ema.load_state_dict(ck["g_ema"])
        self.d.load_state_dict(ck["d"])
        self.g_optim.load_state_dict(ck["g_optim"])
        self.d_optim.load_state_dict(ck["d_optim"])
        self.step, self.seconds, self.log = ck["step"], ck["seconds"], ck["log"]
        self.rng.set_state(ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
        return self

    # -- one iteration ------------------------------------------------------------------------
    def train_step(self, real: torch.Tensor) -> dict:
        cfg, dev = self.cfg, self.device
        real = real.to(dev)
        n = real.shape[0]
        # 1. discriminator: logistic loss on real vs generated
        self.g.requires_grad_(False)
        self.d.requires_grad_(True)
        z, inject = make_z(n, cfg.style_dim, cfg.mixing, self.g.n_latent, self.rng, dev)
        fake, _ = self.g(z, inject_index=inject, randomize_noise=True)
        d_loss = d_logistic_loss(self.d(real), self.d(fake.detach()))
        self.d_optim.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optim.step()
        out = {"d_loss": float(d_loss.detach())}
        # 2. lazy R1 on real images
        if self.step % cfg.d_reg_every == 0 and cfg.r1 > 0:
            real_req = real.detach().requires_grad_(True)
            r1 = r1_penalty(self.d(real_req), real_req)
            self.d_optim.zero_grad(set_to_none=True)
            (cfg.r1 / 2 * r1 * cfg.d_reg_every).backward()
            self.d_optim.step()
            out["r1"] = float(r1.detach())
        # 3. generator: non-saturating loss
        self.g.requires_grad_(True)
        self.d.requires_grad_(False)
        z, inject = make_z(n, cfg.style_dim, cfg.mixing, self.g.n_latent, self.rng, dev)
        fake, _ = self.g(z, inject_index=inject, randomize_noise=True)
        g_loss = g_nonsaturating_loss(self.d(fake))
        self.g_optim.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optim.step()
        out["g_loss"] = float(g_loss.detach())
        # 4. EMA of the generator weights (buffers, i.e. the fixed noises, are copied)
        beta = 0.5 ** (n / max(cfg.ema_kimg * 1000, 1e-8))
        with torch.no_grad():
            for pe, p in zip(self.g_ema.parameters(), self.g.parameters()):
                pe.lerp_(p, 1 - beta)
            for be, b in zip(self.g_ema.buffers(), self.g.buffers()):
                be.copy_(b)
        self.step += 1
        return out

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        img, _ = self.g_ema(self.sample_z.to(self.device), randomize_noise=False)
        return img.clamp(-1, 1).cpu()

    def fit(self, data: Callable[[], torch.Tensor], steps: int, out_dir: str | Path,
            max_seconds: float | None = None, log_every: int = 100, sample_every: int = 1000,
            checkpoint_every: int = 1000) -> bool:
        """Train until ``steps`` total iterations (or ``max_seconds`` in this call); checkpoint at
        intervals and at the end. Returns True when the target step count was reached."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        t0 = time.perf_counter()
        start_seconds = self.seconds
        acc: dict = {}
        while self.step < steps:
            losses = self.train_step(data())
            for k, v in losses.items():
                acc.setdefault(k, []).append(v)
            self.seconds = start_seconds + time.perf_counter() - t0
            if not all(math.isfinite(v) for v in losses.values()):
                raise FloatingPointError(f"GAN training diverged at step {self.step}: {losses}")
            if self.step % log_every == 0:
                entry = {"step": self.step, "seconds": round(self.seconds, 2),
                         "images": self.step * self.cfg.batch,
                         **{k: sum(v) / len(v) for k, v in acc.items()}}
                self.log.append(entry)
                acc = {}
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(entry) + "\n")
            if self.step % sample_every == 0:
                save_grid(self.samples(), out / f"samples_{self.step:06d}.png")
            timeout = max_seconds is not None and time.perf_counter() - t0 > max_seconds
            if self.step % checkpoint_every == 0 or timeout:
                self.save(out / "checkpoint.pt")
            if timeout:
                break
        self.save(out / "checkpoint.pt")
        save_grid(self.samples(), out / "samples_last.png")
        plot_losses(self.log, out / "losses.png")
        return self.step >= steps


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 4) -> None:
    """A square grid of images in [-1, 1] as one PNG."""
    from ..data import save_png

    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    grid = torch.ones(c, rows * h, nrow * w)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, r * h:(r + 1) * h, col * w:(col + 1) * w] = images[i]
    save_png(grid, path)


def plot_losses(log: list[dict], path: str | Path) -> None:
    """Loss curves (D, G, R1) against images seen."""
    if not log:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = [e["images"] / 1000 for e in log]
    for k in ("d_loss", "g_loss", "r1"):
        ys = [e.get(k) for e in log]
        if any(y is not None for y in ys):
            ax.plot([a for a, y in zip(x, ys) if y is not None], [y for y in ys if y is not None], label=k)
    ax.set_xlabel("thousands of images")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def _synthetic_source(families: list[str], size: int, batch: int, seed: int, device,
                      pool: int = 0) -> Callable[[], torch.Tensor]:
    """Fresh renders every batch, or (``pool`` > 0) batches drawn from ``pool`` renders made once
    (rendering costs ~3× a 64-px GAN step on a GPU, so a pool trains several times faster)."""
    from ..world.render import TrainingStream

    if pool <= 0:
        stream = TrainingStream(families=tuple(families), size=size, batch=batch, seed=seed, device=device)
        return stream.next
    return _pool_sampler(render_pool(families, size, pool, seed, device), batch, seed)


def render_pool(families, size: int, n: int, seed: int, device) -> torch.Tensor:
    """The first ``n`` renders of the seeded training stream, made in batches of 256: the pool
    ``train-gan --pool n`` trains from (``bench/gan_nn_check.py`` compares samples with it)."""
    from ..world.render import TrainingStream

    stream = TrainingStream(families=tuple(families), size=size, batch=256, seed=seed, device=device)
    chunks, k = [], 0
    while k < n:
        chunks.append(stream.next())
        k += chunks[-1].shape[0]
    return torch.cat(chunks)[:n]


def _pool_sampler(images: torch.Tensor, batch: int, seed: int) -> Callable[[], torch.Tensor]:
    """Random batches with random horizontal flips from a tensor of images."""
    g = torch.Generator().manual_seed(seed)

    def next_batch() -> torch.Tensor:
        idx = torch.randint(len(images), (batch,), generator=g).to(images.device)
        x = images[idx]
        flip = (torch.rand(batch, generator=g) < 0.5).to(images.device)
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)

    return next_batch


def _folder_source(folder: Path, size: int, batch: int, seed: int, device) -> Callable[[], torch.Tensor]:
    """Random batches (with horizontal flips) from a folder of square PNG/JPG images."""
    from ..data import load_image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .png/.jpg images")
    return _pool_sampler(torch.cat([load_image(p, size)[0] for p in files]).to(device), batch, seed)


def cmd_train_gan(args: argparse.Namespace) -> int:
    """Train (or resume training) a StyleGAN2 on synthetic renders or an image folder."""
    t_call = time.perf_counter()   # --max-seconds counts from here: the pool's rendering is part of the call
    out = Path(args.out_dir)
    ck = out / "checkpoint.pt"
    if ck.exists():
        trainer = GANTrainer.resume(ck, args.device)
    else:
        cfg = GANConfig(**{f.name: getattr(args, f.name) for f in fields(GANConfig)})
        trainer = GANTrainer(cfg, args.device)
    c = trainer.cfg
    if args.images is not None:
        data = _folder_source(Path(args.images), c.size, c.batch, c.seed + trainer.step, args.device)
    else:
        from ..world.scenes import WORLDS, world_of

        families = args.families if args.families else list(WORLDS[args.world])
        try:
            if world_of(families) != args.world:
                raise ValueError(f"--families {families} are not families of world {args.world}")
        except ValueError as e:
            raise SystemExit(f"train-gan: {e}")
        # the stream's seed moves with the step so a resumed run sees fresh renders
        data = _synthetic_source(families, c.size, c.batch, c.seed + trainer.step, args.device, args.pool)
    left = None if args.max_seconds is None else args.max_seconds - (time.perf_counter() - t_call)
    done = trainer.fit(data, args.steps, out, max_seconds=left, log_every=args.log_every,
                       sample_every=args.sample_every, checkpoint_every=args.checkpoint_every)
    if args.export is not None:
        # the file the method uses: g_ema + d + args only (small, official layout)
        save_stylegan2(args.export, trainer.g_ema, trainer.d, args=c.namespace())
    atomic_write_text(json.dumps({"step": trainer.step, "seconds": trainer.seconds, "done": done,
                                  "config": asdict(c)}, indent=2) + "\n", out / "status.json")
    return 0 if done else 3


def add_cli(sub) -> None:
    p = sub.add_parser("train-gan", help=cmd_train_gan.__doc__)
    p.add_argument("--out-dir", required=True, type=Path, help="training folder (resumes from its checkpoint.pt)")
    p.add_argument("--images", type=Path, help="folder of training images (default: synthetic renders)")
    p.add_argument("--world", choices=["v1", "v2"], default="v1",
                   help="synthetic world to render (v1: face box; v2: face2 car2, docs/world.md)")
    p.add_argument("--families", nargs="+", help="synthetic families to render (default: all of --world)")
    p.add_argument("--pool", type=int, default=24000, help="pre-render this many synthetic images and sample from them (0: a fresh render every step)")
    p.add_argument("--steps", type=int, required=True, help="total iterations to reach")
    p.add_argument("--max-seconds", type=float, help="stop (and checkpoint) this many seconds after the command started "
                   "(data set-up included)")
    p.add_argument("--export", type=Path, help="also write g_ema + d + args to this file")
    for f in fields(GANConfig):  # architecture and optimisation flags, defaults from GANConfig
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--sample-every", type=int, default=1000)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.set_defaults(func=cmd_train_gan)
