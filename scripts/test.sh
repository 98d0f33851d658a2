#!/usr/bin/env bash
# The whole test suite: ruff (style, likely bugs), backend tests, then the Blender tests on bpy 4.2 LTS (the
# manifest's minimum), 4.5 LTS and 5.0.
# Each Blender run drives the real backend subprocess from .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export SP4D_BACKEND_PYTHON="$PWD/.venv/bin/python"
status=0
echo "== ruff (style and likely bugs: pyproject.toml [tool.ruff])"
.venv/bin/ruff check . || status=1
.venv/bin/python -m pytest tests/backend "$@" || status=1
for v in 4.2 4.5 5.0; do
  echo "== Blender tests on bpy $v"
  ".venv-blender-$v/bin/python" -m pytest tests/blender "$@" || status=1
done
exit $status
