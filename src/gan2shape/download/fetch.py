"""Errors, the artefact manifest, the lock file of hashes and the streaming HTTP download with
resume and retries (part of ``gan2shape.download``; the package docstring describes the whole)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import http.client
import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..io import CheckpointError, atomic_write_text

log = logging.getLogger("gan2shape.download")

MIRROR_ENV = "GAN2SHAPE_MIRROR"
VGG_URL_ENV = "GAN2SHAPE_VGG_URL"
DEFAULT_LOCK = Path("data") / "download.lock.json"
DEFAULT_CACHE = Path("downloads")
CHUNK = 1 << 20
MAX_LISTED_PROBLEMS = 10
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}

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
