#!/usr/bin/env bash
# Run the test suite (creates .venv and installs requirements on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# tests/test_webapp_browser.py drives Debian's chromium through Playwright (never `playwright install`)
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[test] installing Debian's chromium for the browser test (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
      >/tmp/nto3d_chromium_apt.log 2>&1 \
      || echo "[test] apt-get could not install chromium (see /tmp/nto3d_chromium_apt.log): the browser test will skip"
  else
    echo "[test] chromium not found and apt-get is not usable here (needs root): the browser test will skip"
  fi
fi
exec .venv/bin/python -m pytest -q tests "$@"
