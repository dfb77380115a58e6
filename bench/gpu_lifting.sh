#!/usr/bin/env bash
# GPU batch for the lifting rows of bench/RESULTS.md: NTO3D runs with GrabCut on synthetic presets
# (and ../shared's dtu_scan65 when copied to gpu_data/dtu_scan65).
# Usage: bash bench/gpu_lifting.sh PRESET... [scan65] [-- more bench/run.py arguments for every run]
# Logs and JSON go to ${OUT:-exp/bench_out}; with KEEP_MASKS=1 also each run's masks/ (rounds, reports,
# contact sheets) as one $OUT/PRESET.masks.tgz (the device returns only a few files a call).
set -uo pipefail
OUT=${OUT:-exp/bench_out}; mkdir -p "$OUT"
PY=${PY:-python3}
source bench/device_env.sh                # the carried wheels (carry [".whl"])
WHAT=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do WHAT+=("$1"); shift; done; [ $# -gt 0 ] && shift
DATA=(); [ -d gpu_data ] && DATA=(--data_root gpu_data)   # scenes pre-generated here save ~36 s each
for what in "${WHAT[@]}"; do
  if [ "$what" = scan65 ]; then
    $PY bench/run.py --scene gpu_data/dtu_scan65 --conf confs/dtu_lift.conf \
      ${EXTRA:+--compare "$EXTRA"} "$@" --json "$OUT/$what.json" > "$OUT/$what.log" 2>&1
  else
    $PY bench/run.py --preset "$what" --views 49 --width 800 --height 600 "${DATA[@]}" --conf confs/bench_lift.conf \
      ${EXTRA:+--compare "$EXTRA"} "$@" --json "$OUT/$what.json" > "$OUT/$what.log" 2>&1
  fi
  echo "== $what (rc $?)"; grep -v "it/s\]\|%|\|^\[" "$OUT/$what.log" | tail -25
  case_dir=exp/bench/$([ "$what" = scan65 ] && echo dtu_scan65 || echo "${what}_49v_800x600_s0")/base
  if [ -n "${KEEP_MASKS:-}" ] && [ -d "$case_dir/masks" ]; then tar czf "$OUT/$what.masks.tgz" -C "$case_dir" masks; fi
done
