#!/usr/bin/env bash
# One background job on one H200 (bench/background.sh: `start bench/device_v2_joint.sh`, then `collect`
# in the next call). Everything ends END seconds (default 1100) after the start. At once:
#   0. the CUDA renderer/rasteriser tests (TF32 must not change the geometry: method/exact.py);
#   1. the parity runs: bench/mode_parity.py, both modes × seeds 0 1 2, the first 8 held-out images of
#      face2 and car2, starting from the committed runs and latents (results/synthetic_v2/mode_parity: a
#      finished run is not run again). On 2026-12-01 this job ran the fast runs again after the TF32 fix,
#      the pre-fix ones renamed to the variant fast_tf32; with everything committed it now runs nothing;
#   2. face2_0_00000 faithful with --log-every 1 (prior_predicted, seed 0): the GPU's first step-3
#      iterations, for the CPU-vs-GPU question of docs/RESULTS.md;
#   3. the synface joint pre-train (gan2shape pretrain, preset synface_pretrain, fast mode, STREAMS streams) on
#      200 GAN samples, stopped PRE_MARGIN (default 320) s before the end if unfinished, then the
#      ladder's joint_shared (4 images per model, the original protocol) and joint_independent rungs on
#      the 8 face2 images (fast mode); once the parity is done, prior_predicted with the same 500/500/200
#      synface stage (fast) for comparison.
# PARITY=0 skips parts 1 and 2 and the prior_500 comparison (the latents still come from the committed
# parity folder): the pre-train then has the GPU to itself.
# Kept in $KEEP: joint.tgz (runs without checkpoints, JSON/CSV, logs, test output, the pre-train's log and hash).
set -uo pipefail
if [ -f .devcarry/activate.sh ]; then source .devcarry/activate.sh; fi
START=$SECONDS
END=${END:-1100}
PRE_MARGIN=${PRE_MARGIN:-320}
STREAMS=${STREAMS:-1}     # the pre-train's streams (the original: 8, i.e. 8 images per iteration)
KEEP=${KEEP:?set KEEP (bench/background.sh does)}
W=/tmp/v2joint
P=$W/pretrain
mkdir -p "$W" "$P"
left() { echo $((END - (SECONDS - START))); }
stamp() { echo "[$((SECONDS - START)) s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
GAN=models/synthetic_v2_gan.pt
MVN=(--view-mvn models/synthetic_v2_view_mvn.pth --light-mvn models/synthetic_v2_light_mvn.pth)
G2S="python3 -m gan2shape"
archive() {
  (cd "$W" && tar czf "$KEEP/joint.tgz.tmp" --exclude='*.ckpt' --exclude='checkpoints' --exclude='pretrain*.pth' \
      --exclude='samples/*.png' . 2>/dev/null && mv "$KEEP/joint.tgz.tmp" "$KEEP/joint.tgz")
}

python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_renderer.py tests/test_raster.py > "$W/gpu_tests.txt" 2>&1
stamp "GPU tests: $(tail -n 1 "$W/gpu_tests.txt")"

# 1. parity: fast only (the committed faithful runs are finished runs)
mkdir -p "$W/parity"
cp -r results/synthetic_v2/mode_parity/face2 results/synthetic_v2/mode_parity/car2 "$W/parity/"
if [ "${PARITY:-1}" = 1 ]; then
  timeout "$(left)" python3 bench/mode_parity.py --families face2 car2 --n 8 --seeds 0 1 2 --jobs 6 \
      "${MVN[@]}" --out "$W/parity" --device cuda > "$W/parity.log" 2>&1 &
  parity=$!
  # 2. the first step-3 iterations on the GPU, faithful
  timeout "$(left)" python3 bench/ladder.py --family face2 --n 1 --gan $GAN "${MVN[@]}" \
      --latents "$W/parity/face2/latents" --rungs prior_predicted --prior-iters 1000 --out "$W/first_step" \
      --device cuda --log-every 1 > "$W/first_step.log" 2>&1 &
else
  sleep 1 & parity=$!
fi

# 3. the joint pre-train, then the joint rungs
(
  set -e
  $G2S sample-gan --gan $GAN --n 200 --seed 0 --device cuda --out "$P/samples"
  $G2S segment --checkpoint models/synthetic_v2_segmenter.pt --images "$P/samples/000000.png" --image-size 64 \
      --parser-size 128 --confidence softmax --device cuda --out-dir "$P/segment"
  $G2S prior --name ellipsoid --category synthetic --mask "$P/segment/000000_mask.png" --image-size 64 \
      --out "$P/prior0.npy"
  # the whole synface_pretrain schedule (8 stages, 23,400 iterations), stopped in time for the rungs:
  # then --partial-out holds the networks at the stop (a shortened pre-train; its file says how far)
  $G2S pretrain --list "$P/samples/list.txt" --first-prior "$P/prior0.npy" --preset synface_pretrain --streams "$STREAMS" \
      --image-size 64 --crop 0 --gan $GAN "${MVN[@]}" --perceptual discriminator --seed 0 --device cuda --mode fast \
      --half --out "$P/pretrain_full.pth" --partial-out "$P/pretrain_partial.pth" --log "$P/pretrain_log.json" \
      --log-every 100 --checkpoint "$P/pretrain.ckpt" --checkpoint-every 100000 \
      --stop-after-seconds $(( $(left) - PRE_MARGIN )) > "$P/pretrain.log" 2>&1 || [ $? = 3 ]
  if [ -f "$P/pretrain_full.pth" ]; then cp "$P/pretrain_full.pth" "$P/pretrain.pth"
  else cp "$P/pretrain_partial.pth" "$P/pretrain.pth"; fi
  # all five nets in float16 are ~83 MiB: more than a device call returns (64 MiB), so only its hash travels
  (cd "$P" && sha256sum pretrain.pth && ls -l pretrain.pth) > "$P/pretrain.sha256"
  stamp "pretrain done: $(tail -n 1 "$P/pretrain.log")"
  J=(--family face2 --n 8 --gan $GAN "${MVN[@]}" --latents "$W/parity/face2/latents" --stage-iters 500,500,200
     --device cuda --mode fast)
  timeout "$(left)" python3 bench/ladder.py "${J[@]}" --rungs joint_shared --pretrain "$P/pretrain.pth" --group 4 \
      --out "$W/joint_shared" > "$W/joint_shared.log" 2>&1 &
  timeout "$(left)" python3 bench/ladder.py "${J[@]}" --rungs joint_independent --pretrain "$P/pretrain.pth" \
      --out "$W/joint_independent" > "$W/joint_independent.log" 2>&1 &
  wait
  stamp "joint rungs done"
) > "$W/joint.log" 2>&1 &
joint=$!

( while kill -0 $parity 2>/dev/null || kill -0 $joint 2>/dev/null; do sleep 90; archive; done ) &
wait $parity
stamp "parity exit $?"
# the same 500/500/200 synface stage from the ellipsoid prior (what the joint start is compared with)
[ "${PARITY:-1}" = 1 ] && timeout "$(left)" python3 bench/ladder.py --family face2 --n 8 --gan $GAN "${MVN[@]}" --latents "$W/parity/face2/latents" \
    --stage-iters 500,500,200 --device cuda --mode fast --rungs prior_predicted --batch --prior-iters 1000 \
    --out "$W/prior_500" > "$W/prior_500.log" 2>&1 &
[ "${PARITY:-1}" = 1 ] && python3 bench/mode_parity.py --families face2 car2 --n 8 --seeds 0 1 2 "${MVN[@]}" \
    --out "$W/parity" --summarize-only >> "$W/parity.log" 2>&1
wait $joint
stamp "joint exit $?"
wait
for r in joint_shared joint_independent prior_500; do   # whatever finished, if a run was cut short
  rg=$r; [ $r = prior_500 ] && rg=prior_predicted
  python3 bench/ladder.py --family face2 --n 8 --gan $GAN "${MVN[@]}" --rungs $rg --stage-iters 500,500,200 \
      --out "$W/$r" --summarize-only >> "$W/$r.log" 2>&1
done
archive
tail -n 25 "$W/parity.log"; cat "$W/joint.log" | tail -n 20
ls -la "$KEEP"
stamp "job done"
