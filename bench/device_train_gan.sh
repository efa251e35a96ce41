#!/usr/bin/env bash
# One device call (≤ 9 min of work): train a synthetic world's segmenter and StyleGAN2.
# Usage on the device:  [WORLD=v1|v2] bash bench/device_train_gan.sh [resume]
# First call: the segmenter (2×1500 held-out-seed renders, seconds) and the GAN from scratch.
# Later calls ("resume"): the checkpoint parts of the previous call, copied into ./resume/ck.part.*,
# are joined and training continues (stream seed = step, so a resumed run sees fresh renders).
# v1 (the committed models/synthetic_gan.pt): 17,544 steps in 908 s of an H200 over two calls.
# v2 (docs/world.md): STEPS (default 18000) is the target; exit status 0 when it is reached or the
# call's time is up; the status line says "done": true|false.
# Everything to keep goes to $OUT (≤ 8 files, ≤ 16 MiB each): <prefix>_gan.pt, <prefix>_segmenter.pt
# (first call), gan_logs.tgz, ck.part.* (the resumable checkpoint, split below 16 MiB).
set -euo pipefail
if [ -f .devcarry/activate.sh ]; then source .devcarry/activate.sh; fi
START=$SECONDS
WORLD=${WORLD:-v1}
case "$WORLD" in
  v1) FAMILIES="face box"; PREFIX=synthetic; STEPS=${STEPS:-200000} ;;
  v2) FAMILIES="face2 car2"; PREFIX=synthetic_v2; STEPS=${STEPS:-18000} ;;
  *) echo "WORLD must be v1 or v2, got $WORLD" >&2; exit 2 ;;
esac
BUDGET=${BUDGET:-540}          # seconds of this call's work (≤ 9 min)
WORK=/tmp/gan_$WORLD
mkdir -p "$WORK"
if [ "${1:-}" = "resume" ]; then
  cat resume/ck.part.* > "$WORK/checkpoint.pt"
else
  python3 -m gan2shape synthesize --family $FAMILIES --n 1500 --seed 1000 --out "$WORK/segdata" --device cuda
  python3 -m gan2shape train-segmenter --data $(for f in $FAMILIES; do echo "$WORK/segdata/$f"; done) \
      --epochs 15 --device cuda --out "$OUT/${PREFIX}_segmenter.pt" --history "$WORK/segmenter_history.json"
fi
# the GAN: a pool of 24k renders (v2: half of them relit like pseudo samples), then training until
# ~70 s before the budget ends (--max-seconds counts the pool's rendering; checkpoint, export and the
# split fit in the margin)
LEFT=$((BUDGET - (SECONDS - START) - 70))
rc=0
python3 -m gan2shape train-gan --world "$WORLD" --out-dir "$WORK" --pool 24000 --steps "$STEPS" --r1 0.5 \
    --max-seconds "$LEFT" --sample-every 2000 --checkpoint-every 2000 --export "$OUT/${PREFIX}_gan.pt" || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || exit "$rc"
(cd "$WORK" && tar czf "$OUT/gan_logs.tgz" samples_*.png losses.png log.jsonl status.json $(ls segmenter_history.json 2>/dev/null))
split -b 15M "$WORK/checkpoint.pt" "$OUT/ck.part."
cat "$WORK/status.json"
tail -3 "$WORK/log.jsonl"
echo "call seconds: $((SECONDS - START))"
