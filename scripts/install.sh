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
if [ "$dev" = 1 ]; then
  # The real-instrument world's renderer (data/instruments); its one dependency, pyaudio, is for live
  # playback only and needs PortAudio headers to build, so it is left out.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps tinysoundfont==0.3.7
fi

apt_install() {  # a Debian package the tests need: apt-get as root, else through sudo, else a note
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  else
    echo "note: $1 is not installed; $2" >&2
  fi
}

if [ "$dev" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  # The PostgreSQL catalog tests start a throw-away server with Debian's initdb and pg_ctl.
  apt_install postgresql "the PostgreSQL catalog tests will fail"
fi

if [ "$dev" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  # The end-to-end UI tests drive Debian's Chromium through Playwright (no browser download).
  apt_install chromium "the browser tests will be skipped"
fi
if [ "$dev" = 1 ] && [ ! -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ]; then
  # The General MIDI SoundFont the world generator renders with (MIT licence).
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fluid-soundfont-gm >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fluid-soundfont-gm >/dev/null
  else
    echo "note: fluid-soundfont-gm is not installed; the world rendering tests will be skipped" >&2
  fi
fi
echo "MuQ Search installed in $(pwd)/.venv"
