#!/usr/bin/env bash
# Shrinks .devcarry/ (the device carry folder with pytorch3d, see docs/design.md "Environment") from ~38 MiB to ~10 MiB by stripping the
# symbol tables of pytorch3d's compiled extension, so a device call can also carry a training
# checkpoint within the 64 MiB limit. Run once after prepare.sh, from the project root.
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar -xJf .devcarry/pytorch3d-cp312.tar.xz -C "$tmp"
strip --strip-unneeded "$tmp"/pytorch3d/_C.*.so
tar -C "$tmp" -cf - . | xz -T0 -6 > .devcarry/pytorch3d-cp312.tar.xz.new
mv .devcarry/pytorch3d-cp312.tar.xz.new .devcarry/pytorch3d-cp312.tar.xz
du -sh .devcarry
