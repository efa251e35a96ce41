"""Safe loading and atomic writing of files.

Every checkpoint is read with ``torch.load(weights_only=True)`` and an explicit allowlist of
extra globals; every output is written to a temporary file in the same folder and renamed into
place, so a killed job never leaves a half-written file that Snakemake or DVC would trust.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

# Globals an official checkpoint may pickle besides tensors (rosinality train.py stores its
# argparse Namespace under 'args').
DEFAULT_ALLOWED_GLOBALS: tuple = (argparse.Namespace,)


class CheckpointError(RuntimeError):
    """A checkpoint or input file is missing, unreadable or of the wrong layout."""


def safe_torch_load(path: str | os.PathLike, allowed: Iterable[Any] = DEFAULT_ALLOWED_GLOBALS,
                    map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` and an explicit allowlist of extra globals.

    Raises :class:`CheckpointError` naming the file when it is missing, truncated, not a torch
    file, or pickles a global that is not allowed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to unpickle (weights_only=True): {e}") from e
    except Exception as e:  # noqa: BLE001 -- any other failure (EOF, bad zip, KeyError on a text file, ...)
        raise CheckpointError(f"{path}: unreadable or truncated torch file ({type(e).__name__}: {e})") from e


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    atomic_write_bytes(text.encode("utf-8"), path)


def torch_bytes(obj: Any) -> bytes:
    """Serialise ``obj`` with ``torch.save`` into bytes (for tests and checksums)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
