#!/usr/bin/env bash
# Issue 7's DTU-size row: the `occluded` preset at 49 views 1600x1200, click -> target mesh, the fast
# settings beside the issue-3 settings (the baseline), two network seeds each, one run per GPU so that
# one call compares them; then a table.
# Usage: bash bench/gpu_dtu_size.sh            (4 GPUs: GPUS="0 1 2 3")
#        GPUS=0 RUNS=fast_s0 bash bench/gpu_dtu_size.sh     (one GPU: the kernels first, then one run)
#   fast  = confs/bench_fast.conf: the issue-3 settings + GrabCut in 16 threads + round projections at 1/8
#   base  = the issue-3 settings as measured at 800x600 (confs/bench_lift.conf), GrabCut in one thread,
#           round projections at 1/4
#   while the scene is generated, the last GPU runs the hash-grid kernels' CUDA tests and the
#   bench/hashgrid.py table (KERNELS=0 skips them); STEP=1 also times one training step of the default
#   conf on the PyTorch hash grid (the starting point) against the fast settings on the Triton grid (full
#   scene, 600 iterations).
# Logs and JSON in ${OUT:-exp/bench_out}.
set -uo pipefail
OUT=${OUT:-exp/bench_out}; mkdir -p "$OUT"
source bench/device_env.sh                # the carried wheels (carry [".whl"])
PY=${PY:-python3}
LIMIT=${LIMIT:-560}                      # seconds for the whole script (the device allows 600 a call)
read -r -a G <<< "${GPUS:-0 1 2 3}"
T0=$(date +%s)
CASE=occluded_49v_1600x1200_s0
SCENE=(--preset occluded --views 49 --width 1600 --height 1200)
LAST=${G[${#G[@]}-1]}

if [ "${KERNELS:-1}" = 1 ]; then
  (CUDA_VISIBLE_DEVICES=$LAST timeout 200 $PY -m pytest -q -p no:cacheprovider tests/test_hashgrid_triton.py -k cuda \
     > "$OUT/hashgrid.log" 2>&1
   CUDA_VISIBLE_DEVICES=$LAST timeout 200 $PY bench/hashgrid.py --check >> "$OUT/hashgrid.log" 2>&1) &
else
  echo "(kernels skipped: KERNELS=0)" > "$OUT/hashgrid.log"; true &
fi
HASHGRID=$!
[ ${#G[@]} -gt 1 ] || wait $HASHGRID   # one GPU: the kernel timings must not share it with the generation
t=$(date +%s)
$PY scripts/make_synthetic.py --preset occluded --views 49 --width 1600 --height 1200 --out "data/$CASE" \
  > "$OUT/generate.log" 2>&1
echo "[dtu-size] scene generated in $(( $(date +%s) - t )) s (not counted in click -> mesh)"
wait $HASHGRID

left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
run() {  # run GPU TAG ARGS...: one bench/run.py under the time left, logs to $OUT/TAG.*
  local gpu=$1 tag=$2; shift 2
  CUDA_VISIBLE_DEVICES=$gpu timeout "$(left)" $PY bench/run.py "${SCENE[@]}" --exp_root "exp/bench_$tag" \
    "$@" --json "$OUT/$tag.json" > "$OUT/$tag.log" 2>&1
  echo "== $tag (rc $?)"
}
read -r -a TAGS <<< "${RUNS:-fast_s0 base_s0 fast_s1 base_s1}"
[ "${STEP:-0}" = 1 ] && TAGS[${#TAGS[@]}-1]=step
for i in "${!TAGS[@]}"; do
  tag=${TAGS[$i]}; gpu=${G[$(( i % ${#G[@]} ))]}; seed=${tag##*_s}
  case $tag in
    fast_s*) run "$gpu" "$tag" --conf confs/bench_fast.conf --override "general.seed = $seed" & ;;
    base_s*) run "$gpu" "$tag" --conf confs/bench_lift.conf --override "nto3d.grabcut.workers = 1" --override "general.seed = $seed" & ;;
    step) run "$gpu" step --full_scene --override "train.max_iters = 600" --override "model.hash_grid.backend = torch" \
            --compare "model.hash_grid.backend = triton" --compare "model.renderer.n_samples = 32" \
            --compare "model.renderer.n_importance = 32" --compare "model.renderer.up_sample_steps = 2" & ;;
    *) echo "unknown run $tag (fast_sN, base_sN, step)"; exit 2 ;;
  esac
  [ ${#G[@]} -gt 1 ] || wait   # one GPU: one run at a time
done
wait
echo "---- hashgrid"; grep -v "^\s*$" "$OUT/hashgrid.log" | tail -14
for tag in "${TAGS[@]}"; do
  echo "---- $tag"; grep "^| \(base\|compare\) \|lifted masks\|stages s\|speed-up" "$OUT/$tag.log"
done
