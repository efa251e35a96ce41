#!/usr/bin/env bash
# Faithful vs fast mode on world v2 with seeds, and the method's prior rungs on 8 images per family,
# in one background job on one H200 (bench/background.sh: `start bench/device_v2_parity.sh`, then
# `collect` in the next call). Everything ends END seconds (default 1060) after the start.
#   1. bench/mode_parity.py: face2 then car2, first 8 held-out images each, prior_predicted (the method as
#      published, 100/100/100, ellipsoid prior pre-fit 1000), modes faithful and fast × seeds 0 1 2,
#      each run one batch of 8 independent models, JOBS runs at once on the GPU;
#   2. as runs finish, the ladder's prior_warmup and prior_pseudo rungs (fast, seed 0, batched) on the
#      same images and latents.
#   0. first, the CUDA renderer/rasteriser tests (TF32 must not change the geometry: method/exact.py).
# Kept in $KEEP: parity.tgz (runs without checkpoints, mode_parity.json/.csv, ladder JSONs, logs, test output).
set -uo pipefail
if [ -f .devcarry/activate.sh ]; then source .devcarry/activate.sh; fi
START=$SECONDS
END=${END:-1060}
JOBS=${JOBS:-6}
KEEP=${KEEP:?set KEEP (bench/background.sh does)}
W=/tmp/v2par
mkdir -p "$W"
left() { echo $((END - (SECONDS - START))); }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
MVN=(--view-mvn models/synthetic_v2_view_mvn.pth --light-mvn models/synthetic_v2_light_mvn.pth)
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_renderer.py tests/test_raster.py > "$W/gpu_tests.txt" 2>&1
echo "GPU tests: $(tail -n 1 "$W/gpu_tests.txt") at $((SECONDS - START)) s"

timeout "$(left)" python3 bench/mode_parity.py --families face2 car2 --n 8 --seeds 0 1 2 --jobs "$JOBS" \
    "${MVN[@]}" --out "$W/parity" --device cuda > "$W/parity.log" 2>&1 &
parity=$!
# the latents exist once mode_parity's inversions are done: then the two extra rungs per family
( while [ ! -f "$W/parity/car2/latents/car2_0_00007.pt" ] && kill -0 $parity 2>/dev/null; do sleep 5; done
  sleep 240   # let the parity runs take the GPU first
  for fam in face2 car2; do   # both families at once (one after the other, car2 did not finish in time)
    ( timeout "$(left)" python3 bench/ladder.py --family $fam --n 8 --gan models/synthetic_v2_gan.pt "${MVN[@]}" \
        --latents "$W/parity/$fam/latents" --rungs prior_warmup prior_pseudo --batch --prior-iters 1000 \
        --out "$W/rungs_$fam" --device cuda --mode fast > "$W/rungs_$fam.log" 2>&1
      echo "rungs $fam: exit $? at $((SECONDS - START)) s" ) &
  done
  wait ) &
rungs=$!
( while kill -0 $parity 2>/dev/null; do   # refresh the kept archive every 2 minutes
    sleep 120
    (cd "$W" && tar czf "$KEEP/parity.tgz.tmp" --exclude='*.ckpt' --exclude='checkpoints' . 2>/dev/null \
        && mv "$KEEP/parity.tgz.tmp" "$KEEP/parity.tgz")
  done ) &
wait $parity
echo "parity exit $? at $((SECONDS - START)) s"
wait $rungs
python3 bench/mode_parity.py --families face2 car2 --n 8 --seeds 0 1 2 "${MVN[@]}" --out "$W/parity" \
    --summarize-only >> "$W/parity.log" 2>&1
for fam in face2 car2; do
  python3 bench/ladder.py --family $fam --n 8 --gan models/synthetic_v2_gan.pt "${MVN[@]}" \
      --rungs prior_warmup prior_pseudo --out "$W/rungs_$fam" --summarize-only >> "$W/rungs_$fam.log" 2>&1
done
(cd "$W" && tar czf "$KEEP/parity.tgz" --exclude='*.ckpt' --exclude='checkpoints' .)
tail -n 20 "$W/parity.log"
ls -la "$KEEP"
echo "job done at $((SECONDS - START)) s"
