"""Generate Rig as plain functions, for scripts, batch jobs and tests (blocking)."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

import bpy

from . import session
from .build import build_rig, import_hull
from .capture import write_clip_job, write_image_job, write_job
from .client import BackendProcess, RigJob
from .identity import object_id, readable
from .jobfolder import lock
from .jobfolder import settings as jobsettings
from .paths import jobs_root
from .prefs import job_settings


class RigError(RuntimeError):
    """A failed Generate Rig, with the backend's stable error code."""

    def __init__(self, code: str, message: str):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


def job_dir_for(obj: bpy.types.Object, root: Path | None = None) -> Path:
    """The object's own job folder (named by its stable id, identity.object_id), so re-runs reuse
    finished stages and no two objects ever share one: in ``root``/jobs, else in paths.jobs_root
    (beside the saved .blend, or the add-on's user folder; never a temp folder)."""
    jobs = Path(root) / "jobs" if root else jobs_root()
    return jobs / object_id(obj, jobs)


def _owner_id(obj: bpy.types.Object, job: Path) -> str:
    """The object's id, recorded in ``job``'s job.json as the folder's owner."""
    return object_id(obj, job.parent)


@contextmanager
def _job_folder(job: Path):
    """``job`` created and locked while Blender writes it; RigError 'busy' when a job runs there,
    'io_error' when it cannot be written."""
    try:
        job.mkdir(parents=True, exist_ok=True)
        with lock.JobLock(job, "Blender writing the job"):
            yield job
    except lock.Busy as exc:
        raise RigError("busy", str(exc)) from None
    except OSError as exc:
        raise RigError("io_error", f"cannot write the job folder {job}: {exc.strerror or exc}; make it writable "
                       "or choose another cache folder in the SP4D preferences") from None
    except jobsettings.SettingError as exc:
        raise RigError("bad_input", str(exc)) from None


def start_job(obj: bpy.types.Object, job_dir: str | Path | None = None, settings: dict | None = None,
              backend: BackendProcess | None = None) -> RigJob:
    """Export ``obj`` into its job folder and start the backend job (non-blocking). RigError
    'busy' (and nothing written) when a job is running on that folder, 'bad_input' for settings
    the schema does not allow."""
    if obj is None or obj.type != "MESH":
        raise ValueError("select a mesh object to rig")
    job = Path(job_dir).resolve() if job_dir else job_dir_for(obj).resolve()
    with _job_folder(job):
        write_job(obj, job, job_settings() if settings is None else settings, _owner_id(obj, job))
    backend = backend or session.get_backend()
    rj = RigJob(backend, job)
    rj.start()
    return rj


def generate_rig(obj: bpy.types.Object, *, job_dir: str | Path | None = None, settings: dict | None = None,
                 backend: BackendProcess | None = None, timeout: float | None = None,
                 on_event=None) -> bpy.types.Object:
    """Rig ``obj`` and return its new armature (replacing the SP4D rig it had); raises RigError and
    leaves the scene unchanged when the backend fails or its results cannot be built."""
    rj = start_job(obj, job_dir, settings, backend)
    _wait(rj, timeout, on_event)
    return _built(lambda: build_rig(obj, rj.job_dir))


def _built(build):
    """``build()``, its failures (a job folder whose results went missing) as RigError."""
    try:
        return build()
    except (ValueError, KeyError, OSError) as exc:
        raise RigError("bad_input", f"could not build the rig: {exc}") from exc


def _wait(rj: RigJob, timeout: float | None, on_event) -> None:
    rj.wait(timeout, on_event)
    if rj.state != "done":
        err = rj.error or {"code": "internal", "message": "the job did not finish"}
        raise RigError(err["code"], err["message"])


def clip_job_dir(clip: str | Path, root: Path | None = None) -> Path:
    """A stable job folder per clip file: its readable name and a digest of its full path (two
    clips of one name in different folders get different folders)."""
    path = str(Path(bpy.path.abspath(str(clip))).resolve())
    tag = hashlib.sha1(path.encode()).hexdigest()[:12]
    return (Path(root) / "jobs" if root else jobs_root()) / f"clip-{readable(Path(path).stem)}-{tag}"


def start_clip_job(clip: str | Path | None, job_dir: str | Path | None = None, settings: dict | None = None,
                   backend: BackendProcess | None = None, cmd: str = "run") -> RigJob:
    """Start the backend job for a clip without a mesh (non-blocking). ``clip`` None re-runs an
    existing clip job folder; cmd 'rig' re-rigs its generated views without generating them."""
    if clip is None and not (job_dir and (Path(job_dir) / "job.json").is_file()):
        raise ValueError("choose a clip (or an existing clip job folder)")
    return _start_source_job(clip, Path(job_dir or clip_job_dir(clip)).resolve(), write_clip_job, settings, backend,
                             cmd)


def _start_source_job(source, job: Path, write, settings: dict | None, backend: BackendProcess | None,
                      cmd: str) -> RigJob:
    """Write ``job`` for a source without a mesh (a clip or a picture) with ``write(source, job,
    settings)`` under the folder's lock (``source`` None: the existing folder runs again), then
    start the backend job (non-blocking). Rig Clip and Rig Image differ only in ``write``."""
    if source is not None:
        with _job_folder(job):
            write(source, job, job_settings() if settings is None else settings)
    rj = RigJob(backend or session.get_backend(), job, cmd)
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
    return _built(lambda: build_clip_rig(rj.job_dir, name))


def image_job_dir(image, root: Path | None = None) -> Path:
    """A stable job folder per picture: a file by its full path, a Blender image by its name."""
    if isinstance(image, bpy.types.Image):
        name, key = image.name, "image:" + image.name
    else:
        key = str(Path(bpy.path.abspath(str(image))).resolve())
        name = Path(key).stem
    tag = hashlib.sha1(key.encode()).hexdigest()[:12]
    return (Path(root) / "jobs" if root else jobs_root()) / f"image-{readable(name)}-{tag}"


def start_image_job(image, job_dir: str | Path | None = None, settings: dict | None = None,
                    backend: BackendProcess | None = None, cmd: str = "run") -> RigJob:
    """Start the backend job for one picture (a file path or a Blender image; non-blocking): SVD
    animates it, SP4D generates the views of the chosen frames, the visual hull is rigged."""
    if image is None or image == "":
        raise ValueError("choose an image (a file or a Blender image)")
    return _start_source_job(image, Path(job_dir or image_job_dir(image)).resolve(), write_image_job, settings,
                             backend, cmd)


def image_name(image) -> str:
    return image.name if isinstance(image, bpy.types.Image) else Path(str(image)).stem


def rig_image(image, *, job_dir: str | Path | None = None, settings: dict | None = None,
              backend: BackendProcess | None = None, timeout: float | None = None, on_event=None,
              cmd: str = "run") -> tuple[bpy.types.Object, bpy.types.Object]:
    """Rig the object of one picture: SVD clip, SP4D views, the visual hull as a new mesh with its
    armature, keyed with the generated motion. Returns (mesh object, armature); raises RigError
    and leaves the scene unchanged when the backend fails."""
    rj = start_image_job(image, job_dir, settings, backend, cmd)
    _wait(rj, timeout, on_event)
    obj, arm = _built(lambda: build_clip_rig(rj.job_dir, readable(image_name(image))))
    load_generated_clip(rj.job_dir)
    return obj, arm


def load_generated_clip(job_dir: str | Path) -> bpy.types.MovieClip | None:
    """The clip SVD generated for a picture or a still mesh (input/svd/clip.mp4) as a Movie Clip
    data-block, to watch in the Movie Clip editor; None when the job has none (or Blender cannot
    read it). Loading twice returns the same data-block."""
    path = (Path(job_dir) / "input" / "svd" / "clip.mp4").resolve()
    if not path.is_file():
        return None
    for clip in bpy.data.movieclips:
        if Path(bpy.path.abspath(clip.filepath)).resolve() == path:
            return clip
    try:
        return bpy.data.movieclips.load(str(path))
    except RuntimeError:
        return None


def export_orbits(job_dir: str | Path, backend: BackendProcess | None = None, timeout: float | None = 600
                  ) -> list[Path]:
    """The orbit videos of a generated job folder (views/orbit/vVV.mp4 per view, grid.mp4), written
    by the backend ('orbits'); their paths. RigError with the backend's code when it fails."""
    backend = backend or session.get_backend()
    rj = RigJob(backend, Path(job_dir).resolve(), "orbits")
    rj.start()
    _wait(rj, timeout, None)
    return [rj.job_dir / p for p in rj.result["stages"]["orbits"]["videos"]]
