#!/usr/bin/env bash
# The CPU demo's joint pre-train, made on one GPU in device calls of < 10 minutes (DESIGN "The demo").
#   bash bench/device_demo_pretrain.sh pretrain
#     200 samples of world v2's GAN, the first one's mask and ellipsoid prior (what `snakemake joint_pretrain`
#     makes), then `gan2shape pretrain --preset synface_pretrain --net-width $WIDTH` (default 0.25: 1/16 of
#     the parameters, 5 MiB in float16, small enough to commit), NUM_STAGES (default 1) of its 8 stages,
#     STREAMS (default 1) streams, fast mode, stopped after at most PRE_MAX s (default 420; then
#     --partial-out holds the nets at the stop and pretrain_log.json says how far it got).
#     $OUT: pretrain.pth (float16), pretrain.sha256, pretrain_log.json, pretrain.log, config.
#   bash bench/device_demo_pretrain.sh protocol PRETRAIN
#     the synface protocol from that file on the first N (default 8) face2 test images with their committed
#     latents: `bench/ladder.py --rungs joint_shared` (500/500/200, 4 images per model, fast), whose
#     start_side is the pre-train alone. The same 8 images from the width-1 pre-train: 0.70 SIDE
#     (docs/RESULTS.md "The synface protocol on 32 images"). $OUT: ladder.json, ladder.csv, the runs' logs.
set -uo pipefail
if [ -f .devcarry/activate.sh ]; then source .devcarry/activate.sh; fi
part=${1:?usage: device_demo_pretrain.sh pretrain | protocol PRETRAIN}
OUT=${OUT:?set OUT (the device sets it)}
WIDTH=${WIDTH:-0.25}
NUM_STAGES=${NUM_STAGES:-1}
STREAMS=${STREAMS:-1}
PRE_MAX=${PRE_MAX:-420}
N=${N:-8}
JOBS=${JOBS:-2}
DEVICE=${DEVICE:-cuda}
MODE=${MODE:-fast}
GAN=${GAN:-models/synthetic_v2_gan.pt}
MVN=(--view-mvn models/synthetic_v2_view_mvn.pth --light-mvn models/synthetic_v2_light_mvn.pth)
G2S="python3 -m gan2shape"
W=${WORK:-/tmp/demo_pretrain}
mkdir -p "$W"
stamp() { echo "[$SECONDS s] $*"; }
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

case "$part" in
  pretrain)
    set -e
    $G2S sample-gan --gan "$GAN" --n "${IMAGES:-200}" --seed 0 --device "$DEVICE" --out "$W/samples"
    $G2S segment --checkpoint models/synthetic_v2_segmenter.pt --images "$W/samples/000000.png" --image-size 64 \
        --parser-size 128 --confidence softmax --device "$DEVICE" --out-dir "$W/segment"
    $G2S prior --name ellipsoid --category synthetic --mask "$W/segment/000000_mask.png" --image-size 64 \
        --out "$W/prior0.npy"
    stamp "samples and first prior"
    set +e
    # status 3: stopped by --stop-after-seconds (the partial nets are the result)
    $G2S pretrain --list "$W/samples/list.txt" --first-prior "$W/prior0.npy" --preset synface_pretrain \
        --num-stages "$NUM_STAGES" --streams "$STREAMS" --image-size 64 --crop 0 --net-width "$WIDTH" \
        --gan "$GAN" "${MVN[@]}" ${EXTRA:-} --perceptual discriminator --seed 0 --device "$DEVICE" --mode "$MODE" \
        --half --out "$W/pretrain_full.pth" --partial-out "$W/pretrain_partial.pth" --log "$OUT/pretrain_log.json" \
        --log-every 100 --checkpoint "$W/pretrain.ckpt" --checkpoint-every 100000 \
        --stop-after-seconds "$PRE_MAX" > "$OUT/pretrain.log" 2>&1
    rc=$?
    [ $rc = 0 ] || [ $rc = 3 ] || { tail -n 20 "$OUT/pretrain.log"; exit $rc; }
    if [ -f "$W/pretrain_full.pth" ]; then src=pretrain_full; else src=pretrain_partial; fi
    cp "$W/$src.pth" "$OUT/pretrain.pth"
    [ -f "$W/$src.config.json" ] && cp "$W/$src.config.json" "$OUT/pretrain.config.json"
    (cd "$OUT" && sha256sum pretrain.pth > pretrain.sha256 && ls -l pretrain.pth)
    stamp "pre-train ($src, exit status $rc): $(tail -n 1 "$OUT/pretrain.log")"
    ;;
  protocol)
    pre=${2:?usage: device_demo_pretrain.sh protocol PRETRAIN}
    [ -f "$pre" ] || { echo "device_demo_pretrain.sh: no pretrain file $pre" >&2; exit 2; }
    mkdir -p "$W/latents"
    cp results/synthetic_v2/mode_parity/face2/latents/*.pt "$W/latents/"
    J=(--family face2 --n "$N" --gan "$GAN" "${MVN[@]}" --latents "$W/latents" --stage-iters "${STAGE_ITERS:-500,500,200}"
       --device "$DEVICE" --mode "$MODE" --pretrain "$pre" --net-width "$WIDTH" --rungs joint_shared --group 4
       ${PROTOCOL_EXTRA:-})
    timeout "${PROTOCOL_MAX:-480}" python3 bench/ladder.py "${J[@]}" --jobs "$JOBS" --out "$W/protocol" \
        > "$OUT/protocol.log" 2>&1
    python3 bench/ladder.py "${J[@]}" --out "$W/protocol" --summarize-only >> "$OUT/protocol.log" 2>&1
    for f in ladder.json ladder.csv; do [ -f "$W/protocol/$f" ] && cp "$W/protocol/$f" "$OUT/"; done
    (cd "$W/protocol" && tar czf "$OUT/protocol_logs.tgz" logs runs --exclude='*.ckpt' --exclude='*.npy' 2>/dev/null)
    tail -n 5 "$OUT/protocol.log"
    ;;
  *) echo "device_demo_pretrain.sh: part must be pretrain or protocol, got '$part'" >&2; exit 2 ;;
esac
