#!/usr/bin/env bash
# One background job on one H200 (bench/background.sh: `start bench/device_car_rungs.sh`, then
# `collect`): the car recipe's subset through the benchmark's Snakemake target (bench/device_v2_benchmark.sh
# with CONFIG, default config/subset_car_first.yaml) and, concurrently on the same GPU, the diagnostic
# ladder's truth rungs on the first N (default 8) images of face2 and car2, one process per family and
# rung, `--mode fast`. Everything stops END seconds (default 1350) after the start; the ladder's finished
# runs are kept (a stopped rung is summarised with `bench/ladder.py --summarize-only` over what finished).
# Kept in $KEEP: bench.tgz and snakemake.log (from device_v2_benchmark.sh), ladder.tgz (every rung's
# runs/*/metrics.json, log.json, ladder.json and its log).
set -uo pipefail
if [ -f .devcarry/activate.sh ]; then source .devcarry/activate.sh; fi
KEEP=${KEEP:?set KEEP (bench/background.sh does)}
START=$SECONDS
END=${END:-1350}
N=${N:-8}
export CONFIG=${CONFIG:-config/subset_car_first.yaml} END SLOTS=${SLOTS:-6}
bash bench/device_v2_benchmark.sh > /tmp/car_bench.log 2>&1 &
bench=$!
L=/tmp/ladder
mkdir -p "$L"
for fam in face2 car2; do
  for rung in truth_pseudo truth_predicted truth_warmup; do
    timeout $((END - 30)) python3 bench/ladder.py --family "$fam" --n "$N" --gan models/synthetic_v2_gan.pt \
        --view-mvn models/synthetic_v2_view_mvn.pth --light-mvn models/synthetic_v2_light_mvn.pth \
        --rungs "$rung" --stage-iters 100,100,100 --vl-warmup 100 --invert-steps 50 \
        --out "$L/${fam}_$rung" --device cuda --mode fast > "$L/${fam}_$rung.log" 2>&1 &
  done
done
pack() {   # the ladder's small files (no latents, images, arrays or checkpoints) into $KEEP/ladder.tgz
  (cd "$L" && tar czf "$KEEP/ladder.tgz.tmp" --exclude='*.pt' --exclude='*.png' --exclude='*.npy' --exclude='*.pth' \
      --exclude='*.ckpt' . && mv "$KEEP/ladder.tgz.tmp" "$KEEP/ladder.tgz")
}
( while true; do sleep 60; pack; done ) > /dev/null 2>&1 &
archiver=$!
wait $(jobs -p | grep -v "^$archiver\$" | grep -v "^$bench\$")
echo "[$((SECONDS - START)) s] ladder done"
wait $bench
echo "[$((SECONDS - START)) s] benchmark done"
kill $archiver 2>/dev/null
pack
tail -n 5 /tmp/car_bench.log
ls -la "$KEEP"
