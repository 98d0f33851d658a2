#!/usr/bin/env bash
# Build the extension zip (dist/sp4d_blender-VERSION.zip) with Blender's own extension builder,
# from a fresh checkout: the bpy 4.5 environment is made when missing (scripts/setup_env.sh) and
# dist/ is created. BLENDER_PYTHON: an interpreter with bpy to use instead (e.g. the tests').
set -euo pipefail
cd "$(dirname "$0")/.."
py=${BLENDER_PYTHON:-}
if [ -z "$py" ]; then
  bash scripts/setup_env.sh blender-4.5
  py=.venv-blender-4.5/bin/python
fi
cli=$("$py" -c 'import bpy, pathlib; print(pathlib.Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core/bl_pkg/cli/blender_ext.py")')
out=${1:-dist}
mkdir -p "$out"
"$py" "$cli" build --source-dir . --output-dir "$out"
