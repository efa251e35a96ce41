#!/usr/bin/env bash
# World v2's StyleGAN2 and the checks that need a GPU, in one background job of ~19 min on one H200
# (bench/background.sh: `start bench/device_v2_session.sh`, then `collect` in the next call).
# Everything ends END seconds (default 1120) after the start. Concurrently on the one GPU:
#   * the GAN (priority): a pool of 24,000 v2 renders, training until END − RESERVE, export, then
#     inversion of all 64 held-out images per family into W (1000 steps, ground-truth masks): PSNR;
#   * the CUDA rasteriser tests (binned == naive at 128 px), then the fast-vs-faithful accuracy parity
#     (bench/speed.py --parity-only, 16 images, 2 faithful seeds, PARITY_SCALE of the schedule),
#     then the diagnostic ladder's truth rungs on face2 (8 images, one process per rung, `--mode fast`)
#     until END.
# Kept in $KEEP: synthetic_v2_gan.pt, gan_logs.tgz, checks.tgz.
set -uo pipefail
if [ -f .devcarry/activate.sh ]; then source .devcarry/activate.sh; fi
START=$SECONDS
END=${END:-1120}
RESERVE=${RESERVE:-170}
PARITY_SCALE=${PARITY_SCALE:-0.25}
KEEP=${KEEP:?set KEEP (bench/background.sh does)}
W=/tmp/v2job
mkdir -p "$W/checks"
left() { echo $((END - (SECONDS - START))); }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

(
  python3 -m pytest -q -p no:cacheprovider -m gpu -k cuda tests/test_raster.py tests/test_renderer.py \
      > "$W/checks/raster_tests.txt" 2>&1
  timeout "$(left)" python3 bench/speed.py --parity-only --parity-images 16 --parity-seeds 2 \
      --parity-schedule-scale "$PARITY_SCALE" --out "$W/checks/parity/bench.json" > "$W/checks/parity.log" 2>&1
  echo "parity done at $((SECONDS - START)) s"
  for rung in truth_pseudo truth_predicted truth_warmup; do
    timeout "$(left)" python3 bench/ladder.py --family face2 --n 8 --gan models/synthetic_gan.pt \
        --view-mvn models/synthetic_v2_view_mvn.pth --light-mvn models/synthetic_v2_light_mvn.pth \
        --rungs $rung --stage-iters 100,100,100 --invert-steps 50 --out "$W/checks/ladder_face2_$rung" \
        --device cuda --mode fast > "$W/checks/ladder_face2_$rung.log" 2>&1 &
  done
  wait
  echo "checks done at $((SECONDS - START)) s"
) &
checks=$!

python3 -m gan2shape train-gan --world v2 --out-dir "$W/gan" --pool 24000 --steps 18000 --r1 0.5 \
    --max-seconds $(( $(left) - RESERVE )) --sample-every 2000 --checkpoint-every 1000 \
    --export "$KEEP/synthetic_v2_gan.pt"
echo "GAN exit status $? at $((SECONDS - START)) s"
(cd "$W/gan" && tar czf "$KEEP/gan_logs.tgz" samples_*.png losses.png log.jsonl status.json)
for fam in face2 car2; do
  d=data/synthetic_v2/test/$fam
  timeout "$(left)" python3 -m gan2shape invert --gan "$KEEP/synthetic_v2_gan.pt" \
      --images $(sed 's|$|.png|; s|^|'"$d"'/|' "$d/list.txt") \
      --masks $(sed 's|$|_mask.png|; s|^|'"$d"'/|' "$d/list.txt") --steps 1000 --batch-size 64 \
      --out-dir "$W/checks/invert_$fam" --device cuda > "$W/checks/invert_$fam.log" 2>&1
  echo "inversion $fam: exit $? at $((SECONDS - START)) s"
done
wait $checks
cd "$W/checks" && tar czf "$KEEP/checks.tgz" --exclude='*.pt' --exclude='*_inv.png' --exclude='*.png' \
    --exclude='checkpoint*' . && cd - > /dev/null
ls -la "$KEEP"
echo "job done at $((SECONDS - START)) s"
