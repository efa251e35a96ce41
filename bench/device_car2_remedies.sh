#!/usr/bin/env bash
# Two remedies on the car2 truth rungs (the rung where untrained V and L bend the depth), on one H200 in
# ≤ LIMIT seconds (default 230): `truth_predicted` with a 10× smaller step-3 depth learning rate
# (--depth-lr-step3 1e-5) and `truth_warmup` with a 400-iteration V/L warm-up, each on car2 images
# 0..N-1 (default 6), all runs at once (--jobs N), `--mode fast`, one stage of 100/100/100 as the truth
# rungs. Writes $OUT/remedies.tgz (every finished run's metrics.json / log.json, the logs).
set -uo pipefail
if [ -f .devcarry/activate.sh ]; then source .devcarry/activate.sh; fi
LIMIT=${LIMIT:-230}
N=${N:-6}
L=/tmp/rem
mkdir -p "$L"
common=(--family car2 --n "$N" --gan models/synthetic_v2_gan.pt --view-mvn models/synthetic_v2_view_mvn.pth
        --light-mvn models/synthetic_v2_light_mvn.pth --stage-iters 100,100,100 --invert-steps 50 --jobs "$N"
        --device cuda --mode fast)
timeout "$LIMIT" python3 bench/ladder.py "${common[@]}" --rungs truth_predicted --depth-lr-step3 1e-5 \
    --out "$L/car2_depth_lr_1e-5" > "$L/car2_depth_lr_1e-5.log" 2>&1 &
timeout "$LIMIT" python3 bench/ladder.py "${common[@]}" --rungs truth_warmup --vl-warmup 400 \
    --out "$L/car2_warmup_400" > "$L/car2_warmup_400.log" 2>&1 &
wait
(cd "$L" && tar czf "$OUT/remedies.tgz" --exclude='*.pt' --exclude='*.png' --exclude='*.npy' --exclude='*.pth' \
    --exclude='*.ckpt' .)
tail -n 4 "$L"/*.log
