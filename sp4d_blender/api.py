"""Generate Rig as plain functions, for scripts, batch jobs and tests (blocking)."""

from __future__ import annotations

import re
from pathlib import Path

import bpy

from . import session
from .build import build_rig
from .capture import write_job
from .client import BackendProcess, RigJob
from .prefs import cache_dir, get_prefs, job_settings


class RigError(RuntimeError):
    """A failed Generate Rig, with the backend's stable error code."""

    def __init__(self, code: str, message: str):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


def job_dir_for(obj: bpy.types.Object, root: Path | None = None) -> Path:
    """A stable job folder per blend file and object, so re-runs reuse finished stages."""
    blend = Path(bpy.data.filepath).stem if bpy.data.filepath else "untitled"
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{blend}-{obj.name}")
    return (root or cache_dir()) / "jobs" / safe


def start_job(obj: bpy.types.Object, job_dir: str | Path | None = None, settings: dict | None = None,
              backend: BackendProcess | None = None) -> RigJob:
    """Export ``obj`` into its job folder and start the backend job (non-blocking)."""
    job = write_job(obj, job_dir or job_dir_for(obj), settings or job_settings())
    backend = backend or session.get_backend(get_prefs().backend_python or None)
    rj = RigJob(backend, job)
    rj.start()
    return rj


def generate_rig(obj: bpy.types.Object, *, job_dir: str | Path | None = None, settings: dict | None = None,
                 backend: BackendProcess | None = None, timeout: float | None = None,
                 on_event=None) -> bpy.types.Object:
    """Rig ``obj`` and return its new armature; raises RigError and leaves the scene unchanged
    when the backend fails."""
    rj = start_job(obj, job_dir, settings, backend)
    rj.wait(timeout, on_event)
    if rj.state != "done":
        err = rj.error or {"code": "internal", "message": "the job did not finish"}
        raise RigError(err["code"], err["message"])
    return build_rig(obj, rj.job_dir)
