"""``scripts/batch_rig.py --ray``: hand the batch to the backend's Ray driver (backend/batch).

Blender's side only: writes OUT/batch_request.json (the files, pictures, objects, settings and how a
worker starts Blender) and runs ``python -m backend.batch`` with the backend's interpreter, whose progress
lines reach this terminal. Blender never imports Ray or torch; the workers open the .blend files
themselves, so the files must be saved and on storage every node sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .client import BACKEND_ROOT, NO_BACKEND


def blender_command() -> dict:
    """How a worker starts Blender like this one: the blender executable, or (bpy from PyPI) this
    Python interpreter."""
    import bpy

    binary = bpy.app.binary_path
    return {"binary": binary} if binary and Path(binary).name.lower().startswith("blender") else {
        "python": sys.executable}


def request_of(args) -> dict:
    """The batch request for batch_rig.py's arguments (the same settings as its plain run)."""
    import bpy

    files = [str(Path(f).resolve()) for f in args.files]
    images = [str(Path(i).resolve()) for i in getattr(args, "images", None) or []]
    if not files and not images:
        if not bpy.data.filepath:
            raise SystemExit("--ray needs saved .blend files: the workers open them (save this file or pass --files)")
        files = [bpy.data.filepath]
    settings = {"part_source": args.part_source, "frames": 4, "max_influences": args.max_influences,
                "device": args.device, "compile": args.compile, "low_vram": args.low_vram,
                "vram": getattr(args, "vram", "auto"), "animate_still": getattr(args, "animate_still", None) or None,
                "motion_bucket": getattr(args, "motion_bucket", None),
                "oracle_mesh": str(Path(args.oracle_mesh).resolve()) if getattr(args, "oracle_mesh", None) else None}
    return {"out": str(Path(args.out).resolve()), "files": files, "images": images, "objects": args.objects,
            "export": args.export,
            "settings": {k: v for k, v in settings.items() if v is not None}, "timeout": args.timeout,
            "address": None if args.ray == "local" else args.ray, "blender": blender_command()}


def run_on_ray(args) -> int:
    """Write the request, run the driver, return its exit code (0 all rigged, 1 some failed,
    2 no start, 3 none rigged)."""
    from .jobfolder import layout

    req = request_of(args)
    path = Path(req["out"]) / "batch_request.json"
    layout.write_json_atomic(path, req)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(BACKEND_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    from .session import backend_python

    python = backend_python()
    if not python:
        print(f"batch on Ray: {NO_BACKEND}", flush=True)
        return 2
    cmd = [python, "-m", "backend.batch", str(path)]
    print(f"batch on Ray: {' '.join(cmd)}", flush=True)
    return subprocess.call(cmd, cwd=str(BACKEND_ROOT), env=env)
