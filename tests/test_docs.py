"""Every reference resolves inside the repository: "METHOD §x.y" / "EXTENSIONS §x" citations to a
heading of docs/method.md / docs/extensions.md, DESIGN with a quoted section name to a heading of
docs/design.md, and
nothing points outside the clone (../shared)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = {"METHOD": REPO / "docs" / "method.md", "EXTENSIONS": REPO / "docs" / "extensions.md"}
# "METHOD §3.7", "METHOD.md §9", "EXTENSIONS §1.3–1.5", "METHOD §3.4, §3.6", "(METHOD §1.5, §8.1)"
CITE = re.compile(r"\b(METHOD|EXTENSIONS)(?:\.md)?\s*((?:§\s*\d+(?:\.\d+)*(?:\s*[–-]\s*\d+(?:\.\d+)*)?"
                  r"(?:\s*(?:,|/|and)\s*)?)+)")
NUMBER = re.compile(r"§\s*(\d+(?:\.\d+)*)")
DESIGN = re.compile(r'\bDESIGN\s+"([^"]+)"')


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    out += subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.split()
    files = []
    for f in dict.fromkeys(out):
        p = REPO / f
        if p.is_file() and p.suffix in {".py", ".md", ".smk", ".yaml", ".yml", ".toml", ".txt", ".sh", ".json",
                                        ".cfg", ""} and p.stat().st_size < 2_000_000:
            files.append(p)
    return files


def _headings(path: Path) -> set[str]:
    """Section numbers of the Markdown headings ('## 3. Renderer', '### 3.7 Full …' → '3', '3.7')."""
    nums = set()
    for line in path.read_text().splitlines():
        m = re.match(r"^#{2,6}\s+(\d+(?:\.\d+)*)\.?\s", line)
        if m:
            nums.add(m.group(1))
    return nums


def _citations(files) -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for f in files:
        text = f.read_text(errors="replace")
        for m in CITE.finditer(text):
            for n in NUMBER.findall(m.group(2)):
                found.setdefault((m.group(1), n), []).append(str(f.relative_to(REPO)))
            # ranges "§1.3–1.5": the end of the range too
            for end in re.findall(r"[–-]\s*(\d+(?:\.\d+)*)", m.group(2)):
                found.setdefault((m.group(1), end), []).append(str(f.relative_to(REPO)))
    return found


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_docs_keep_the_cited_section_numbers(doc):
    heads = _headings(DOCS[doc])
    assert {"1", "2", "3", "4", "5", "6", "7", "8"} <= heads
    intro = " ".join(DOCS[doc].read_text().split("\n## ")[0].split())
    assert "the section numbers below are those citations" in intro


def test_every_method_and_extensions_citation_resolves():
    files = _tracked_text_files()
    cites = _citations([f for f in files if f.suffix in {".py", ".md", ".smk", ".yaml", ".json", ".toml", ".sh"}
                        and "docs" not in f.relative_to(REPO).parts[:1]])
    assert any(k[0] == "METHOD" for k in cites) and any(k[0] == "EXTENSIONS" for k in cites)
    heads = {doc: _headings(path) for doc, path in DOCS.items()}
    missing = {f"{doc} §{n}": where[:3] for (doc, n), where in cites.items() if n not in heads[doc]}
    assert not missing, f"citations without a heading in docs/: {missing}"


def test_every_design_citation_resolves():
    design = REPO / "docs" / "design.md"
    heads = {m.group(1).strip() for m in re.finditer(r"^##\s+(.+)$", design.read_text(), re.M)}
    files = _tracked_text_files()
    cited = {(m.group(1), str(f.relative_to(REPO))) for f in files for m in DESIGN.finditer(f.read_text(errors="replace"))}
    assert cited, "expected DESIGN citations in the code"
    missing = sorted((name, where) for name, where in cited if name not in heads)
    assert not missing, f"DESIGN sections not in docs/design.md: {missing}"


def test_nothing_refers_outside_the_clone():
    bad = []
    for f in _tracked_text_files():
        for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if re.search(r"\.\./shared\b|/work/shared\b", line) and f.name != "test_docs.py":
                bad.append(f"{f.relative_to(REPO)}:{i}: {line.strip()[:100]}")
    assert not bad, "references to files a clone does not have:\n" + "\n".join(bad)


def test_readme_links_the_docs():
    readme = (REPO / "README.md").read_text()
    for name in ("docs/method.md", "docs/extensions.md", "docs/design.md"):
        assert f"({name})" in readme and (REPO / name).is_file()
