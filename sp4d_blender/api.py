"""Generate Rig as plain functions, for scripts, batch jobs and tests (blocking)."""

from __future__ import annotations

import re
from pathlib import Path

import bpy

from . import session
from .build import build_rig, import_hull
from .capture import write_clip_job, write_job
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
    _wait(rj, timeout, on_event)
    return build_rig(obj, rj.job_dir)


def _wait(rj: RigJob, timeout: float | None, on_event) -> None:
    rj.wait(timeout, on_event)
    if rj.state != "done":
        err = rj.error or {"code": "internal", "message": "the job did not finish"}
        raise RigError(err["code"], err["message"])


def clip_job_dir(clip: str | Path, root: Path | None = None) -> Path:
    """A stable job folder per clip file."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(clip)).stem)
    return (root or cache_dir()) / "jobs" / f"clip-{safe}"


def start_clip_job(clip: str | Path | None, job_dir: str | Path | None = None, settings: dict | None = None,
                   backend: BackendProcess | None = None, cmd: str = "run") -> RigJob:
    """Start the backend job for a clip without a mesh (non-blocking). ``clip`` None re-runs an
    existing clip job folder; cmd 'rig' re-rigs its generated views without generating them."""
    if clip is None and not (job_dir and (Path(job_dir) / "job.json").is_file()):
        raise ValueError("choose a clip (or an existing clip job folder)")
    job = Path(job_dir or clip_job_dir(clip)).resolve()
    if clip is not None:
        write_clip_job(clip, job, settings or job_settings())
    backend = backend or session.get_backend(get_prefs().backend_python or None)
    rj = RigJob(backend, job, cmd)
    rj.start()
    return rj


def build_clip_rig(job_dir: str | Path, name: str) -> tuple[bpy.types.Object, bpy.types.Object]:
    """Import the job's hull mesh and rig it; on failure nothing stays in the scene."""
    obj = import_hull(job_dir, name)
    try:
        return obj, build_rig(obj, job_dir)
    except Exception:
        me = obj.data
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(me)
        raise


def rig_clip(clip: str | Path | None, *, job_dir: str | Path | None = None, settings: dict | None = None,
             backend: BackendProcess | None = None, timeout: float | None = None, on_event=None,
             cmd: str = "run") -> tuple[bpy.types.Object, bpy.types.Object]:
    """Rig a clip of an object that has no mesh: SP4D views, then the visual hull of their
    silhouettes is rigged. Returns (mesh object, armature); raises RigError and leaves the scene
    unchanged when the backend fails."""
    rj = start_clip_job(clip, job_dir, settings, backend, cmd)
    _wait(rj, timeout, on_event)
    name = Path(str(clip)).stem if clip is not None else Path(rj.job_dir).name
    return build_clip_rig(rj.job_dir, name)
