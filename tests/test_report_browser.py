"""The HTML report in a real headless Chromium: the page loads, every image and GIF decodes, the
tables hold the numbers of the run's metrics.json, and a screenshot is not blank (slow)."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_viz import run_report

pytestmark = pytest.mark.slow

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
# appended to a copy of the page: after load, the state of every image goes into <pre id=check>
CHECK_JS = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
                                             w: i.naturalWidth}));
  const pre = document.createElement('pre'); pre.id = 'check';
  pre.textContent = JSON.stringify({images: imgs});
  document.body.appendChild(pre);
});
</script>"""


def chromium(args: list[str], profile: Path, timeout: float = 120) -> str:
    """Run headless Chromium with a throw-away profile; its stdout."""
    res = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


class _Tables(HTMLParser):
    """Cell texts of every table with an id, and the text of <pre id=check>."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.check, self._table, self._cell, self._in_check = "", None, None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self._table = self.tables.setdefault(a["id"], [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = ""
        elif tag == "pre" and a.get("id") == "check":
            self._in_check = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._table[-1].append(self._cell.strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "pre":
            self._in_check = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._in_check:
            self.check += data


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium)")
def test_report_in_chromium(tmp_path):
    out, summary = run_report(tmp_path / "run")
    probe = out.with_name("probe.html")  # beside the page, so that its relative links resolve alike
    probe.write_text(out.read_text().replace("</body>", CHECK_JS + "</body>"))
    dom = chromium(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], tmp_path / "profile")
    p = _Tables()
    p.feed(dom)
    # every image and GIF of the page decoded: 4 runs × 11 figures + 2 metric plots + the curves
    images = json.loads(p.check)["images"]
    assert len(images) == 4 * 11 + 3
    assert [i["src"] for i in images if not i["ok"]] == []
    assert sum(i["src"].endswith("rotate.gif") and i["w"] == 256 for i in images) == 4  # 32 px × upscale 8
    # the accuracy table holds metrics.json's numbers, one row per method, with a "lower is better" header
    head, *rows = p.tables["summary"]
    assert all(h.endswith("↓") for h in head[4:])
    assert len(rows) == len(summary["methods"])
    for row in rows:
        s = summary["methods"][row[2]]
        assert row[3] == str(s["n"])
        assert row[4] == f"{s['side_mean']:.3f} ± {s['side_std']:.3f}" and row[5].startswith(f"{s['mad_mean']:.3f}")
    run = dict(p.tables["run"][1:])
    assert run["seconds per image"] == f"{summary['seconds_per_image']:.3f}" and run["preset"] == summary["preset"]
    # the per-image table: two images, SIDE of GAN2Shape from the box prior on img1 = 1 + 1 + 1
    per_image = p.tables["per-image"]
    assert [r[0] for r in per_image[1:]] == ["img0", "img1"]
    assert per_image[2][per_image[0].index("GAN2Shape from the box prior: SIDE / MAD")] == "3.000 / 10.000"
    assert dict(p.tables["params"][1:])["np"] == "4"
    assert "Smoke run" in dom and "Training curves" in dom

    png = tmp_path / "report.png"
    chromium(["--virtual-time-budget=10000", "--window-size=1400,2400", f"--screenshot={png}", out.as_uri()],
             tmp_path / "profile")
    a = np.asarray(Image.open(png).convert("RGB")).astype(float)
    assert a.shape[:2] == (2400, 1400) and a.std() > 20  # a rendered page, not a blank one
