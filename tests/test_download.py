"""gan2shape.download against a local threaded HTTP server (127.0.0.1, ephemeral port) serving
tiny fake release artefacts with the official layout."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import re
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan2shape import download as dl
from gan2shape.io import torch_bytes

PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


# --------------------------------------------------------------------------------------------
# local HTTP server
# --------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: a dropped body is a short read

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        name = self.path.lstrip("/")
        rng = self.headers.get("Range")
        with srv.mu:
            srv.requests.append((name, rng))
            fail = srv.fail_500.get(name, 0)
            if fail:
                srv.fail_500[name] = fail - 1
            drop = srv.drop_after.pop(name, None)
        if fail:
            self.send_error(500, "transient failure")
            return
        body = srv.files.get(name)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and name not in srv.ignore_range:
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if drop is not None:  # announce the full length, send N bytes, hang up
            self.wfile.write(payload[:drop])
            self.wfile.flush()
            return
        self.wfile.write(payload)


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mu = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.fail_500: dict[str, int] = {}
        self.drop_after: dict[str, int] = {}
        self.ignore_range: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def names(self) -> list[str]:
        return [n for n, _ in self.requests]


@pytest.fixture
def server(monkeypatch):
    for v in PROXY_VARS:
        monkeypatch.delenv(v, raising=False)
    srv = FakeServer()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


# --------------------------------------------------------------------------------------------
# fake artefacts with the official layout
# --------------------------------------------------------------------------------------------

def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _tar_gz(files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.size else None)
    return buf.getvalue()


def data_files() -> dict[str, bytes]:
    torch.manual_seed(0)
    f = {"data/car/list.txt": b"0001.png\n0002.png\n"}
    for i, n in enumerate(["0001", "0002"]):
        f[f"data/car/{n}.png"] = _png(i)
        f[f"data/car/latents/{n}.pt"] = torch_bytes(torch.randn(512))
    names = ["000001_image_1_1.png", "000002_image_2_1.png"]
    f["data/synface/test/list.txt"] = ("\n".join(names) + "\n").encode()
    f["data/synface/train/list_200.txt"] = (names[0] + "\n").encode()
    for split in ("test", "train"):
        for i, n in enumerate(names):
            f[f"data/synface/{split}/image/{n}"] = _png(10 + i)
            f[f"data/synface/{split}/depth/{n.replace('image', 'depth')}"] = _png(20 + i)
            f[f"data/synface/{split}/latents/{n[:-4]}.pt"] = torch_bytes({"latent": torch.randn(1, 512)})
    return f


def checkpoint_files() -> dict[str, bytes]:
    t = torch.zeros(2)
    gan = torch_bytes({"g_ema": {"w": t}, "d": {"w": t}, "args": argparse.Namespace(size=8)})
    f = {f"checkpoints/stylegan2/stylegan2-{n}.pt": gan
         for n in ["car-config-f", "church-config-f", "celeba-config-e", "catface-config-e", "synface-config-e"]}
    for pre in ["", "celeba_", "cat_", "synface_"]:
        f[f"checkpoints/view_light/{pre}view_mvn.pth"] = torch_bytes({"mean": torch.zeros(6), "cov": torch.eye(6)})
        f[f"checkpoints/view_light/{pre}light_mvn.pth"] = torch_bytes({"mean": torch.zeros(4), "cov": torch.eye(4)})
    for n in ["celeba", "cat", "synface"]:
        f[f"checkpoints/gan2shape/{n}_pretrain.pth"] = torch_bytes({"netD": {"w": t}, "netA": {"w": t}})
    f["checkpoints/parsing/bisenet.pth"] = torch_bytes({"cp.conv.weight": t})
    for n in ["voc", "ade20k"]:
        f[f"checkpoints/parsing/pspnet_{n}.pth"] = torch_bytes({"state_dict": {"module.w": t}})
    return f


def split4(blob: bytes) -> list[bytes]:
    cut = [0, len(blob) // 5, len(blob) // 2, 3 * len(blob) // 4, len(blob)]
    return [blob[a:b] for a, b in zip(cut, cut[1:])]


@pytest.fixture(scope="module")
def release():
    data = _tar_gz(data_files())
    ckpt = _tar_gz(checkpoint_files())
    files = {"data.tar.gz": data}
    files.update({f"x0{i}": p for i, p in enumerate(split4(ckpt))})
    return {"files": files, "ckpt": ckpt}


@pytest.fixture
def served(server, release):
    server.files.update(release["files"])
    return server


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _fetch(server, dest: Path, **kw):
    kw.setdefault("retries", 2)
    return dl.fetch_release(server.url, dest, dest / "data" / "download.lock.json", timeout=5, backoff=0.01, **kw)


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------

def test_manifest_describes_official_release():
    m = dl.load_manifest()
    rel = m["release"]
    assert rel["base_url"] == "https://github.com/XingangPan/GAN2Shape/releases/download/v1.0/"
    ck = next(a for a in rel["archives"] if a["name"] == "checkpoints.tar.gz")
    assert [p["name"] for p in ck["parts"]] == ["x00", "x01", "x02", "x03"]
    assert m["files"]["vgg"]["sha256"] == "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0"
    assert set(dl.datasets(m)) == {"car", "church", "celeba", "cat", "synface"}
    ckpts = {p for lay in m["layouts"].values() for ps in lay["checkpoints"].values() for p in ps}
    assert len(ckpts) == 19 and ckpts == set(checkpoint_files())


def test_clean_download_extract_verify_then_second_run_uses_lock(served, release, tmp_path):
    out = _fetch(served, tmp_path)
    assert set(out) == {"data.tar.gz", "checkpoints.tar.gz"}
    # parts concatenated in order into the archive; parts removed afterwards
    assert (tmp_path / "downloads" / "checkpoints.tar.gz").read_bytes() == release["ckpt"]
    assert not (tmp_path / "downloads" / "x00").exists()
    assert sorted(served.names()) == ["data.tar.gz", "x00", "x01", "x02", "x03"]
    assert dl.verify_layout(tmp_path, ["car", "synface"]) == []
    lock = json.loads((tmp_path / "data" / "download.lock.json").read_text())
    for n, b in release["files"].items():
        assert lock["files"][n]["sha256"] == sha(b) and lock["files"][n]["size"] == len(b)
        assert lock["files"][n]["url"] == served.url + n
    assert lock["files"]["checkpoints.tar.gz"]["sha256"] == sha(release["ckpt"])
    assert set(lock["extracted"]) == {"data.tar.gz", "checkpoints.tar.gz"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".extract")]
    # second run: verified against the lock, no request at all
    served.requests.clear()
    _fetch(served, tmp_path)
    assert served.requests == []
    # the archive was changed locally: it is detected against the lock and fetched again
    (tmp_path / "downloads" / "data.tar.gz").write_bytes(b"junk")
    _fetch(served, tmp_path)
    assert served.names() == ["data.tar.gz"]
    assert (tmp_path / "downloads" / "data.tar.gz").read_bytes() == release["files"]["data.tar.gz"]


def test_interrupted_download_resumes_with_range(server, tmp_path):
    blob = bytes(range(256)) * 400
    server.files["big.bin"] = blob
    server.drop_after["big.bin"] = 30000
    lock = dl.DownloadLock(tmp_path / "lock.json")
    p = dl.download_file(server.url + "big.bin", tmp_path / "big.bin", lock=lock, timeout=5, backoff=0.01)
    assert p.read_bytes() == blob
    assert server.requests == [("big.bin", None), ("big.bin", "bytes=30000-")]
    assert lock.get("big.bin")["sha256"] == sha(blob)
    assert not (tmp_path / "big.bin.part").exists()


def test_server_ignoring_range_restarts(server, tmp_path):
    blob = b"abcdefgh" * 5000
    server.files["f"] = blob
    server.ignore_range.add("f")
    (tmp_path / "f.part").write_bytes(b"STALE" * 10)  # a partial file of a previous run
    p = dl.download_file(server.url + "f", tmp_path / "f", sha256=sha(blob), timeout=5, backoff=0.01)
    assert p.read_bytes() == blob and server.requests == [("f", "bytes=50-")]


def test_resume_of_partial_file_from_previous_run(server, tmp_path):
    blob = b"0123456789" * 3000
    server.files["f"] = blob
    (tmp_path / "f.part").write_bytes(blob[:12345])
    dl.download_file(server.url + "f", tmp_path / "f", sha256=sha(blob), timeout=5)
    assert server.requests == [("f", "bytes=12345-")]
    assert (tmp_path / "f").read_bytes() == blob


def test_pinned_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.files["vgg16-397923af.pth"] = b"not the vgg weights"
    with pytest.raises(dl.ChecksumError) as e:
        dl.fetch_vgg(tmp_path, tmp_path / "lock.json", mirror=server.url, timeout=5)
    msg = str(e.value)
    assert "vgg16-397923af.pth" in msg and "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0" in msg
    assert sha(b"not the vgg weights") in msg
    assert server.requests == [("vgg16-397923af.pth", None)]
    assert _leftovers(tmp_path) == []


def test_vgg_pinned_hash_ok_and_lock_recorded(server, tmp_path):
    blob = b"fake vgg"
    server.files["weights/vgg.pth"] = blob
    m = dl.load_manifest()
    m["files"]["vgg"]["sha256"] = sha(blob)
    p = dl.fetch_vgg(tmp_path, tmp_path / "lock.json", url=server.url + "weights/vgg.pth", timeout=5, manifest=m)
    assert p == tmp_path / "checkpoints/vgg/vgg16-397923af.pth" and p.read_bytes() == blob
    assert json.loads((tmp_path / "lock.json").read_text())["files"]["vgg16-397923af.pth"]["sha256"] == sha(blob)


def test_lock_mismatch_after_server_change(served, release, tmp_path):
    _fetch(served, tmp_path, archives=["data.tar.gz"])
    (tmp_path / "downloads" / "data.tar.gz").unlink()
    changed = _tar_gz({"data/car/list.txt": b"other\n"})
    served.files["data.tar.gz"] = changed
    with pytest.raises(dl.ChecksumError) as e:
        _fetch(served, tmp_path, archives=["data.tar.gz"], force=True)
    msg = str(e.value)
    assert "data.tar.gz" in msg and sha(release["files"]["data.tar.gz"]) in msg and sha(changed) in msg
    assert "lock file" in msg
    assert list((tmp_path / "downloads").iterdir()) == []  # neither the file nor its .part


def test_404_names_url_and_leaves_nothing(served, tmp_path):
    del served.files["x02"]
    with pytest.raises(dl.DownloadError) as e:
        _fetch(served, tmp_path, archives=["checkpoints.tar.gz"])
    assert e.value.status == 404 and served.url + "x02" in str(e.value) and "404" in str(e.value)
    assert not (tmp_path / "downloads" / "x02").exists() and not (tmp_path / "downloads" / "x02.part").exists()
    assert not (tmp_path / "downloads" / "checkpoints.tar.gz").exists() and not (tmp_path / "checkpoints").exists()


def test_transient_500_is_retried(server, tmp_path):
    server.files["f"] = b"payload" * 100
    server.fail_500["f"] = 2
    dl.download_file(server.url + "f", tmp_path / "f", retries=3, timeout=5, backoff=0.01)
    assert (tmp_path / "f").read_bytes() == b"payload" * 100 and len(server.requests) == 3


def test_persistent_500_gives_up(server, tmp_path):
    server.files["f"] = b"payload"
    server.fail_500["f"] = 10
    with pytest.raises(dl.DownloadError, match=r"failed after 2 retries.*HTTP 500"):
        dl.download_file(server.url + "f", tmp_path / "f", retries=2, timeout=5, backoff=0.01)
    assert len(server.requests) == 3 and _leftovers(tmp_path) == []


def test_path_traversal_member_rejected(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    evil.write_bytes(_tar_gz({"data/ok.txt": b"ok", "../escape.txt": b"bad"}))
    with pytest.raises(dl.ArchiveError, match=r"escape\.txt.*'\.\.'"):
        dl.extract_archive(evil, tmp_path / "root")
    absolute = tmp_path / "abs.tar.gz"
    absolute.write_bytes(_tar_gz({"/etc/evil": b"bad"}))
    with pytest.raises(dl.ArchiveError, match="absolute path"):
        dl.check_archive(absolute)
    link = tarfile.TarInfo("data/link")
    link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
    lnk = tmp_path / "lnk.tar.gz"
    lnk.write_bytes(_tar_gz({"data/a": b"a"}, [link]))
    with pytest.raises(dl.ArchiveError, match="link leaves the archive"):
        dl.check_archive(lnk)
    assert not (tmp_path / "root" / "data").exists() and not (tmp_path / "escape.txt").exists()


def test_split_archive_in_wrong_order_is_not_an_archive(release, tmp_path):
    parts = split4(release["ckpt"])
    paths = []
    for i, b in enumerate([parts[1], parts[0], parts[2], parts[3]]):
        paths.append(tmp_path / f"x0{i}")
        paths[-1].write_bytes(b)
    dl._concatenate(paths, tmp_path / "c.tar.gz")
    with pytest.raises(dl.ArchiveError, match="c.tar.gz: not a complete gzip/tar archive"):
        dl.check_archive(tmp_path / "c.tar.gz")


def test_corrupt_release_archive_is_not_trusted(served, release, tmp_path):
    served.files["x03"] = release["files"]["x03"][:-10]  # truncated last part
    with pytest.raises(dl.ArchiveError, match="checkpoints.tar.gz"):
        _fetch(served, tmp_path, archives=["checkpoints.tar.gz"])
    lock = json.loads((tmp_path / "data" / "download.lock.json").read_text())
    assert lock["files"] == {} and lock["extracted"] == {}
    assert list((tmp_path / "downloads").iterdir()) == []


def test_layout_problems_name_the_files(served, tmp_path):
    _fetch(served, tmp_path)
    (tmp_path / "data/car/latents/0002.pt").unlink()
    (tmp_path / "data/synface/test/depth/000002_depth_2_1.png").unlink()
    torch.save({"mean": torch.zeros(6), "cov": torch.eye(5)}, tmp_path / "checkpoints/view_light/view_mvn.pth")
    torch.save({"g_ema": {}}, tmp_path / "checkpoints/stylegan2/stylegan2-synface-config-e.pt")
    (tmp_path / "checkpoints/gan2shape/synface_pretrain.pth").unlink()
    probs = dl.verify_layout(tmp_path, ["car", "synface"])
    text = "\n".join(probs)
    assert len(probs) == 5, text
    assert f"data/car/list.txt:2: latent {tmp_path / 'data/car/latents/0002.pt'} missing" in text
    assert "data/synface/test/depth/000002_depth_2_1.png missing" in text
    assert "view_mvn.pth: 'cov' has shape (5, 5), expected (6, 6)" in text
    assert "stylegan2-synface-config-e.pt: missing key 'd'" in text
    assert "synface_pretrain.pth: missing (pretrain)" in text
    # 'all' also reports the datasets whose data are absent
    probs = dl.verify_layout(tmp_path, "all")
    assert any("data/church: missing folder" in p for p in probs)
    assert any("data/celeba: missing folder" in p for p in probs)


def _cli(argv):
    p = argparse.ArgumentParser()
    dl.add_cli(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return args.func(args)


def test_cli_download_verify_only_and_errors(served, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(dl.MIRROR_ENV, served.url)
    base = ["download", "--what", "release", "--dest", str(tmp_path), "--timeout", "5", "--backoff", "0.01",
            "--no-progress"]
    assert _cli(base + ["--dataset", "car", "synface"]) == 0
    assert (tmp_path / "data" / "download.lock.json").is_file()
    served.requests.clear()
    assert _cli(base + ["--dataset", "car", "--verify-only"]) == 0
    assert served.requests == []
    (tmp_path / "data/car/latents/0001.pt").unlink()
    with caplog.at_level(logging.ERROR, logger="gan2shape.download"):
        assert _cli(base + ["--dataset", "car", "--verify-only"]) == 1
    assert "latents/0001.pt missing" in caplog.text
    # the full release layout includes church etc., absent in the fake archive
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="gan2shape.download"):
        assert _cli(base + ["--verify-only"]) == 1
    assert "(all) found 4 problem(s)" in caplog.text and "data/church: missing folder" in caplog.text
    # vgg from the mirror under its own name; pinned hash mismatch → 1, nothing left
    served.files["vgg16-397923af.pth"] = b"wrong"
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="gan2shape.download"):
        assert _cli(["download", "--what", "vgg", "--dest", str(tmp_path / "v"), "--no-progress",
                     "--lock", str(tmp_path / "v.lock")]) == 1
    assert "SHA-256 mismatch (pinned)" in caplog.text
    assert _leftovers(tmp_path / "v") == []


def test_mirror_may_be_a_local_folder(release, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for n, b in release["files"].items():
        (mirror / n).write_bytes(b)
    dest = tmp_path / "root"
    dl.fetch_release(str(mirror), dest, dest / "lock.json")
    assert dl.verify_layout(dest, ["car", "synface"]) == []


def test_part_longer_than_file_restarts(server, tmp_path):
    server.files["f"] = b"short"
    (tmp_path / "f.part").write_bytes(b"a much longer stale partial file")
    dl.download_file(server.url + "f", tmp_path / "f", timeout=5, backoff=0.01)
    assert (tmp_path / "f").read_bytes() == b"short"
    assert server.requests == [("f", "bytes=32-"), ("f", None)]


def test_release_part_dropped_midway_is_resumed(served, release, tmp_path):
    half = len(release["files"]["x01"]) // 2
    served.drop_after["x01"] = half
    _fetch(served, tmp_path, archives=["checkpoints.tar.gz"])
    assert [r for r in served.requests if r[0] == "x01"] == [("x01", None), ("x01", f"bytes={half}-")]
    lock = json.loads((tmp_path / "data" / "download.lock.json").read_text())
    assert lock["files"]["checkpoints.tar.gz"]["sha256"] == sha(release["ckpt"])
    assert dl.verify_layout(tmp_path, "car", data=False) == []


def test_layout_error_lists_first_problems(tmp_path):
    probs = dl.verify_layout(tmp_path, "all")
    assert len(probs) == 19 + 6  # every checkpoint file and every data folder
    err = dl.LayoutError(tmp_path, probs, "all")
    assert f"found {len(probs)} problem(s)" in str(err) and f"and {len(probs) - 10} more" in str(err)
    assert str(tmp_path / "checkpoints/stylegan2/stylegan2-car-config-f.pt") in str(err)
    with pytest.raises(ValueError, match="unknown dataset"):
        dl.verify_layout(tmp_path, "horse")


def test_local_folder_mirror_missing_file(tmp_path):
    (tmp_path / "mirror").mkdir()
    with pytest.raises(dl.DownloadError) as e:
        dl.download_file(dl.join_url(str(tmp_path / "mirror"), "x00"), tmp_path / "out" / "x00", retries=0)
    assert e.value.status == 404 and "x00" in str(e.value) and not (tmp_path / "out" / "x00.part").exists()


# --------------------------------------------------------------------------------------------
# offline / blocked: the cause and the ways out; only what is needed
# --------------------------------------------------------------------------------------------

def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there any more: connection refused


def test_failed_download_prints_cause_and_three_ways_out(tmp_path, monkeypatch, caplog):
    for v in PROXY_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)
    argv = ["download", "--what", "release", "--dataset", "celeba", "--dest", str(tmp_path), "--mirror",
            _closed_port_url(), "--retries", "0", "--timeout", "2", "--backoff", "0.01", "--no-progress"]
    with caplog.at_level(logging.ERROR, logger="gan2shape.download"):
        assert _cli(argv) == 1
    text = caplog.text
    assert "failed after 0 retries" in text and "cause: ConnectionRefusedError: " in text  # the cause itself
    # 1. mirror
    assert "download.mirror" in text and dl.MIRROR_ENV in text
    # 2. manual placement: archives with where they go, the layout of the dataset, how to check
    assert f"{tmp_path / 'downloads' / 'checkpoints.tar.gz'} (= cat x00 x01 x02 x03, in this order)" in text
    assert str(tmp_path / "checkpoints/stylegan2/stylegan2-celeba-config-e.pt") in text
    assert str(tmp_path / "data/celeba/list_200-399.txt") in text
    assert "--verify-only --what release --dataset celeba" in text
    # 3. the synthetic default
    assert "dataset: synthetic-face2" in text
    # VGG16 was not asked for, so it is neither fetched nor mentioned
    assert "vgg16" not in text and not (tmp_path / "checkpoints").exists()


def test_ways_out_gives_pinned_and_locked_hashes(tmp_path):
    lock = dl.DownloadLock(tmp_path / "lock.json")
    lock.record("data.tar.gz", "ab" * 32, 10, None)
    text = dl.ways_out(["release", "vgg"], ["car"], tmp_path, lock=tmp_path / "lock.json")
    vgg = dl.load_manifest()["files"]["vgg"]
    assert f"{tmp_path / vgg['dest']}; sha256 {vgg['sha256']}" in text
    assert f"data.tar.gz; sha256 {'ab' * 32} (from {tmp_path / 'lock.json'})" in text
    assert "checkpoints.tar.gz (= cat x00 x01 x02 x03, in this order); sha256 not published" in text
    assert "vgg16-397923af.pth" in text.splitlines()[2]  # the mirror must hold it too


def test_release_placed_by_hand_is_not_fetched(server, release, tmp_path, monkeypatch):
    """Unpacked files in the expected layout: the download verifies them and asks for nothing."""
    for blob in (release["files"]["data.tar.gz"], release["ckpt"]):
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            tar.extractall(tmp_path, filter="data")
    argv = ["download", "--what", "release", "--dataset", "car", "--dest", str(tmp_path), "--mirror", server.url,
            "--retries", "0", "--timeout", "2", "--no-progress"]
    assert _cli(argv) == 0
    assert server.requests == []
