#!/usr/bin/env bash
# Joint pre-training for the synthetic world, as the original synface protocol does (METHOD §8.1:
# instance runs start from synface_pretrain.pth, trained jointly on 200 *training* images), in one
# device call: render NT training scenes per family (seed 1; the test set is seed 0), invert them
# into W, pre-train D/A/V/L/E jointly (`gan2shape pretrain`, preset synface_pretrain) and return
# the kept networks in float16, one file per network ($OUT/pretrain_<net>.pth, each < 16 MiB).
# Env: NT, PRE_STAGES (stages of the synface_pretrain schedule), STAGE_ITERS, COLLECT, PRIOR_ITERS, INV_STEPS,
# STREAMS (images trained together, the original's 8 processes), NETS, DEVICE, W, OUT.
set -euo pipefail
NT=${NT:-100}; PRE_STAGES=${PRE_STAGES:-2}; INV_STEPS=${INV_STEPS:-300}; NETS=${NETS:-netV,netL,netEnc}
DEVICE=${DEVICE:-cuda}; W=${W:-/tmp/pre}; OUT=${OUT:-pre_out}; STAGE_ITERS=${STAGE_ITERS:-}
COLLECT=${COLLECT:-1000}; PRIOR_ITERS=${PRIOR_ITERS:-1000}; STREAMS=${STREAMS:-8}
GAN=models/synthetic_gan.pt
if [ "$DEVICE" = cuda ] && [ -f .devcarry/activate.sh ]; then source .devcarry/activate.sh; fi
G2S="python3 -m gan2shape"
START=$SECONDS
mkdir -p "$OUT" "$W"
$G2S synthesize --family face box --n "$NT" --seed 1 --out "$W/train" --device "$DEVICE"
imgs=(); masks=()
for i in $(seq 0 $((NT - 1))); do            # interleave the families: face, box, face, box, ...
  for fam in face box; do
    n=$(sed -n "$((i + 1))p" "$W/train/$fam/list.txt")
    imgs+=("$W/train/$fam/$n.png"); masks+=("$W/train/$fam/${n}_mask.png")
  done
done
$G2S invert --gan "$GAN" --images "${imgs[@]}" --masks "${masks[@]}" --out-dir "$W/inv" --steps "$INV_STEPS" \
    --batch-size 256 --device "$DEVICE"
# the first image's prior seeds netD (METHOD §1.5); ellipsoid, as the original synface pre-training
first=$(basename "${imgs[0]}" .png)
$G2S prior --name ellipsoid --category synthetic --mask "${masks[0]}" --image-size 64 --out "$W/prior0.npy"
{
  echo "${imgs[0]} $W/inv/$first.pt $W/prior0.npy"
  for im in "${imgs[@]:1}"; do echo "$im $W/inv/$(basename "$im" .png).pt"; done
} > "$W/train.txt"
echo "prepared in $((SECONDS - START)) s"
$G2S pretrain --list "$W/train.txt" --preset synface_pretrain --streams "$STREAMS" --crop 0 --image-size 64 --num-stages "$PRE_STAGES" \
    ${STAGE_ITERS:+--stage-iters $STAGE_ITERS} --collect-iters "$COLLECT" --prior-iters "$PRIOR_ITERS" --perceptual discriminator \
    --raster-bin-size 16 --raster-max-faces-per-bin 2000 --gan "$GAN" --view-mvn models/synthetic_view_mvn.pth \
    --light-mvn models/synthetic_light_mvn.pth --nets "$NETS" --half --out "$W/pretrain.pth" \
    --log "$OUT/pretrain_log.json" --device "$DEVICE" --log-every 500
echo "pre-trained in $((SECONDS - START)) s"
python3 - "$W/pretrain.pth" "$OUT" <<'EOF'
import sys, torch
sd = torch.load(sys.argv[1], weights_only=True)
meta = {k: v for k, v in sd.items() if not k.startswith("net")}
for k, v in sd.items():
    if k.startswith("net"):
        torch.save({k: v, **meta}, f"{sys.argv[2]}/pretrain_{k}.pth")
EOF
ls -la "$OUT"
