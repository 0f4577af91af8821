#!/usr/bin/env bash
# Set up MuQ Search in ./.venv. `--dev` adds the test tools and Debian's Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1
python=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
if [ "$dev" = 1 ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
else
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .

if [ "$dev" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  # The end-to-end UI tests drive Debian's Chromium through Playwright (no browser download).
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium is not installed; the browser tests will be skipped" >&2
  fi
fi
echo "MuQ Search installed in $(pwd)/.venv"
