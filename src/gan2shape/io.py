"""Safe loading and atomic writing of files.

Every checkpoint is read with ``torch.load(weights_only=True)`` and an explicit allowlist of
extra globals; every output is written to a temporary file (or folder) in the same folder and
renamed into place, so a killed job never leaves a half-written output that Snakemake or DVC would
trust. Temporaries are named ``.<name>.<8 random chars><suffix>``; the next write of the same output
sweeps the ones a killed job left behind. Outputs get the usual ``0666 & ~umask`` mode.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import re
import shutil
import tempfile
import threading
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
        found = re.search(r"\bGLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(f"{path}: refused to load: it pickles {found.group(1)}, which is not an "
                                  f"allowed type (only tensors and plain containers are read)") from e
        raise CheckpointError(f"{path}: not a PyTorch checkpoint, or truncated/corrupt "
                              f"({path.stat().st_size} bytes)") from e
    except Exception as e:  # noqa: BLE001 -- any other failure (EOF, bad zip, KeyError on a text file, ...)
        raise CheckpointError(f"{path}: not a PyTorch checkpoint, or truncated/corrupt "
                              f"({path.stat().st_size} bytes; {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                              ) from e


_umask_lock = threading.Lock()


def _umask() -> int:
    with _umask_lock:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _temp_re(path: Path) -> re.Pattern:
    """The names of ``path``'s temporaries (files and folders made by :func:`atomic_path` /
    :func:`atomic_dir`): ``.<name>.`` then mkstemp's 8 random characters then an optional suffix."""
    return re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}(\.[A-Za-z0-9_]+)?")


def sweep_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` that a killed writer left next to it; return them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pat = _temp_re(path)
    gone = []
    for q in path.parent.iterdir():
        if pat.fullmatch(q.name):
            if q.is_dir() and not q.is_symlink():
                shutil.rmtree(q, ignore_errors=True)
            else:
                q.unlink(missing_ok=True)
            gone.append(q)
    return gone


def _write_error(e: OSError, path: Path) -> OSError:
    """``e`` re-stated for the final output ``path`` (not the hidden temporary)."""
    return type(e)(e.errno, e.strerror or str(e), str(path)) if e.errno else OSError(f"{path}: cannot write ({e})")


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Stale temporaries of ``path`` are swept first; an ``OSError`` while writing (disk full, no
    permission) is raised again naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp",
                                   dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
    except OSError as e:
        raise _write_error(e, path) from e
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise _write_error(e, path) from e
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it becomes ``path``, on failure it is
    removed, so a killed run never leaves a half-filled output folder.

    When ``path`` already is a folder, the new files are moved into it one by one (its other
    files stay)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path)
        if path.exists() and not path.is_dir():
            raise FileExistsError(17, "exists and is not a folder", str(path))
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmpdir", dir=path.parent))
        tmp.chmod(0o777 & ~_umask())
    except OSError as e:
        raise _write_error(e, path) from e
    try:
        yield tmp
        try:
            os.rename(tmp, path)  # fails when path is a folder already
        except OSError:
            if not path.is_dir():
                raise
            for f in tmp.iterdir():
                dest = path / f.name
                if dest.is_dir() and not f.is_dir():
                    shutil.rmtree(dest)
                os.replace(f, dest)
    except OSError as e:
        raise _write_error(e, path) from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # torch reports a failed write (disk full) as a RuntimeError
            if "write" not in str(e).lower():
                raise
            raise OSError(f"{path}: cannot write ({str(e).splitlines()[0]})") from e


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
