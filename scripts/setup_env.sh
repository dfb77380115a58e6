#!/usr/bin/env bash
# Create .venv (if missing) and install requirements; re-installs only when they change.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing requirements into .venv (first time: a few minutes)"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt 2>&1 \
    | grep -v -E "is ignored: it is neither a file nor a directory" || true
  .venv/bin/python -c "import torch, cv2, mcubes, trimesh, pyhocon, segment_anything" 
  echo "$want" > "$stamp"
fi
