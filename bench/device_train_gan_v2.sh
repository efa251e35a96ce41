#!/usr/bin/env bash
# One device call (≤ 9 min of work): train world v2's segmenter and StyleGAN2 (docs/world.md).
# Usage on the device:  bash bench/device_train_gan_v2.sh [resume]
# First call: the segmenter (2×1500 held-out-seed v2 renders, seconds) and the GAN from scratch.
# Later calls ("resume"): the checkpoint parts of the previous call, copied into ./resume/ck.part.*,
# are joined and training continues (stream seed = step, so a resumed run sees fresh renders).
# v1 reference: 17,544 steps in 908 s of an H200 over two calls; STEPS (default 18000) is the target,
# so two calls normally finish and a third only if the first two were slow. Exit status 0 when the
# target is reached; the status line says "done": true|false.
# Everything to keep goes to $OUT (≤ 8 files, ≤ 16 MiB each): synthetic_v2_gan.pt, synthetic_v2_segmenter.pt
# (first call), gan_logs.tgz, ck.part.* (the resumable checkpoint, split below 16 MiB).
set -euo pipefail
if [ -f .devcarry/activate.sh ]; then source .devcarry/activate.sh; fi
START=$SECONDS
STEPS=${STEPS:-18000}
BUDGET=${BUDGET:-540}          # seconds of this call's work (≤ 9 min)
mkdir -p /tmp/gan2
if [ "${1:-}" = "resume" ]; then
  cat resume/ck.part.* > /tmp/gan2/checkpoint.pt
else
  python3 -m gan2shape synthesize --family face2 car2 --n 1500 --seed 1000 --out /tmp/segdata2 --device cuda
  python3 -m gan2shape train-segmenter --data /tmp/segdata2/face2 /tmp/segdata2/car2 --epochs 15 --device cuda \
      --out "$OUT/synthetic_v2_segmenter.pt" --history /tmp/gan2/segmenter_history.json
fi
# the GAN: a pool of 24k v2 renders (half of them relit like pseudo samples), then training until
# ~70 s before the budget ends (pool rendering, checkpoint, export and the split fit in that margin)
LEFT=$((BUDGET - (SECONDS - START) - 70))
rc=0
python3 -m gan2shape train-gan --world v2 --out-dir /tmp/gan2 --pool 24000 --steps "$STEPS" --r1 0.5 \
    --max-seconds "$LEFT" --sample-every 2000 --checkpoint-every 2000 --export "$OUT/synthetic_v2_gan.pt" || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || exit "$rc"
(cd /tmp/gan2 && tar czf "$OUT/gan_logs.tgz" samples_*.png losses.png log.jsonl status.json $(ls segmenter_history.json 2>/dev/null))
split -b 15M /tmp/gan2/checkpoint.pt "$OUT/ck.part."
cat /tmp/gan2/status.json
tail -3 /tmp/gan2/log.jsonl
echo "call seconds: $((SECONDS - START))"
