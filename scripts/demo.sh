#!/usr/bin/env bash
# The built-in demo: generate a synthetic scene, reconstruct it, extract the mesh, print Chamfer.
# GPU: the full synthetic.conf defaults (49 views 800x600). CPU: a small scene and conf (minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python
PRESET=${PRESET:-easy}
FRAMING=()   # make_synthetic.py's --zoom / --look_at_height; none: the preset's framing
if $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  CONF=${CONF:-confs/synthetic.conf}; VIEWS=${VIEWS:-49}; W=${W:-800}; H=${H:-600}
  CASE=${CASE:-${PRESET}_${VIEWS}v_${W}x${H}}
else
  # fewer views, longer training; the cameras zoomed onto the target (ZOOM, aimed LOOK_AT mm above the
  # table) so that the small images spend their pixels, and the training its rays, on it
  CONF=${CONF:-confs/synthetic_cpu.conf}; VIEWS=${VIEWS:-12}; W=${W:-160}; H=${H:-120}
  ZOOM=${ZOOM:-1.6}; LOOK_AT=${LOOK_AT:-60}
  FRAMING=(--zoom "$ZOOM" --look_at_height "$LOOK_AT")
  CASE=${CASE:-${PRESET}_${VIEWS}v_${W}x${H}_zoom${ZOOM}_at${LOOK_AT}}
  # glibc: keep freed memory for reuse instead of mapping and unmapping every large tensor (page faults
  # otherwise cost a large share of a CPU run's time)
  export MALLOC_MMAP_MAX_=${MALLOC_MMAP_MAX_:-0} MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-68719476736}
  # OpenMP threads that wait asleep, not spinning: a spinning thread starves its partner when another
  # program holds one of the cores
  export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
  echo "[demo] no GPU: small scene (${VIEWS} views ${W}x${H}, zoom ${ZOOM}) and $CONF"
fi
if [ ! -f "data/$CASE/cameras_sphere.npz" ]; then
  $PY scripts/make_synthetic.py --preset "$PRESET" --out "data/$CASE" --views "$VIEWS" --width "$W" --height "$H" \
    "${FRAMING[@]}"
fi
# Segmenter: SAM when its checkpoint is here or can be fetched (SAM_MODEL, default vit_b: 358 MB),
# otherwise the weight-free GrabCut fallback. SAM_DOWNLOAD=0 never tries the network.
SAM_MODEL=${SAM_MODEL:-vit_b}
declare -A SAM_FILE=([vit_h]=sam_vit_h_4b8939.pth [vit_l]=sam_vit_l_0b3195.pth [vit_b]=sam_vit_b_01ec64.pth [vit_t]=mobile_sam.pt)
CKPT=checkpoints/${SAM_FILE[$SAM_MODEL]:?unknown SAM_MODEL $SAM_MODEL (vit_h, vit_l, vit_b, vit_t)}
if [ ! -f "$CKPT" ] && [ "${SAM_DOWNLOAD:-1}" = 1 ] && command -v curl >/dev/null \
   && curl -sfI --max-time 5 https://dl.fbaipublicfiles.com/segment_anything/ >/dev/null 2>&1; then
  bash scripts/download_sam.sh "$SAM_MODEL" checkpoints || rm -f "$CKPT"
fi
SEG=()
if [ -f "$CKPT" ]; then
  echo "[demo] segmenter: SAM $SAM_MODEL ($CKPT)"
  SEG=(--override 'nto3d.segmenter = sam' --override "nto3d.sam.model_type = $SAM_MODEL" --sam_checkpoint "$CKPT")
else
  echo "[demo] segmenter: GrabCut (weight-free fallback; no SAM checkpoint at $CKPT and none could be downloaded)"
fi
$PY train.py --conf "$CONF" --case "$CASE" "${SEG[@]}" "$@"
