#!/usr/bin/env bash
# The built-in demo: generate a synthetic scene, reconstruct it, extract the mesh, print Chamfer.
# GPU: the full synthetic.conf defaults (49 views 800x600). CPU: a small scene and conf (minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python
PRESET=${PRESET:-easy}
if $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  CONF=${CONF:-confs/synthetic.conf}; VIEWS=${VIEWS:-49}; W=${W:-800}; H=${H:-600}
else
  CONF=${CONF:-confs/synthetic_cpu.conf}; VIEWS=${VIEWS:-24}; W=${W:-160}; H=${H:-120}
  echo "[demo] no GPU: small scene (${VIEWS} views ${W}x${H}) and $CONF"
fi
CASE=${CASE:-${PRESET}_${VIEWS}v_${W}x${H}}
if [ ! -f "data/$CASE/cameras_sphere.npz" ]; then
  $PY scripts/make_synthetic.py --preset "$PRESET" --out "data/$CASE" --views "$VIEWS" --width "$W" --height "$H"
fi
$PY train.py --conf "$CONF" --case "$CASE" "$@"
