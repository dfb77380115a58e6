#!/usr/bin/env bash
# NTO3D on DTU scan 55 with SAM ViT-H: one click (anno_box.json, view 0) -> target mesh.
# Edit the two locations below (defaults: the original release's layout).
set -euo pipefail
DATA_DIR=${DATA_DIR:-datasets/dtu/dtu_scan55}          # image/, mask/ (optional), cameras_sphere.npz, anno_box.json
SAM_CHECKPOINT=${SAM_CHECKPOINT:-sam_vit_h_4b8939.pth}  # bash scripts/download_sam.sh vit_h
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup_env.sh
if [ ! -f "$SAM_CHECKPOINT" ]; then
  echo "SAM checkpoint not found: $SAM_CHECKPOINT (download: bash scripts/download_sam.sh vit_h; then SAM_CHECKPOINT=checkpoints/sam_vit_h_4b8939.pth)" >&2
  exit 1
fi
.venv/bin/python train.py --conf confs/dtu.conf --case dtu_scan55 \
  --override "dataset.data_dir = \"$DATA_DIR\"" --sam_checkpoint "$SAM_CHECKPOINT" "$@"
