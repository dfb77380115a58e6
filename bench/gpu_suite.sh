#!/usr/bin/env bash
# One device call of the lifting suite (bench/lifting_suite.py): installs the carried wheels (.whl/, for the
# device's Python), logs GPU use and load, packs every finished run's JSON and log into $OUT/partial.tgz
# every 30 s (a call cut short still brings them back), and the suite's --copy_to folder (runs, logs,
# contact sheets, summary) into $OUT/$TAG.tgz at the end.
# Usage: TAG=suite9a bash bench/gpu_suite.sh --scenes thin border --seeds 3 --parallel 5 --threads 2 \
#            --target_iters 0 --data_root gpu_data --deadline 540 [more lifting_suite.py arguments]
set -uo pipefail
TAG=${TAG:-suite}; OUT=${OUT:-exp/bench_out}; RES=/tmp/res_$TAG
mkdir -p "$OUT" "$RES"
source bench/device_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$RES/gpu.txt" 2>&1
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 10 > "$RES/gpu_util.csv" 2>&1 &
MON=$!
pack() {
  (cd exp && find "$TAG" \( -name run.json -o -name run.log \) -print0 | tar czf "$OUT/.partial.tgz" --null -T -) \
    && mv "$OUT/.partial.tgz" "$OUT/partial.tgz"
}
(while sleep 30; do pack 2>/dev/null; done) &
PACKER=$!
python3 bench/lifting_suite.py --exp_root "exp/$TAG" --copy_to "$RES/$TAG" "$@" > "$RES/$TAG.log" 2>&1
RC=$?
kill "$PACKER" "$MON" 2>/dev/null
grep -v "^\[suite\] start" "$RES/$TAG.log" | tail -45
tail -3 "$RES/gpu_util.csv"
tar czf "$OUT/$TAG.tgz" -C "$RES" . && rm -f "$OUT/partial.tgz"
exit $RC
