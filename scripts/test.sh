#!/usr/bin/env bash
# Run the test suite (creates .venv and installs requirements on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest -q tests "$@"
