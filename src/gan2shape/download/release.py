"""Archives (integrity test, safe extraction, split-archive concatenation) and fetching the
release and the VGG16 weights (part of ``gan2shape.download``)."""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping, Sequence

from ..io import atomic_path
from .fetch import (CHUNK, DEFAULT_CACHE, ArchiveError, ChecksumError, DownloadLock, _as_lock, _check_hash,
                    download_file, join_url, load_manifest)

log = logging.getLogger("gan2shape.download")

# --------------------------------------------------------------------------------------------
# archives
# --------------------------------------------------------------------------------------------

def _unsafe_reason(m: tarfile.TarInfo) -> str | None:
    name = m.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or os.path.isabs(name):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "'..' in path"
    if m.issym() or m.islnk():
        target = m.linkname
        if target.startswith("/") or os.path.isabs(target):
            return f"link to absolute path {target}"
        base = PurePosixPath(name).parent if m.issym() else PurePosixPath(".")
        depth = 0
        for p in (base / target).parts:
            depth += -1 if p == ".." else (0 if p == "." else 1)
            if depth < 0:
                return f"link leaves the archive ({target})"
    if m.ischr() or m.isblk() or m.isfifo():
        return "device or fifo"
    return None


def check_archive(path: str | os.PathLike) -> list[tarfile.TarInfo]:
    """Test the whole gzip stream (CRC, length, no trailing garbage) and list the tar members;
    raise :class:`ArchiveError` naming the archive and the first unsafe member."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            while f.read(CHUNK):
                pass
        with tarfile.open(path, "r:gz") as tar:
            members = tar.getmembers()
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        raise ArchiveError(f"{path}: not a complete gzip/tar archive ({type(e).__name__}: {e})") from e
    bad = [(m.name, r) for m in members if (r := _unsafe_reason(m))]
    if bad:
        listed = "; ".join(f"{n!r}: {r}" for n, r in bad[:5])
        raise ArchiveError(f"{path}: refusing to extract {len(bad)} unsafe member(s): {listed}")
    return members


def _merge_into(src: Path, dst: Path) -> None:
    """Rename ``src`` onto ``dst``; folders that already exist are merged entry by entry."""
    if dst.is_dir() and src.is_dir() and not dst.is_symlink():
        for child in src.iterdir():
            _merge_into(child, dst / child.name)
        src.rmdir()
    elif dst.is_dir() and not dst.is_symlink():
        raise ArchiveError(f"cannot replace folder {dst} by a file from the archive")
    else:
        os.replace(src, dst)


def extract_archive(path: str | os.PathLike, dest: str | os.PathLike,
                    members: list[tarfile.TarInfo] | None = None) -> list[str]:
    """Check (unless ``members`` from :func:`check_archive` are given), then extract ``path`` into
    a temporary folder inside ``dest`` and rename its top-level entries into ``dest``
    (existing folders are merged entry by entry). Returns the top-level names."""
    path, dest = Path(path), Path(dest)
    members = check_archive(path) if members is None else members
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".extract-{path.name}.", dir=dest))
    try:
        with tarfile.open(path, "r:gz") as tar:
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **kw)
        tops = sorted(p.name for p in tmp.iterdir())
        for top in tops:
            _merge_into(tmp / top, dest / top)
        return tops
    except tarfile.TarError as e:
        raise ArchiveError(f"{path}: extraction failed ({type(e).__name__}: {e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _concatenate(parts: Sequence[Path], out: Path) -> None:
    """Byte-wise concatenation of ``parts`` in the given order, written atomically."""
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, f, CHUNK)


# --------------------------------------------------------------------------------------------
# the release and VGG16
# --------------------------------------------------------------------------------------------

@dataclass
class _Ctx:
    lock: DownloadLock
    retries: int = 3
    timeout: float = 30
    backoff: float = 1.0
    progress: bool = False
    new: list[str] = field(default_factory=list)  # lock entries first recorded in this run

    def get(self, url: str, dest: Path, sha256: str | None, size: int | None, name: str) -> Path:
        """download_file with this run's settings, remembering newly trusted names."""
        known = self.lock.get(name) is not None
        out = download_file(url, dest, sha256, self.lock, self.retries, self.timeout, name=name, size=size,
                            backoff=self.backoff, progress=self.progress)
        if not known:
            self.new.append(name)
        return out

    def check(self, path: Path, name: str, sha256: str | None, size: int | None) -> str:
        """_check_hash that remembers newly trusted names."""
        known = self.lock.get(name) is not None
        sha = _check_hash(path, name, sha256, size, self.lock, None)
        if not known:
            self.new.append(name)
        return sha

    def have(self, path: Path, name: str, sha256: str | None, size: int | None) -> str | None:
        """The hash of ``path`` if it is there and verifies; a bad copy is removed (None)."""
        if not path.is_file():
            return None
        try:
            return self.check(path, name, sha256, size)
        except ChecksumError as e:
            log.warning("%s; fetching it again", e)
            return None


def fetch_release(base_url: str | None, dest: str | os.PathLike, lock: DownloadLock | str | os.PathLike,
                  *, cache_dir: str | os.PathLike | None = None, archives: Iterable[str] | None = None,
                  retries: int = 3, timeout: float = 30, backoff: float = 1.0, progress: bool = False,
                  keep_parts: bool = False, remove_archives: bool = False, force: bool = False,
                  manifest: Mapping | None = None) -> dict[str, Path]:
    """Download, verify and extract the release archives into ``dest``.

    ``base_url`` (a URL or local folder; default the official release) replaces the manifest's
    base. Archives go to ``cache_dir`` (default ``dest/downloads``). Split archives are
    downloaded part by part, concatenated in manifest order, and the parts removed unless
    ``keep_parts``. An archive that the lock file says was extracted into ``dest`` (with its
    top-level folders present, and the same hash if the archive is still there) is skipped
    without any request. Returns ``archive name → archive path`` (the target folder if skipped).
    """
    manifest = manifest or load_manifest()
    dest = Path(dest)
    rel = manifest["release"]
    base = base_url or rel["base_url"]
    cache = Path(cache_dir) if cache_dir is not None else dest / DEFAULT_CACHE
    ctx = _Ctx(_as_lock(lock), retries, timeout, backoff, progress)
    wanted = set(archives) if archives is not None else None
    out: dict[str, Path] = {}
    for arc in rel["archives"]:
        name = arc["name"]
        if wanted is not None and name not in wanted:
            continue
        target = dest / arc.get("extract_to", ".")
        archive = cache / name
        sha, size = arc.get("sha256"), arc.get("size")
        done = ctx.lock.extracted(name)
        if done and not force and all((target / c).exists() for c in arc.get("creates", [])):
            if not archive.exists():
                log.info("%s: already extracted into %s (lock %s)", name, target, ctx.lock.path)
                out[name] = target
                continue
            if ctx.have(archive, name, sha, size) == done["sha256"]:
                log.info("%s: verified, already extracted into %s", name, target)
                out[name] = archive
                continue
        parts = arc["parts"]
        single = len(parts) == 1 and parts[0]["name"] == name
        try:
            if single:
                p = parts[0]
                ctx.get(join_url(base, p["url"]), archive, p.get("sha256") or sha, p.get("size") or size, name)
            elif ctx.have(archive, name, sha, size) is None:
                paths = [ctx.get(join_url(base, p["url"]), cache / p["name"], p.get("sha256"), p.get("size"),
                                 p["name"]) for p in parts]
                _concatenate(paths, archive)  # byte-wise, in manifest order (x00, x01, x02, x03)
                log.info("%s: concatenated %s", name, " + ".join(p["name"] for p in parts))
                ctx.check(archive, name, sha, size)
            members = check_archive(archive)
        except ArchiveError:
            # a corrupt archive must not stay trusted: drop the files and lock entries of this run
            archive.unlink(missing_ok=True)
            for n in dict.fromkeys([name] + [p["name"] for p in parts]):
                if n in ctx.new:
                    ctx.lock.forget(n)
                    (cache / n).unlink(missing_ok=True)
            raise
        if not single and not keep_parts:
            for p in parts:
                (cache / p["name"]).unlink(missing_ok=True)
        tops = extract_archive(archive, target, members)
        log.info("%s: extracted %s into %s", name, ", ".join(tops), target)
        ctx.lock.record_extracted(name, ctx.lock.get(name)["sha256"], target)
        out[name] = archive
        if remove_archives:
            archive.unlink(missing_ok=True)
    return out


def fetch_vgg(dest: str | os.PathLike, lock: DownloadLock | str | os.PathLike | None = None,
              url: str | None = None, mirror: str | None = None, *, retries: int = 3, timeout: float = 30,
              backoff: float = 1.0, progress: bool = False, manifest: Mapping | None = None) -> Path:
    """torchvision's VGG16 ImageNet weights (pinned SHA-256) into ``dest/<manifest dest>``.
    Source: ``url``, else ``<mirror>/vgg16-397923af.pth``, else the official URL."""
    spec = (manifest or load_manifest())["files"]["vgg"]
    src = url or (join_url(mirror, spec["name"]) if mirror else spec["url"])
    return download_file(src, Path(dest) / spec["dest"], spec["sha256"], lock, retries, timeout,
                         name=spec["name"], size=spec.get("size"), backoff=backoff, progress=progress)
