#!/usr/bin/env bash
# The synthetic world's accuracy benchmark in one device call (≤ 10 min): for each family, the first
# N held-out test images are segmented (synthetic segmenter), inverted into W (committed GAN),
# turned into ellipsoid / smoothed-box / confidence priors, and reconstructed by GAN2Shape (synface-
# like schedule, METHOD §8.1) with the ellipsoid and with the smoothed-box prior, JOBS runs at a time
# on one GPU. The same stage CLIs as the Snakemake DAG; results are packed into $OUT/bench.tgz and
# tables/figures are made afterwards on any machine (`gan2shape evaluate`, `figures`).
# Env overrides (for a CPU dry run): N, FIRST, RUNS, JOBS, DEVICE, INV_STEPS, STAGE_ITERS, PRIOR_ITERS, COLLECT, NP, DEADLINE;
# PREP=0 reuses segment/invert/prior outputs already in $W (or unpacks PREP_TGZ, the prep.tgz of an
# earlier call, there); PRIORS / FAMILIES choose the runs;
# EXTRA holds further reconstruct flags (ablations, e.g. EXTRA="--perceptual none" overrides the default);
# VARIANTS="tag:flags;tag2:flags2" runs each prior once per variant into g2s/<prior>_<tag>/ (every run
# gets --scene, so VARIANTS="oracle:--projection oracle" works); BATCH=1 trains each family/prior's N images
# as N independent models in one process (`reconstruct --independent`, the batched trainer).
set -euo pipefail
N=${N:-16}; JOBS=${JOBS:-14}; DEVICE=${DEVICE:-cuda}; INV_STEPS=${INV_STEPS:-1000}
STAGE_ITERS=${STAGE_ITERS:-500,500,200}; PRIOR_ITERS=${PRIOR_ITERS:-1000}; COLLECT=${COLLECT:-100}; NP=${NP:-16}
DEADLINE=${DEADLINE:-560}
FIRST=${FIRST:-0}; RUNS=${RUNS:-$N}   # reconstruct images FIRST+1 .. FIRST+RUNS of the prepared N
PREP=${PREP:-1}; PRIORS=${PRIORS:-ellipsoid smoothed_box}; FAMILIES=${FAMILIES:-face box}           # seconds after start by which the reconstructions must have finished
OUT=${OUT:-bench_out}; W=${W:-/tmp/bench}
GAN=models/synthetic_gan.pt; SEG=models/synthetic_segmenter.pt
if [ "$DEVICE" = cuda ] && [ -f .devcarry/activate.sh ]; then source .devcarry/activate.sh; fi
G2S="python3 -m gan2shape"
export OMP_NUM_THREADS=1
START=$SECONDS
mkdir -p "$OUT" "$W"
if [ "$PREP" = 1 ]; then
for fam in face box; do
  D=data/synthetic/test/$fam; F=$W/$fam
  mkdir -p "$F"
  head -n "$N" "$D/list.txt" > "$F/list.txt"
  mapfile -t names < "$F/list.txt"
  imgs=(); masks=()
  for n in "${names[@]}"; do imgs+=("$D/$n.png"); masks+=("$F/seg/${n}_mask.png"); done
  $G2S segment --checkpoint "$SEG" --images "${imgs[@]}" --out-dir "$F/seg" --parser-size 128 --device "$DEVICE"
  $G2S invert --gan "$GAN" --images "${imgs[@]}" --masks "${masks[@]}" --out-dir "$F/inv" --steps "$INV_STEPS" \
      --device "$DEVICE"
  for n in "${names[@]}"; do
    echo "prior --name ellipsoid --category synthetic --mask $F/seg/${n}_mask.png --image-size 64 --out $F/prior/ellipsoid/$n.npy"
    echo "prior --name smoothed_box --mask $F/seg/${n}_mask.png --image-size 64 --out $F/prior/smoothed_box/$n.npy"
    echo "prior --name smoothed_confidence --confidence $F/seg/${n}_conf.npy --image-size 64 --out $F/prior/confidence/$n.npy"
  done
done > "$W/prior_jobs.txt"
xargs -P 16 -L 1 $G2S < "$W/prior_jobs.txt"
# the prepared inputs travel to later calls (PREP=0 PREP_TGZ=<this file>, carried in the working tree)
(cd "$W" && tar czf "$OUT/prep.tgz" face/list.txt box/list.txt face/inv box/inv face/prior box/prior)
elif [ -n "${PREP_TGZ:-}" ]; then
  tar xzf "$PREP_TGZ" -C "$W"
fi
echo "prepared in $((SECONDS - START)) s"
IFS=';' read -r -a VARS <<< "${VARIANTS:-:}"
for var in "${VARS[@]}"; do
tag=${var%%:*}; vflags=${var#*:}
for prior in $PRIORS; do
  for fam in $FAMILIES; do
    D=data/synthetic/test/$fam; F=$W/$fam
    if [ "${BATCH:-0}" = 1 ]; then   # one process per family/prior: K independent models as one batch
      mapfile -t ns < <(sed -n "$((FIRST + 1)),$((FIRST + RUNS))p" "$F/list.txt")
      pre() { local a=(); for n in "${ns[@]}"; do a+=("$1$n$2"); done; echo "${a[*]}"; }
      echo "reconstruct --independent --preset synface --crop 0 --image-size 64 --np $NP --collect-iters $COLLECT \
--stage-iters $STAGE_ITERS --prior-iters $PRIOR_ITERS --perceptual discriminator --raster-bin-size 16 \
--raster-max-faces-per-bin 2000 --gan $GAN --view-mvn models/synthetic_view_mvn.pth \
--light-mvn models/synthetic_light_mvn.pth --image $(pre $D/ .png) --latent $(pre $F/inv/ .pt) \
--prior $(pre $F/prior/$prior/ .npy) --gt-depth $(pre $D/ _depth.png) --gt-encoding synthetic \
--scene $(pre $D/ .json) --device $DEVICE --log-every 100 ${EXTRA:-} $vflags --out $F/g2s/$prior${tag:+_$tag}"
      continue
    fi
    while read -r n; do
      echo "reconstruct --preset synface --crop 0 --image-size 64 --np $NP --collect-iters $COLLECT \
--stage-iters $STAGE_ITERS --prior-iters $PRIOR_ITERS --perceptual discriminator --raster-bin-size 16 \
--raster-max-faces-per-bin 2000 --gan $GAN --view-mvn models/synthetic_view_mvn.pth \
--light-mvn models/synthetic_light_mvn.pth --image $D/$n.png --latent $F/inv/$n.pt --prior $F/prior/$prior/$n.npy \
--gt-depth ${D}/${n}_depth.png --gt-encoding synthetic --scene $D/$n.json --device $DEVICE --log-every 100 \
${EXTRA:-} $vflags --out $F/g2s/$prior${tag:+_$tag}/$n"
    done < <(sed -n "$((FIRST + 1)),$((FIRST + RUNS))p" "$F/list.txt")
  done
done
done > "$W/g2s_jobs.txt"
LEFT=$((DEADLINE - (SECONDS - START)))
timeout "$LEFT" xargs -P "$JOBS" -L 1 $G2S < "$W/g2s_jobs.txt" > "$W/g2s.log" 2>&1 || echo "reconstruct: stopped (rc $?)"
echo "done in $((SECONDS - START)) s; finished runs: $(ls -d $W/*/g2s/*/*/ 2>/dev/null | wc -l)"
tail -5 "$W/g2s.log"
(cd "$W" && tar czf "$OUT/bench.tgz" --exclude='*/g2s/*.png' --exclude='model.pth' \
   $(ls -d face box g2s.log prior_jobs.txt g2s_jobs.txt 2>/dev/null))
ls -la "$OUT"
