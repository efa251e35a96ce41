#!/usr/bin/env bash
# One device call (≤ 10 min): train the synthetic world's segmenter and StyleGAN2.
# Usage on the device:  bash bench/device_train_gan.sh [resume]
# With "resume", the training checkpoint parts in ./resume/ck.part.* (from an earlier call) are
# joined and training continues. Everything to keep goes to $OUT (≤ 8 files, ≤ 16 MiB each).
set -euo pipefail
source .devcarry/activate.sh
START=$SECONDS
mkdir -p /tmp/gan
if [ "${1:-}" = "resume" ]; then
  cat resume/ck.part.* > /tmp/gan/checkpoint.pt
else
  # the segmenter: 2×1500 renders with ground-truth masks, seconds on a GPU
  python3 -m gan2shape synthesize --family face box --n 1500 --seed 1000 --out /tmp/segdata --device cuda
  python3 -m gan2shape train-segmenter --data /tmp/segdata/face /tmp/segdata/box --epochs 15 --device cuda \
      --out "$OUT/segmenter.pt" --history /tmp/gan/segmenter_history.json
fi
# the GAN: a pool of 24k renders, then training until ~40 s before the command's 600 s limit
LEFT=$((540 - (SECONDS - START) - 70))
python3 -m gan2shape train-gan --out-dir /tmp/gan --pool 24000 --steps 200000 --r1 0.5 \
    --max-seconds "$LEFT" --sample-every 2000 --checkpoint-every 2000 --export "$OUT/synthetic_gan.pt" || [ $? -eq 3 ]
(cd /tmp/gan && tar czf "$OUT/gan_logs.tgz" samples_*.png losses.png log.jsonl status.json $(ls segmenter_history.json 2>/dev/null))
split -b 15M /tmp/gan/checkpoint.pt "$OUT/ck.part."
cat /tmp/gan/status.json
tail -3 /tmp/gan/log.jsonl
