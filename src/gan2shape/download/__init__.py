"""Download, verify and unpack the official GAN2Shape artefacts (``gan2shape download``).

What is fetched is described by the package manifest ``manifest.json`` (METHOD §9 in
docs/method.md): the v1.0 release (``data.tar.gz``, and ``x00``..``x03`` which concatenated in this
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
* When a download fails, :func:`ways_out` says what else works: a mirror, the files placed by hand
  (expected paths and hashes), or the synthetic default that needs no download.

Modules: :mod:`.fetch` (errors, manifest, lock file, HTTP), :mod:`.release` (archives, release,
VGG16), :mod:`.layout` (tree checks); this module holds the command line.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Iterable, Mapping

from ..io import CheckpointError
from .fetch import (DEFAULT_CACHE, DEFAULT_LOCK, MIRROR_ENV, VGG_URL_ENV, ArchiveError, ChecksumError,
                    DownloadError, DownloadLock, LayoutError, _check_hash, datasets, download_file, join_url,
                    load_manifest, sha256_file)
from .layout import verify_layout
from .release import _concatenate  # noqa: F401 (re-exported for the tests)
from .release import check_archive, extract_archive, fetch_release, fetch_vgg

log = logging.getLogger("gan2shape.download")

__all__ = [
    "DownloadError", "ChecksumError", "ArchiveError", "LayoutError", "DownloadLock", "load_manifest",
    "datasets", "sha256_file", "download_file", "join_url", "fetch_release", "fetch_vgg", "check_archive",
    "extract_archive", "verify_layout", "ways_out", "add_cli", "cmd_download", "MIRROR_ENV", "VGG_URL_ENV",
]


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

def ways_out(what: Iterable[str], dataset: Iterable[str], dest: str | os.PathLike = ".", *,
             cache_dir: str | os.PathLike | None = None, lock: str | os.PathLike | None = None,
             manifest: Mapping | None = None) -> str:
    """What a user can do when the download fails: the three ways out, with the expected paths
    and hashes of what ``what`` (``release``, ``vgg``) needs for ``dataset`` under ``dest``."""
    manifest = manifest or load_manifest()
    dest = Path(dest)
    cache = Path(cache_dir) if cache_dir is not None else dest / DEFAULT_CACHE
    lock_path = Path(lock) if lock is not None else dest / DEFAULT_LOCK
    try:
        locked = DownloadLock(lock_path)
    except DownloadError:
        locked = None

    def sha(name: str, pinned: str | None) -> str:
        if pinned:
            return f"sha256 {pinned}"
        rec = locked.get(name) if locked else None
        if rec:
            return f"sha256 {rec['sha256']} (from {lock_path})"
        return f"sha256 not published: recorded in {lock_path} on first use"

    what = set(what)
    names = list(manifest["layouts"]) if "all" in set(dataset) else list(dataset)
    files = []
    if "release" in what:
        files += [p["name"] for a in manifest["release"]["archives"] for p in a["parts"]]
    vgg = manifest["files"]["vgg"]
    if "vgg" in what:
        files.append(vgg["name"])
    lines = ["How to go on:",
             f"  1. A mirror: set `download.mirror` in params.yaml (or the environment variable {MIRROR_ENV},",
             "     or `gan2shape download --mirror`) to a URL or a local folder that holds "
             + ", ".join(files) + "."]
    lines.append("  2. Place the files by hand, then run again (files that verify are not fetched again):")
    if "release" in what:
        for arc in manifest["release"]["archives"]:
            parts = [p["name"] for p in arc["parts"]]
            how = "" if parts == [arc["name"]] else f" (= cat {' '.join(parts)}, in this order)"
            lines.append(f"       {cache / arc['name']}{how}; {sha(arc['name'], arc.get('sha256'))}")
        lines.append("     or their unpacked files; the release layout of " + ", ".join(names) + ":")
        shown: list[str] = []
        for ds in names:
            lay = manifest["layouts"][ds]
            shown += [str(dest / p) for paths in lay.get("checkpoints", {}).values() for p in paths]
            shown += [str(dest / d["root"] / lst) + " (+ the listed images, latents/"
                      + (", depth/" if d.get("depth") else "") + ")" for d in lay.get("data", []) for lst in d["lists"]]
        lines += [f"       {p}" for p in dict.fromkeys(shown)]
    if "vgg" in what:
        lines.append(f"       {dest / vgg['dest']}; {sha(vgg['name'], vgg.get('sha256'))}")
    lines.append("     Check what is in place without any network access: gan2shape download --verify-only "
                 f"--what {' '.join(sorted(what))} --dataset {' '.join(names)} --dest {dest}")
    lines.append("  3. The synthetic default needs no download: `dataset: synthetic-face2` (or "
                 "synthetic-car2; world v1: synthetic-face, synthetic-box) in params.yaml.")
    return "\n".join(lines)


def _root_cause(e: BaseException) -> str:
    """The innermost exception of a failed download (e.g. a name-resolution or connection error)."""
    while e.__cause__ is not None:
        e = e.__cause__
    e = getattr(e, "reason", e)  # urllib's URLError wraps the socket error
    return f"{type(e).__name__}: {e}"


def cmd_download(args: argparse.Namespace) -> int:
    """Download, verify and unpack the GAN2Shape release (and, with --what vgg, the VGG16 weights of
    the lpips_vgg perceptual loss)."""
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
        # the release first: it is what every real dataset needs; VGG16 only for lpips_vgg
        if "release" in what:
            if not args.verify_only and not args.force and not verify_layout(dest, args.dataset, manifest=manifest):
                log.info("release layout of %s already in place under %s: nothing to fetch",
                         ", ".join(args.dataset), dest)
            elif not args.verify_only:
                fetch_release(mirror, dest, lock, cache_dir=args.cache_dir, keep_parts=args.keep_parts,
                              remove_archives=args.remove_archives, force=args.force, **common)
            problems = verify_layout(dest, args.dataset, manifest=manifest)
            if problems:
                raise LayoutError(dest, problems, ", ".join(args.dataset))
            log.info("layout verified for %s under %s", ", ".join(args.dataset), dest)
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
    except (DownloadError, CheckpointError, ValueError) as e:
        why = f"\n  cause: {_root_cause(e)}" if isinstance(e, DownloadError) and e.__cause__ else ""
        log.error("gan2shape download failed: %s%s\n%s", e, why,
                  ways_out(what, args.dataset, dest, cache_dir=args.cache_dir, lock=lock_path, manifest=manifest))
        return 1
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``gan2shape download``."""
    names = datasets()
    p = subparsers.add_parser("download", help=cmd_download.__doc__, description=cmd_download.__doc__)
    p.add_argument("--what", nargs="+", default=["all"], choices=["release", "vgg", "all"],
                   help="which artefacts: release (every real dataset), vgg (only for --perceptual lpips_vgg); default: all")
    p.add_argument("--dataset", nargs="+", default=["all"], choices=names + ["all"],
                   help="which dataset layouts to verify (default: all)")
    p.add_argument("--dest", type=Path, default=Path("."), help="root where data/ and checkpoints/ go")
    p.add_argument("--mirror", help=f"base URL or folder replacing the release URL (env {MIRROR_ENV}); "
                                    "VGG16 is then fetched from it too unless --vgg-url")
    p.add_argument("--vgg-url", help=f"URL of vgg16-397923af.pth (env {VGG_URL_ENV})")
    p.add_argument("--lock", type=Path, help=f"lock file of hashes (default: DEST/{DEFAULT_LOCK})")
    p.add_argument("--cache-dir", type=Path, help=f"where archives are downloaded (default: DEST/{DEFAULT_CACHE})")
    p.add_argument("--retries", type=int, default=3, help="retries per file on transient errors")
    p.add_argument("--timeout", type=float, default=60, help="socket timeout in seconds")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds (doubles)")
    p.add_argument("--verify-only", action="store_true", help="no network: check files, hashes and layout")
    p.add_argument("--keep-parts", action="store_true", help="keep x00..x03 after concatenation")
    p.add_argument("--remove-archives", action="store_true", help="delete the archives after extraction")
    p.add_argument("--force", action="store_true", help="extract again even if the lock says it was done")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_download)
    return p