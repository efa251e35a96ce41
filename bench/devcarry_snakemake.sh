#!/usr/bin/env bash
# Adds Snakemake to .devcarry/ (the environment carried to a GPU machine), so that a device call can run
# the pipeline's own targets, e.g. `snakemake synthetic_v2_benchmark ...`, instead of a script that
# repeats their commands. The GPU machine has Python 3.12 and no package index; this machine may have
# another Python. So: the versions of Snakemake and of everything it needs are read from this
# environment (.venv), their cp312 manylinux wheels downloaded (pip download, binary only), the ones the
# device image already has left out, installed into one folder, pulp's bundled solver binaries (35 MB)
# removed (run Snakemake there with `--scheduler greedy`), and packed as .devcarry/snakemake-cp312.tar.xz
# (≈ 7 MiB). .devcarry/activate.sh unpacks it when present and puts `snakemake` and `gan2shape` on PATH.
# Run once from the project root (needs the package index that `pip download` reaches).
set -euo pipefail
PY=${PY:-.venv/bin/python}
[ -f .devcarry/activate.sh ] || { echo "no .devcarry/activate.sh: build .devcarry first" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# the dependency closure of snakemake in this environment, as name==version, minus what the device has
"$PY" - > "$tmp/reqs.txt" <<'PYEOF'
import importlib.metadata as md, re
from packaging.requirements import Requirement
# on the device image ('cuda', package list of 2026-11-17) and needed by snakemake: not carried
present = {"attrs", "certifi", "charset-normalizer", "idna", "jinja2", "markupsafe", "packaging", "psutil",
           "pyyaml", "requests", "tabulate", "typing-extensions", "urllib3", "wrapt"}
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
seen, todo = {}, ["snakemake"]
while todo:
    name = norm(todo.pop())
    if name in seen:
        continue
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        raise SystemExit(f"{name}: needed by snakemake, not installed in this environment")
    seen[name] = dist.version
    for r in map(Requirement, dist.requires or []):   # as the device's Python 3.12 would resolve them
        if r.marker is None or r.marker.evaluate({"python_version": "3.12", "python_full_version": "3.12.3",
                                                  "sys_platform": "linux", "platform_system": "Linux", "extra": ""}):
            todo.append(r.name)
print("\n".join(f"{n}=={v}" for n, v in sorted(seen.items()) if n not in present))
PYEOF
echo "carrying $(wc -l < "$tmp/reqs.txt") packages"
plat=(--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
while read -r req; do   # a cp312 wheel, or for a package published as source only a pure-Python wheel built here
  "$PY" -m pip download -q --no-deps "${plat[@]}" -d "$tmp/wheels" "$req" 2>/dev/null \
    || "$PY" -m pip wheel -q --no-deps -w "$tmp/built" "$req"
done < "$tmp/reqs.txt"
if [ -d "$tmp/built" ]; then
  for w in "$tmp"/built/*.whl; do
    case "$w" in *-none-any.whl) mv "$w" "$tmp/wheels/" ;; *) echo "$w: built here but not pure Python" >&2; exit 2 ;; esac
  done
fi
"$PY" -m pip install -q --no-deps --no-compile "${plat[@]}" --target "$tmp/site" "$tmp"/wheels/*.whl
rm -rf "$tmp/site/bin" "$tmp/site/pulp/solverdir"/*/   # console scripts name this machine's Python; solvers
find "$tmp/site" -name __pycache__ -prune -exec rm -rf {} +
tar -C "$tmp/site" -cf - . | xz -T0 -6 > .devcarry/snakemake-cp312.tar.xz
if ! grep -q snakemake-cp312 .devcarry/activate.sh; then
  cat >> .devcarry/activate.sh <<'SHEOF'
# Snakemake (bench/devcarry_snakemake.sh) and the console scripts the rules call
if [ -f .devcarry/snakemake-cp312.tar.xz ] && [ ! -d /tmp/site/snakemake ]; then
  tar -xJf .devcarry/snakemake-cp312.tar.xz -C /tmp/site
fi
mkdir -p /tmp/site/bin
printf '#!/bin/sh\nexec python3 -m gan2shape "$@"\n' > /tmp/site/bin/gan2shape
printf '#!/bin/sh\nexec python3 -m snakemake "$@"\n' > /tmp/site/bin/snakemake
chmod +x /tmp/site/bin/gan2shape /tmp/site/bin/snakemake
export PATH="/tmp/site/bin:$PATH"
SHEOF
fi
du -sh .devcarry
