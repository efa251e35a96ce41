"""Download, verify and unpack the official GAN2Shape artefacts (``gan2shape download``).

What is fetched is described by the package manifest ``manifest.json`` (ARTEFACTS.md §1,
METHOD.md §9): the v1.0 release (``data.tar.gz``, and ``x00``..``x03`` which concatenated in this
order form ``checkpoints.tar.gz``) and torchvision's VGG16 weights for LPIPS.

* Streaming download into ``<file>.part`` with resume by HTTP ``Range``, a restart when the server
  ignores ``Range``, and bounded retries with exponential backoff on transient errors.
* SHA-256 pinned where published (VGG16); otherwise recorded in a lock file
  (``data/download.lock.json``) on first download and verified on every later one. A mismatch
  removes the file and names it with both hashes.
* Archives are tested (whole gzip stream + tar listing), members with absolute paths, ``..`` or
  links leaving the tree are refused, and they are extracted into a temporary folder next to the
  target and renamed into place.
* :func:`verify_layout` checks the expected ``checkpoints/`` and ``data/`` trees per dataset.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping, Sequence

from .io import CheckpointError, atomic_path, atomic_write_text, safe_torch_load

log = logging.getLogger("gan2shape.download")

MIRROR_ENV = "GAN2SHAPE_MIRROR"
VGG_URL_ENV = "GAN2SHAPE_VGG_URL"
DEFAULT_LOCK = Path("data") / "download.lock.json"
DEFAULT_CACHE = Path("downloads")
CHUNK = 1 << 20
MAX_LISTED_PROBLEMS = 10
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}

__all__ = [
    "DownloadError", "ChecksumError", "ArchiveError", "LayoutError", "DownloadLock", "load_manifest",
    "datasets", "sha256_file", "download_file", "fetch_release", "fetch_vgg", "check_archive",
    "extract_archive", "verify_layout", "add_cli", "cmd_download",
]


# --------------------------------------------------------------------------------------------
# errors, manifest, lock file
# --------------------------------------------------------------------------------------------

class DownloadError(RuntimeError):
    """A download failed (HTTP error, network error after all retries)."""

    def __init__(self, message: str, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.url, self.status = url, status


class ChecksumError(DownloadError):
    """A file's SHA-256 (or size) differs from the pinned or locked value."""

    def __init__(self, name: str, path: Path, expected: str, actual: str, source: str, url: str | None = None,
                 removed: bool = True):
        super().__init__(f"{name}: SHA-256 mismatch ({source}): expected {expected}, got {actual}; "
                         + (f"deleted the download ({path})" if removed else f"file {path}")
                         + (f" (from {url})" if url else ""), url=url)
        self.name, self.path, self.expected, self.actual = name, path, expected, actual


class ArchiveError(DownloadError):
    """An archive is not a complete gzip/tar stream or holds an unsafe member."""


class LayoutError(CheckpointError):
    """The extracted ``checkpoints/`` or ``data/`` tree is incomplete or has wrong keys."""

    def __init__(self, root: Path, problems: Sequence[str], what: str = ""):
        head = "\n  - ".join(problems[:MAX_LISTED_PROBLEMS])
        more = len(problems) - MAX_LISTED_PROBLEMS
        super().__init__(f"layout check of {root}{' (' + what + ')' if what else ''} found "
                         f"{len(problems)} problem(s):\n  - {head}" + (f"\n  ... and {more} more" if more > 0 else ""))
        self.problems = list(problems)


def load_manifest(path: str | os.PathLike | None = None) -> dict:
    """The artefact manifest: the packaged ``manifest.json`` unless ``path`` is given."""
    if path is not None:
        return json.loads(Path(path).read_text())
    return json.loads(resources.files("gan2shape").joinpath("manifest.json").read_text())


def datasets(manifest: Mapping | None = None) -> list[str]:
    return list((manifest or load_manifest())["layouts"])


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


class DownloadLock:
    """``name → {sha256, size, url, date}`` of every file seen once (trust on first download),
    plus ``extracted``: which archive (by hash) was unpacked where. Saved atomically on change."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.data: dict[str, Any] = {"format": 1, "files": {}, "extracted": {}}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text())
            except json.JSONDecodeError as e:
                raise DownloadError(f"{self.path}: lock file is not valid JSON ({e})") from e
            self.data["files"].update(loaded.get("files", {}))
            self.data["extracted"].update(loaded.get("extracted", {}))

    def get(self, name: str) -> dict | None:
        return self.data["files"].get(name)

    def record(self, name: str, sha256: str, size: int, url: str | None) -> None:
        self.data["files"][name] = {"sha256": sha256, "size": size, "url": url, "date": _now()}
        self.save()

    def forget(self, name: str) -> None:
        if self.data["files"].pop(name, None) is not None:
            self.save()

    def extracted(self, name: str) -> dict | None:
        return self.data["extracted"].get(name)

    def record_extracted(self, name: str, sha256: str, dest: Path) -> None:
        self.data["extracted"][name] = {"sha256": sha256, "dest": str(dest), "date": _now()}
        self.save()

    def save(self) -> None:
        atomic_write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n", self.path)


def _as_lock(lock: DownloadLock | str | os.PathLike | None) -> DownloadLock | None:
    return lock if lock is None or isinstance(lock, DownloadLock) else DownloadLock(lock)


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _expected(name: str, sha256: str | None, lock: DownloadLock | None) -> tuple[str | None, int | None, str]:
    """Expected hash, size and where they come from (pinned beats lock)."""
    if sha256:
        return sha256.lower(), None, "pinned"
    rec = lock.get(name) if lock else None
    if rec:
        return rec["sha256"], rec.get("size"), f"lock file {lock.path}"
    return None, None, "first download"


def _check_hash(path: Path, name: str, sha256: str | None, size: int | None, lock: DownloadLock | None,
                url: str | None, *, shown: Path | None = None, remove: bool = True) -> str:
    """Hash ``path`` and compare hash and size with the pinned or locked values; on a mismatch remove the file (unless ``remove=False``) and raise :class:`ChecksumError` naming
    ``shown`` (default ``path``). Unknown or changed entries are (re)recorded in ``lock``."""
    want, want_size, source = _expected(name, sha256, lock)
    shown = shown or path
    n = path.stat().st_size
    expect_size = size if size is not None else want_size
    actual = sha256_file(path)
    if (want is not None and actual != want) or (expect_size is not None and n != expect_size):
        if remove:
            path.unlink(missing_ok=True)
        exp = f"{want or '(any)'}" + (f" ({expect_size} bytes)" if expect_size is not None else "")
        raise ChecksumError(name, shown, exp, f"{actual} ({n} bytes)", source, url, removed=remove)
    rec = lock.get(name) if lock is not None else None
    if lock is not None and (rec is None or rec["sha256"] != actual or rec.get("size") != n):
        lock.record(name, actual, n, url)
    return actual


# --------------------------------------------------------------------------------------------
# streaming download with resume and retries
# --------------------------------------------------------------------------------------------

def _to_url(base: str) -> str:
    """A mirror may be a URL or a local folder."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", base):
        return base
    return Path(base).resolve().as_uri()


def join_url(base: str, rel: str) -> str:
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", rel):
        return rel
    return _to_url(base).rstrip("/") + "/" + rel.lstrip("/")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes start-end/total`` → (start, total)."""
    m = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", value or "")
    if not m:
        return None, None
    return int(m.group(1)), (None if m.group(2) == "*" else int(m.group(2)))


class _Transient(Exception):
    pass


def _fetch_once(url: str, part: Path, timeout: float, progress: bool, desc: str) -> None:
    """One attempt: continue ``part`` from its current size. Raises :class:`_Transient` to retry."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "gan2shape-download/1", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:  # our .part is longer than the file (it changed): start again
            part.unlink(missing_ok=True)
            raise _Transient(f"HTTP 416 for range {offset}-, restarting") from e
        if e.code in TRANSIENT_HTTP:
            raise _Transient(f"HTTP {e.code} {e.reason}") from e
        part.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}", url=url, status=e.code) from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, (OSError, socket.timeout)) and not isinstance(e.reason, FileNotFoundError):
            raise _Transient(f"{e.reason}") from e
        part.unlink(missing_ok=True)  # bad URL, or a file:// mirror without the file
        status = 404 if isinstance(e.reason, FileNotFoundError) else None
        raise DownloadError(f"download of {url} failed: {e.reason}", url=url, status=status) from e
    except (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException) as e:
        raise _Transient(f"{type(e).__name__}: {e}") from e

    with resp:
        status = getattr(resp, "status", None) or 200
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        mode, total = "ab", None
        if status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != offset:  # the server resumed from elsewhere: do not trust it, start again
                part.unlink(missing_ok=True)
                raise _Transient(f"server answered range {start} for a request from {offset}")
            if total is None and length is not None:
                total = offset + length
        else:  # 200 (or file://): the full body; a server that ignores Range lands here
            if offset:
                log.info("%s: server ignored Range, restarting from 0", desc)
            mode, offset, total = "wb", 0, length
        bar = None
        if progress:
            try:
                from tqdm import tqdm

                bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=desc, leave=False)
            except ImportError:  # progress is optional
                bar = None
        written = offset
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException) as e:
                        raise _Transient(f"connection lost after {written} bytes ({type(e).__name__}: {e})") from e
                    if not chunk:
                        break
                    f.write(chunk)
                    written += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        if total is not None and written != total:
            raise _Transient(f"connection closed after {written} of {total} bytes")


def download_file(url: str, dest: str | os.PathLike, sha256: str | None = None,
                  lock: DownloadLock | str | os.PathLike | None = None, retries: int = 3,
                  timeout: float = 30, *, name: str | None = None, size: int | None = None,
                  backoff: float = 1.0, progress: bool = False) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``) and verify its SHA-256.

    The expected hash is ``sha256`` if given, else the lock file's entry for ``name`` (default
    ``dest.name``); with neither, the hash is recorded in the lock. An existing ``dest`` that
    verifies is not downloaded again. Transient failures (connection reset, timeouts, HTTP 5xx,
    408/429) are retried up to ``retries`` times in a row with backoff ``backoff·2^k`` seconds;
    an attempt that made progress resets the count. Other HTTP errors raise
    :class:`DownloadError` naming the URL and status and leave nothing behind; a checksum
    mismatch raises :class:`ChecksumError` and removes the file.
    """
    dest = Path(dest)
    name = name or dest.name
    lock = _as_lock(lock)
    part = dest.with_name(dest.name + ".part")
    if dest.is_file():
        try:
            _check_hash(dest, name, sha256, size, lock, url)
            log.info("%s: present and verified (%s)", name, dest)
            return dest
        except ChecksumError as e:  # _check_hash removed it; fetch a fresh copy
            log.warning("%s; downloading again", e)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _fetch_once(url, part, timeout, progress, name)
            break
        except _Transient as e:
            now = part.stat().st_size if part.exists() else 0
            failures = 0 if now > before else failures + 1
            if failures > retries:
                raise DownloadError(f"download of {url} failed after {retries} retries: {e}"
                                    + (f" (partial file kept for resume: {part})" if part.exists() else ""),
                                    url=url) from e
            delay = backoff * 2 ** max(failures - 1, 0)
            log.warning("%s: %s; retrying in %.2g s (%d/%d)", name, e, delay, failures, retries)
            time.sleep(delay)
    _check_hash(part, name, sha256, size, lock, url, shown=dest)  # removes the .part on mismatch
    os.replace(part, dest)
    log.info("%s: downloaded %s (%d bytes)", name, dest, dest.stat().st_size)
    return dest


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


# --------------------------------------------------------------------------------------------
# layout verification
# --------------------------------------------------------------------------------------------

def _check_checkpoint(path: Path, role: str, checks: Mapping) -> list[str]:
    """Problems of one checkpoint file for its role (gan, mvn_view, mvn_light, pspnet, bisenet, pretrain)."""
    if not path.is_file():
        return [f"{path}: missing ({role})"]
    try:
        obj = safe_torch_load(path)
    except CheckpointError as e:
        return [str(e)]
    rule = checks.get(role, {})
    if not isinstance(obj, Mapping):
        return [f"{path}: expected a dict ({role}), got {type(obj).__name__}"]
    if not obj:
        return [f"{path}: empty dict ({role})"]
    problems = [f"{path}: missing key {k!r} ({role} needs {', '.join(rule['keys'])})"
                for k in rule.get("keys", []) if k not in obj]
    dim = rule.get("dim")
    if dim and not problems:
        mean, cov = obj["mean"], obj["cov"]
        if tuple(getattr(mean, "shape", ())) != (dim,):
            problems.append(f"{path}: 'mean' has shape {tuple(getattr(mean, 'shape', ()))}, expected ({dim},)")
        if tuple(getattr(cov, "shape", ())) != (dim, dim):
            problems.append(f"{path}: 'cov' has shape {tuple(getattr(cov, 'shape', ()))}, expected ({dim}, {dim})")
    return problems


def _first_existing(cands: Sequence[Path]) -> Path | None:
    return next((c for c in cands if c.is_file()), None)


def _check_list(root: Path, list_file: Path, spec: Mapping) -> list[str]:
    """For every line of ``list_file``: the image, its latent and (if ``depth``) its depth file."""
    problems: list[str] = []
    img_dir = root / spec.get("images", ".")
    lat_dir = root / spec.get("latents", "latents")
    lines = list_file.read_text().splitlines()
    entries = [(i, ln.split()[0]) for i, ln in enumerate(lines, 1) if ln.strip()]
    if not entries:
        return [f"{list_file}: empty list"]
    for lineno, token in entries:
        where = f"{list_file}:{lineno}"
        # the first token is relative to the image folder (tolerate it being relative to the list's folder)
        cands = [img_dir / token, root / token]
        image = _first_existing(cands)
        if image is None:
            problems.append(f"{where}: image {cands[0]} missing")
        stem = str(PurePosixPath(token).with_suffix(".pt"))
        lat = [lat_dir / PurePosixPath(stem).name, lat_dir / stem]
        if _first_existing(lat) is None:
            problems.append(f"{where}: latent {lat[0]} missing")
        if spec.get("depth"):
            # GT depth: the image path with every 'image' replaced by 'depth' (below the list's folder)
            base = image or cands[0]
            depth = root / str(base.relative_to(root)).replace("image", "depth")
            if not depth.is_file():
                problems.append(f"{where}: depth {depth} missing")
    return problems


def verify_layout(root: str | os.PathLike, dataset: str | Iterable[str] = "all", *, checkpoints: bool = True,
                  data: bool = True, manifest: Mapping | None = None) -> list[str]:
    """Problems (strings naming files) of the ``checkpoints/`` and ``data/`` trees under ``root``
    for ``dataset`` (a name, several, or ``all``); empty when everything is in place."""
    manifest = manifest or load_manifest()
    root = Path(root)
    layouts = manifest["layouts"]
    names = list(layouts) if dataset == "all" else [dataset] if isinstance(dataset, str) else list(dataset)
    if "all" in names:
        names = list(layouts)
    unknown = [n for n in names if n not in layouts]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; known: {', '.join(layouts)}")
    problems: list[str] = []
    seen: set[Path] = set()
    for ds in names:
        lay = layouts[ds]
        if checkpoints:
            for role, paths in lay.get("checkpoints", {}).items():
                for p in paths:
                    if (root / p) not in seen:
                        seen.add(root / p)
                        problems += _check_checkpoint(root / p, role, manifest.get("checks", {}))
        if data:
            for spec in lay.get("data", []):
                droot = root / spec["root"]
                if not droot.is_dir():
                    problems.append(f"{droot}: missing folder ({ds} data)")
                    continue
                lists = [droot / n for n in spec["lists"]]
                lists += sorted(p for p in droot.glob("list*.txt") if p not in lists)
                for lf in lists:
                    if not lf.is_file():
                        problems.append(f"{lf}: missing list file ({ds})")
                    elif lf not in seen:
                        seen.add(lf)
                        problems += _check_list(droot, lf, spec)
    return problems


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

def cmd_download(args: argparse.Namespace) -> int:
    """Download, verify and unpack the GAN2Shape release and the VGG16 weights."""
    manifest = load_manifest()
    what = set(args.what)
    if "all" in what:
        what = {"release", "vgg"}
    dest = Path(args.dest)
    lock_path = Path(args.lock) if args.lock else dest / DEFAULT_LOCK
    mirror = args.mirror or os.environ.get(MIRROR_ENV) or None
    vgg_url = args.vgg_url or os.environ.get(VGG_URL_ENV) or None
    progress = args.progress if args.progress is not None else os.isatty(2)
    common = dict(retries=args.retries, timeout=args.timeout, backoff=args.backoff, progress=progress,
                  manifest=manifest)
    try:
        lock = DownloadLock(lock_path)
        if "vgg" in what:
            spec = manifest["files"]["vgg"]
            path = dest / spec["dest"]
            if args.verify_only:
                if not path.is_file():
                    raise LayoutError(dest, [f"{path}: missing (VGG16 weights)"], "vgg")
                _check_hash(path, spec["name"], spec["sha256"], spec.get("size"), lock, None, remove=False)
            else:
                fetch_vgg(dest, lock, vgg_url, mirror, **common)
            log.info("VGG16 weights verified: %s", path)
        if "release" in what:
            if not args.verify_only:
                fetch_release(mirror, dest, lock, cache_dir=args.cache_dir, keep_parts=args.keep_parts,
                              remove_archives=args.remove_archives, force=args.force, **common)
            problems = verify_layout(dest, args.dataset, manifest=manifest)
            if problems:
                raise LayoutError(dest, problems, ", ".join(args.dataset))
            log.info("layout verified for %s under %s", ", ".join(args.dataset), dest)
    except (DownloadError, CheckpointError, ValueError) as e:
        log.error("%s", e)
        return 1
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``gan2shape download``."""
    names = datasets()
    p = subparsers.add_parser("download", help=cmd_download.__doc__, description=cmd_download.__doc__)
    p.add_argument("--what", nargs="+", default=["all"], choices=["release", "vgg", "all"],
                   help="which artefacts (default: all)")
    p.add_argument("--dataset", nargs="+", default=["all"], choices=names + ["all"],
                   help="which dataset layouts to verify (default: all)")
    p.add_argument("--dest", type=Path, default=Path("."), help="root where data/ and checkpoints/ go")
    p.add_argument("--mirror", help=f"base URL or folder replacing the release URL (env {MIRROR_ENV}); "
                                    "VGG16 is then fetched from it too unless --vgg-url")
    p.add_argument("--vgg-url", help=f"URL of vgg16-397923af.pth (env {VGG_URL_ENV})")
    p.add_argument("--lock", type=Path, help=f"lock file of hashes (default: DEST/{DEFAULT_LOCK})")
    p.add_argument("--cache-dir", type=Path, help=f"where archives are downloaded (default: DEST/{DEFAULT_CACHE})")
    p.add_argument("--retries", type=int, default=3, help="retries per file on transient errors")
    p.add_argument("--timeout", type=float, default=30, help="socket timeout in seconds")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds (doubles)")
    p.add_argument("--verify-only", action="store_true", help="no network: check files, hashes and layout")
    p.add_argument("--keep-parts", action="store_true", help="keep x00..x03 after concatenation")
    p.add_argument("--remove-archives", action="store_true", help="delete the archives after extraction")
    p.add_argument("--force", action="store_true", help="extract again even if the lock says it was done")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_download)
    return p
