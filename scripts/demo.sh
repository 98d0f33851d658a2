#!/usr/bin/env bash
# The demo: rig the bundled sample creature end to end in headless Blender and write
# out/demo/creature_rigged.blend and out/demo/creature_posed.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh backend blender-4.5
export SP4D_BACKEND_PYTHON="$PWD/.venv/bin/python"
.venv-blender-4.5/bin/python scripts/demo.py --out "${1:-out/demo}"
