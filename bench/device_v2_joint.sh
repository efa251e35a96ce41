#!/usr/bin/env bash
# The original synface protocol on world v2, in one background job on one H200 (bench/background.sh:
# `start bench/device_v2_joint.sh`, then `collect` in the next calls). The pre-train (86.5 MB of nets)
# cannot leave the machine, so it and its instance runs share one job. Everything ends END s after the start.
#   1. the joint pre-train: GAN samples (`sample-gan`), the first one's mask and ellipsoid prior, then
#      `gan2shape pretrain --preset synface_pretrain` with NUM_STAGES of its 8 stages (default 1: 1500/1500/1500),
#      STREAMS streams (default 1; the original: 8), fast mode, stopped after at most PRE_MAX s (default 560;
#      then --partial-out holds the nets at the stop, and its file says how far it got);
#      meanwhile the W latents of the first N_SHARED face2 test images (the committed parity latents
#      of the first 8, `gan2shape invert` for the rest, with the ladder's settings);
#   2. from the pre-train, the ladder's joint_shared rung on the first N_SHARED (default 32) images, 4 per
#      model, JOBS (default 4) groups at a time, and joint_independent on the first N_IND (default 8) images
#      in one batch, both 500/500/200, fast mode.
# Kept in $KEEP: joint.tgz (runs without checkpoints, JSON/CSV, logs, the pre-train's log and hash),
# refreshed every minute, so a cut job still returns what finished.
set -uo pipefail
if [ -f .devcarry/activate.sh ]; then source .devcarry/activate.sh; fi
START=$SECONDS
END=${END:-1450}
PRE_MAX=${PRE_MAX:-560}
NUM_STAGES=${NUM_STAGES:-1}
STREAMS=${STREAMS:-1}
N_SHARED=${N_SHARED:-32}
N_IND=${N_IND:-8}
JOBS=${JOBS:-4}
KEEP=${KEEP:?set KEEP (bench/background.sh does)}
W=/tmp/v2joint
P=$W/pretrain
mkdir -p "$W" "$P" "$W/latents"
left() { echo $((END - (SECONDS - START))); }
stamp() { echo "[$((SECONDS - START)) s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
GAN=models/synthetic_v2_gan.pt
MVN=(--view-mvn models/synthetic_v2_view_mvn.pth --light-mvn models/synthetic_v2_light_mvn.pth)
G2S="python3 -m gan2shape"
archive() {
  (cd "$W" && tar czf "$KEEP/joint.tgz.tmp" --exclude='*.ckpt' --exclude='checkpoints' --exclude='pretrain*.pth' \
      --exclude='samples/*.png' --exclude='latents' . 2>/dev/null && mv "$KEEP/joint.tgz.tmp" "$KEEP/joint.tgz")
}
( while [ ! -f "$W/done" ]; do sleep 60; archive; done ) &
archiver=$!

# the latents: the committed ones, the rest inverted as bench/ladder.py would (1000 steps, GT masks, W)
(
  cp results/synthetic_v2/mode_parity/face2/latents/*.pt "$W/latents/"
  mapfile -t names < <(head -n "$N_SHARED" data/synthetic_v2/test/face2/list.txt)
  todo=(); masks=()
  for n in "${names[@]}"; do
    [ -f "$W/latents/$n.pt" ] || { todo+=("data/synthetic_v2/test/face2/$n.png"); masks+=("data/synthetic_v2/test/face2/${n}_mask.png"); }
  done
  [ ${#todo[@]} = 0 ] || $G2S invert --gan $GAN --images "${todo[@]}" --masks "${masks[@]}" --out-dir "$W/latents" \
      --steps 1000 --image-size 64 --device cuda
  stamp "latents: ${#todo[@]} inverted"
) > "$W/invert.log" 2>&1 &
inv=$!

# 1. the joint pre-train
(
  set -e
  $G2S sample-gan --gan $GAN --n 200 --seed 0 --device cuda --out "$P/samples"
  $G2S segment --checkpoint models/synthetic_v2_segmenter.pt --images "$P/samples/000000.png" --image-size 64 \
      --parser-size 128 --confidence softmax --device cuda --out-dir "$P/segment"
  $G2S prior --name ellipsoid --category synthetic --mask "$P/segment/000000_mask.png" --image-size 64 \
      --out "$P/prior0.npy"
  $G2S pretrain --list "$P/samples/list.txt" --first-prior "$P/prior0.npy" --preset synface_pretrain \
      --num-stages "$NUM_STAGES" --streams "$STREAMS" --image-size 64 --crop 0 --gan $GAN "${MVN[@]}" \
      --perceptual discriminator --seed 0 --device cuda --mode fast --half --out "$P/pretrain_full.pth" \
      --partial-out "$P/pretrain_partial.pth" --log "$P/pretrain_log.json" --log-every 100 \
      --checkpoint "$P/pretrain.ckpt" --checkpoint-every 100000 \
      --stop-after-seconds $((PRE_MAX - (SECONDS - START))) > "$P/pretrain.log" 2>&1 || [ $? = 3 ]
) > "$W/pretrain_setup.log" 2>&1
if [ -f "$P/pretrain_full.pth" ]; then cp "$P/pretrain_full.pth" "$P/pretrain.pth"
else cp "$P/pretrain_partial.pth" "$P/pretrain.pth"; fi
(cd "$P" && sha256sum pretrain.pth && ls -l pretrain.pth) > "$P/pretrain.sha256"
stamp "pretrain done: $(tail -n 1 "$P/pretrain.log")"
wait $inv
stamp "$(tail -n 1 "$W/invert.log")"

# 2. the instance runs from the pre-train
J=(--family face2 --gan $GAN "${MVN[@]}" --latents "$W/latents" --stage-iters 500,500,200 --device cuda --mode fast
   --pretrain "$P/pretrain.pth")
timeout "$(left)" python3 bench/ladder.py "${J[@]}" --n "$N_SHARED" --rungs joint_shared --group 4 --jobs "$JOBS" \
    --out "$W/joint_shared" > "$W/joint_shared.log" 2>&1 &
shared=$!
timeout "$(left)" python3 bench/ladder.py "${J[@]}" --n "$N_IND" --rungs joint_independent \
    --out "$W/joint_independent" > "$W/joint_independent.log" 2>&1 &
independent=$!
wait $shared $independent   # not the archiver, which runs until "done"
stamp "joint rungs done"
for r in joint_shared joint_independent; do   # whatever finished, if a run was cut short
  n=$N_SHARED; [ $r = joint_independent ] && n=$N_IND
  python3 bench/ladder.py --family face2 --n "$n" --gan $GAN "${MVN[@]}" --rungs $r --stage-iters 500,500,200 \
      --out "$W/$r" --summarize-only >> "$W/$r.log" 2>&1
  tail -n 3 "$W/$r.log"
done
touch "$W/done"; kill $archiver 2>/dev/null; archive
ls -la "$KEEP"
stamp "job done"
