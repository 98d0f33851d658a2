#!/usr/bin/env bash
# Create the local environments the demo and the tests need (idempotent, safe to re-run).
#   .venv              backend: CPU torch 2.13.0 + the backend package, test tools and Ray (the batch's tests)
#   .wheelhouse        wheels of the backend and its dependencies (CPU torch): the Set Up Backend test installs
#                      from this folder alone, like an artist's offline install (tests/blender/test_setup.py)
#   .venv-blender-4.2  headless Blender (bpy 4.2.23 LTS, the manifest's minimum) for the add-on tests
#   .venv-blender-4.5  headless Blender (bpy 4.5.15 LTS) for the add-on tests and the demo
#   .venv-blender-5.0  headless Blender (bpy 5.0.1)
# Usage: scripts/setup_env.sh [backend] [blender-4.2] [blender-4.5] [blender-5.0]   (no argument: all four)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want=("$@")
[ ${#want[@]} -eq 0 ] && want=(backend blender-4.2 blender-4.5 blender-5.0)

# bpy needs a few X/GL client libraries even headless; install them on a bare Debian.
ensure_blender_libs() {
  local missing=() have
  have=$(ldconfig -p 2>/dev/null || true)  # read once: 'ldconfig | grep -q' trips pipefail (SIGPIPE)
  for lib in libX11.so.6 libXrender.so.1 libXfixes.so.3 libXi.so.6 libxkbcommon.so.0 libSM.so.6 \
             libICE.so.6 libXext.so.6 libGL.so.1 libEGL.so.1; do
    [[ $have == *"$lib"* ]] || missing+=("$lib")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing system libraries for bpy (missing: ${missing[*]})"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
          libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libsm6 libice6 libxext6 libgl1 libegl1 >/dev/null; } \
        || echo "setup: could not install them; Blender tests may fail to import bpy" >&2
    else
      echo "setup: please install: libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libsm6 libice6 libxext6 libgl1 libegl1" >&2
    fi
  fi
}

make_venv() {  # name, stamp content, pip args...
  local dir=$1 stamp=$2; shift 2
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then return 0; fi
  echo "setup: creating $dir"
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@"
  echo "$stamp" > "$dir/.stamp"
}

for w in "${want[@]}"; do
  case $w in
    backend)
      stamp="torch==2.13.0 $(sha1sum pyproject.toml | cut -c1-12)"
      if [ ! -f .venv/.stamp ] || [ "$(cat .venv/.stamp)" != "$stamp" ]; then
        make_venv .venv "partial" torch==2.13.0
        .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,ray]"
        echo "$stamp" > .venv/.stamp
      fi
      if [ ! -f .wheelhouse/.stamp ] || [ "$(cat .wheelhouse/.stamp)" != "$stamp" ]; then
        echo "setup: filling .wheelhouse"
        rm -rf .wheelhouse && mkdir -p .wheelhouse
        # the same torch as .venv's, from the same sources (pip's cache makes it a copy), and setuptools to build with
        .venv/bin/python -m pip download -q --disable-pip-version-check -d .wheelhouse torch==2.13.0 "setuptools>=61" .
        echo "$stamp" > .wheelhouse/.stamp
      fi ;;
    blender-4.2) ensure_blender_libs; make_venv .venv-blender-4.2 "bpy==4.2.23" bpy==4.2.23 "numpy<2" pytest ;;
    blender-4.5) ensure_blender_libs; make_venv .venv-blender-4.5 "bpy==4.5.15" bpy==4.5.15 "numpy<2" pytest ;;
    blender-5.0) ensure_blender_libs; make_venv .venv-blender-5.0 "bpy==5.0.1" bpy==5.0.1 "numpy<2" pytest ;;
    *) echo "unknown environment $w" >&2; exit 2 ;;
  esac
done
