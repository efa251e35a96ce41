#!/usr/bin/env bash
# Keeps world v1's files (its GAN, data and benchmark: 17 MB that no world-v2 target reads) out of the
# copy of the working tree that a device call carries, so that tracked files plus .devcarry/ stay under
# the device's 64 MiB. `hide` untracks them in the index only (the files stay on disk) and lists them in
# .git/info/exclude; `restore` puts both back. Never commit between the two: `git status` shows them as
# deleted while hidden.
#   bash bench/device_tree.sh hide;  <device call with carry [".devcarry"]>;  bash bench/device_tree.sh restore
set -euo pipefail
paths=(models/synthetic_gan.pt data/synthetic results/synthetic_benchmark)
exclude=.git/info/exclude
mark="# bench/device_tree.sh hide"
case "${1:-}" in
  hide)
    git rm -r -q --cached -- "${paths[@]}"
    { echo "$mark"; printf '/%s\n' "${paths[@]}"; } >> "$exclude" ;;
  restore)
    git reset -q -- "${paths[@]}"
    sed -i "\\|^$mark\$|,+${#paths[@]}d" "$exclude" ;;
  *) echo "usage: bench/device_tree.sh hide|restore" >&2; exit 2 ;;
esac
git ls-files -z | du -cb --files0-from=- | tail -1 | awk '{printf "tracked files: %.1f MiB\n", $1 / 1048576}'
