"""Nearest-neighbour check of a synthetic world's StyleGAN2: does it copy its training renders?

The first ``--n-train`` renders of the training pool (``TrainingStream`` with the GAN's seed and the
pool's batch of 256, i.e. the images ``gan2shape train-gan --pool`` drew from first) are the
reference set. For ``--n`` GAN samples (``gan.sample.sample_latents``, truncation 1) and for ``--n``
fresh renders of the same world (another seed: images the GAN never saw), the distance to the nearest
reference image is measured (mean absolute pixel difference in [-1, 1] units, horizontal flips
included, as the training sampler flips). A GAN that memorised its pool would put its samples much
closer to the reference than fresh renders are; one that generalises puts them about as close, or
further (its samples are imperfect). Writes ``nn_check.json`` and ``nn_pairs.png`` (sample | nearest).

    python bench/gan_nn_check.py --gan models/synthetic_v2_gan.pt --world v2 --out results/synthetic_v2/gan
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch


def nearest(x: torch.Tensor, ref: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image of ``x`` (N×3×S×S): the mean absolute difference to its nearest image of ``ref``
    or of its mirror, and that image's index."""
    refs = torch.cat([ref, ref.flip(3)]).flatten(1)
    best_d = torch.full((len(x),), float("inf"))
    best_i = torch.zeros(len(x), dtype=torch.long)
    for a in range(0, len(refs), chunk):
        d = torch.cdist(x.flatten(1), refs[a:a + chunk], p=1) / x[0].numel()
        v, i = d.min(1)
        better = v < best_d
        best_d[better], best_i[better] = v[better], (i[better] + a) % len(ref)
    return best_d, best_i


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gan", required=True, type=Path)
    p.add_argument("--world", choices=["v1", "v2"], default="v2")
    p.add_argument("--n", type=int, default=64, help="GAN samples and fresh renders")
    p.add_argument("--n-train", type=int, default=2048, help="first renders of the training pool")
    p.add_argument("--fresh-seed", type=int, default=987654)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)

    from gan2shape.gan.sample import sample_latents
    from gan2shape.gan.stylegan2 import load_stylegan2
    from gan2shape.gan.train_gan import render_pool, save_grid
    from gan2shape.world.scenes import WORLDS

    ck = load_stylegan2(args.gan, device="cpu")
    G = ck.generator.eval()
    seed = int(getattr(ck.args, "seed", 0)) if ck.args is not None else 0
    families = tuple(WORLDS[args.world])

    ref = render_pool(families, G.size, args.n_train, seed, "cpu").clamp(-1, 1)
    fresh = render_pool(families, G.size, args.n, args.fresh_seed, "cpu").clamp(-1, 1)
    with torch.no_grad():
        w = sample_latents(G, args.n, seed=0)
        fake = torch.cat([G([w[i:i + 16]], input_is_latent=True)[0] for i in range(0, args.n, 16)]).clamp(-1, 1)
    d_fake, i_fake = nearest(fake, ref)
    d_fresh, _ = nearest(fresh, ref)
    res = {"gan": str(args.gan), "world": args.world, "reference": f"first {args.n_train} pool renders (seed {seed})",
           "n": args.n, "distance": "mean |a - b| per pixel and channel, [-1, 1] images, flips included",
           "gan_samples_nn_mean": float(d_fake.mean()), "gan_samples_nn_min": float(d_fake.min()),
           "fresh_renders_nn_mean": float(d_fresh.mean()), "fresh_renders_nn_min": float(d_fresh.min()),
           "gan_samples_nn_median": statistics.median(d_fake.tolist()),
           "fresh_renders_nn_median": statistics.median(d_fresh.tolist())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nn_check.json").write_text(json.dumps(res, indent=1) + "\n")
    pairs = torch.stack([fake[:16], ref[i_fake[:16]]], 1).flatten(0, 1)
    save_grid(pairs, args.out / "nn_pairs.png", nrow=8)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
