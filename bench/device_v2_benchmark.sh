#!/usr/bin/env bash
# The world-v2 benchmark through its own Snakemake target on one H200, as one background job
# (bench/background.sh: `start bench/device_v2_benchmark.sh`, then `collect`). Needs Snakemake in
# .devcarry/ (bench/devcarry_snakemake.sh). Environment:
#   CONFIG  further config files merged over config/benchmark_v2.yaml, e.g. a subset of its images and
#           rows (a file of `benchmark_v2: {images: 2, runs: {...}}`); default none: the whole benchmark;
#   MODE    params.yaml's mode for every job (default fast; faithful: the exact fp32 kernels);
#   SLOTS   GPU jobs at once on the one GPU (default 14, the config's suggestion);
#   END     seconds until Snakemake is stopped (default 1500); a stopped job's outputs are removed by
#           Snakemake and its checkpoint stays on the machine, so size the subset to finish.
# Kept in $KEEP, refreshed every minute: bench.tgz (results/synthetic_v2/gan2shape*.{json,csv},
# figure_*.png, results/benchmark_v2/ without checkpoints and network files) and snakemake.log.
set -uo pipefail
if [ -f .devcarry/activate.sh ]; then source .devcarry/activate.sh; fi
KEEP=${KEEP:?set KEEP (bench/background.sh does)}
command -v snakemake > /dev/null || { echo "no snakemake on PATH: run bench/devcarry_snakemake.sh here first" >&2; exit 2; }
START=$SECONDS
END=${END:-1500}
MODE=${MODE:-fast}
SLOTS=${SLOTS:-14}
read -r -a extra <<< "${CONFIG:-}"
for f in "${extra[@]}"; do [ -f "$f" ] || { echo "CONFIG: no file $f" >&2; exit 2; }; done
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
snakemake --version
archive() {
  tar czf "$KEEP/bench.tgz.tmp" --exclude='*.ckpt' --exclude='checkpoints' --exclude='*.pth' \
      results/synthetic_v2/gan2shape*.json results/synthetic_v2/gan2shape_*.csv results/synthetic_v2/figure_*.png \
      results/benchmark_v2 2>/dev/null
  mv "$KEEP/bench.tgz.tmp" "$KEEP/bench.tgz"
  cp /tmp/v2bench_snakemake.log "$KEEP/snakemake.log" 2>/dev/null
}
( while true; do sleep 60; archive; done ) > /dev/null 2>&1 &   # (its sleep must not hold our output open)
archiver=$!
timeout "$END" snakemake synthetic_v2_benchmark --cores 16 --resources gpu="$SLOTS" \
    --configfile config/benchmark_v2.yaml "${extra[@]}" --config mode="$MODE" --scheduler greedy \
    > /tmp/v2bench_snakemake.log 2>&1
echo "[$((SECONDS - START)) s] snakemake exit $?"
kill $archiver 2>/dev/null
archive
tail -n 30 /tmp/v2bench_snakemake.log
ls -la "$KEEP"
