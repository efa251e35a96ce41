#!/usr/bin/env bash
# Shrinks .devcarry/ (the environment carried to a GPU machine: activate.sh and a pytorch3d build) from
# ~38 MiB to ~10 MiB by stripping the symbol tables of pytorch3d's compiled extension, so a device call
# can also carry a training checkpoint within a 64 MiB limit. Run once after building .devcarry/, from the
# project root.
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar -xJf .devcarry/pytorch3d-cp312.tar.xz -C "$tmp"
strip --strip-unneeded "$tmp"/pytorch3d/_C.*.so
tar -C "$tmp" -cf - . | xz -T0 -6 > .devcarry/pytorch3d-cp312.tar.xz.new
mv .devcarry/pytorch3d-cp312.tar.xz.new .devcarry/pytorch3d-cp312.tar.xz
du -sh .devcarry
