"""Spreading work over the GPUs of one host, deterministically (issue 15 item 5, issue 12).

Pure Python (no torch): the Snakefile imports it to give every ``reconstruct`` job its GPU, and
``bench/speed.py`` to split images over one process per GPU. Job ``i`` runs on ``gpus[i mod G]``;
each job also claims a per-GPU resource ``gpu_<id>`` so that ``snakemake --resources gpu=G gpu_0=1
gpu_1=1 ...`` runs at most one job per GPU at a time (``gpu_<id>=n``: n per GPU).
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence, TypeVar

T = TypeVar("T")

__all__ = ["job_index", "gpu_of", "device_of", "gpu_resources", "shard", "resources_flag"]


def job_index(image: str, images: Sequence[str], prior: str = "", priors: Sequence[str] = ()) -> int:
    """The index of the job (prior, image): ``prior_pos · N + image_pos`` with the image's position
    in ``images`` (a prior outside ``priors``: by a CRC of its name); an image outside the list (e.g. the synthetic benchmark's) is placed by the
    number its name ends with, else by a CRC of its name (stable across runs and machines)."""
    if image in images:
        pos = list(images).index(image)
    else:
        m = re.search(r"(\d+)$", image)
        pos = int(m.group(1)) if m else zlib.crc32(image.encode())
    if prior in priors:
        p = list(priors).index(prior)
    else:
        p = zlib.crc32(prior.encode()) % 997 if prior else 0
    return p * max(len(images), 1) + pos


def gpu_of(index: int, gpus: Sequence[int]) -> int | None:
    """The GPU id of job ``index``: ``gpus[index mod G]``; None without GPUs."""
    if not gpus:
        return None
    return list(gpus)[index % len(gpus)]


def device_of(index: int, device: str, gpus: Sequence[int]) -> str:
    """The ``--device`` of job ``index``: ``cuda:<id>`` when ``device`` is cuda and ``gpus`` is
    given, else ``device`` unchanged."""
    if device != "cuda" or not gpus:
        return device
    return f"cuda:{gpu_of(index, gpus)}"


def gpu_resources(index: int, gpus: Sequence[int]) -> dict[str, int]:
    """The per-GPU resources of job ``index``: 1 of ``gpu_<its id>``, 0 of the others."""
    g = gpu_of(index, gpus)
    return {f"gpu_{d}": int(d == g) for d in gpus}


def resources_flag(gpus: Sequence[int], per_gpu: int = 1) -> str:
    """The ``--resources`` value that runs ``per_gpu`` jobs per GPU on every GPU of ``gpus``."""
    return " ".join([f"gpu={per_gpu * len(gpus)}"] + [f"gpu_{d}={per_gpu}" for d in gpus])


def shard(items: Sequence[T], n: int) -> list[list[T]]:
    """``items`` dealt round-robin into ``n`` shards (item i to shard i mod n), order kept."""
    if n < 1:
        raise ValueError(f"need at least one shard, got {n}")
    return [list(items[i::n]) for i in range(n)]
