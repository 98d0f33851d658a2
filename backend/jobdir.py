"""The job folder on the backend's side: paths, job.json, mesh.npz, stage records.

A job folder is self-describing and resumable. Its names, files and atomic writes are defined in
sp4d_job (shared with Blender); here the backend's readers and stage records. ``status.json``
records, per stage, a digest of the stage's inputs and one of each file it wrote; a stage counts
as done only when its inputs' digest matches and its files are there unchanged (a deleted or
half-rewritten output is recomputed). A record is replaced only by the stage's next result: a run
that fails before finishing leaves the last good record (and, when it rewrote nothing, its files)
in place. One job at a time per folder (sp4d_job.lock). Readers ignore unknown keys. Layout:
docs/job-folder.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from sp4d_job import layout
from sp4d_job.arrays import mesh_arrays
from sp4d_job.layout import write_bytes_atomic, write_json_atomic, write_npz_atomic  # noqa: F401 (re-exported)
from sp4d_job.lock import Busy, JobLock

from .errors import BackendError


def write_png_atomic(path: Path, image: np.ndarray) -> None:
    """Write an RGB(A) uint8 (H, W, 3|4) or grey/uint16 (H, W) image as PNG."""
    import cv2

    img = np.ascontiguousarray(image)
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[:, :, ::-1]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, [2, 1, 0, 3]]
    ok, enc = cv2.imencode(".png", img)
    if not ok:
        raise BackendError("internal", f"could not encode {path}")
    write_bytes_atomic(path, enc.tobytes())


MAX_IMAGE_PIXELS = 40_000_000  # a job's images (views, inputs) are far smaller; more is a bomb, not an image


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's header, None when the file is not a PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def read_png(path: Path) -> np.ndarray:
    """Read a PNG as RGB uint8 (H, W, 3) with a clear error when unreadable or too large (its
    header is checked before anything is decoded)."""
    import cv2

    wh = png_size(path)
    if wh is not None and wh[0] * wh[1] > MAX_IMAGE_PIXELS:
        raise BackendError("bad_input", f"image {path} is {wh[0]}×{wh[1]} px, more than the "
                           f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP a job's image may have")
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).exists() else None
    # decoded straight into RGB order (no channel swap pass afterwards)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR_RGB) if data is not None and data.size else None
    if img is None:
        raise BackendError("bad_input", f"cannot read image {path}")
    return img


def _update_file(h, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def digest(*parts: Any) -> str:
    """A stable digest of JSON-able values, arrays and files (by content), used to decide whether
    a stage is stale."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.dtype).encode() + str(p.shape).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, (str, Path)) and Path(p).is_file():
            _update_file(h, Path(p))
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str | None:
    """The content digest of one file, None when it is missing or unreadable."""
    h = hashlib.sha256()
    try:
        _update_file(h, path)
    except OSError:
        return None
    return h.hexdigest()[:16]


class JobDir:
    """Paths and records of one job folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # --- the folder itself ---------------------------------------------------------------------
    def require(self) -> None:
        """BackendError('bad_input') unless the folder exists (a job never creates its folder:
        a mistyped path must not become an empty job)."""
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise BackendError("bad_input", f"the job folder {self.root} {what}")

    def lock(self, what: str = "a job") -> JobLock:
        """The folder's lock, held (use as a context manager); BackendError 'busy' when another job
        holds it, 'io_error' when the folder cannot be written."""
        self.require()
        try:
            return JobLock(self.root, what).acquire()
        except Busy as exc:
            raise BackendError("busy", str(exc)) from None
        except OSError as exc:
            from .errors import from_exception

            raise from_exception(exc) from None

    # --- paths -------------------------------------------------------------------------------
    @property
    def job_json(self) -> Path:
        return self.root / layout.JOB_JSON

    @property
    def status_json(self) -> Path:
        return self.root / layout.STATUS_JSON

    @property
    def mesh_npz(self) -> Path:
        return self.root / layout.MESH_NPZ

    @property
    def cameras_json(self) -> Path:
        return self.root / layout.CAMERAS_JSON

    @property
    def labels_npz(self) -> Path:
        return self.root / layout.LABELS_NPZ

    @property
    def skeleton_json(self) -> Path:
        return self.root / layout.SKELETON_JSON

    @property
    def weights_npz(self) -> Path:
        return self.root / layout.WEIGHTS_NPZ

    def input_frame(self, t: int) -> Path:
        return self.root / layout.input_frame(t)

    def input_mask(self, t: int) -> Path:
        return self.root / layout.input_mask(t)

    def view_image(self, kind: str, v: int, t: int) -> Path:
        return self.root / layout.view_image(kind, v, t)

    # --- job.json ----------------------------------------------------------------------------
    def create(self, source: dict, settings: dict) -> None:
        """Write job.json for a new job (keeps finished stages if the folder already exists)."""
        from . import __version__

        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.job_json, layout.job_spec(source, settings, {"backend": __version__}))

    def read_job(self) -> dict:
        if not self.job_json.is_file():
            raise BackendError("bad_input", f"no job.json in {self.root}")
        try:
            job = json.loads(self.job_json.read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise BackendError("bad_input", f"job.json in {self.root} is not valid JSON: {exc}") from exc
        if not isinstance(job, dict):
            raise BackendError("bad_input", f"job.json in {self.root} is not an object")
        for key in ("source", "settings"):  # null or absent: empty
            if job.get(key) is None:
                job[key] = {}
            elif not isinstance(job[key], dict):
                raise BackendError("bad_input", f"job.json '{key}' must be an object, got {type(job[key]).__name__}: "
                                   f"{json.dumps(job[key])[:80]}")
        return job

    # --- mesh.npz ----------------------------------------------------------------------------
    def write_mesh(self, vertices: np.ndarray, faces: np.ndarray,
                   matrix_world: np.ndarray | None = None, **extra: np.ndarray) -> None:
        write_npz_atomic(self.mesh_npz, **mesh_arrays(vertices, faces, matrix_world, **extra))

    def read_mesh(self) -> dict | None:
        """The mesh as a dict of arrays, or None when the job has no mesh. Validates shapes."""
        if not self.mesh_npz.is_file():
            return None
        try:
            mesh = layout.read_npz(self.mesh_npz)
        except Exception as exc:  # zip or format errors
            raise BackendError("bad_input", f"mesh.npz is unreadable: {exc}") from exc
        from .rig.mesh import validate_mesh

        mesh["vertices"], mesh["faces"] = validate_mesh(mesh.get("vertices"), mesh.get("faces"))
        mesh.setdefault("matrix_world", np.eye(4, dtype=np.float32))
        return mesh

    # --- status.json and stage records -------------------------------------------------------
    def read_status(self) -> dict:
        try:
            status = json.loads(self.status_json.read_text())
            if isinstance(status, dict):
                status.setdefault("stages", {})
                return status
        except (OSError, ValueError, RecursionError):
            pass
        return {"stages": {}}

    def update_status(self, **fields: Any) -> dict:
        """Merge ``fields`` into status.json (never creates the folder)."""
        self.require()
        status = self.read_status()
        status.update(fields)
        status["updated"] = time.time()
        write_json_atomic(self.status_json, status)
        return status

    def stage_done(self, stage: str, key: str) -> bool:
        """True when ``stage`` finished with inputs digest ``key`` and every file it wrote is there
        unchanged (so it need not run again). A record without its files' digests (an older
        folder) does not count."""
        rec = self.read_status()["stages"].get(stage)
        if not (rec and rec.get("done") and rec.get("key") == key and isinstance(rec.get("outputs"), dict)):
            return False
        return all(file_digest(self.root / rel) == d for rel, d in rec["outputs"].items())

    def outputs_key(self, stage: str) -> str | None:
        """A digest of the files ``stage`` last wrote (None without a record): what the next stage's
        key depends on, so that a stage re-run with other results re-runs the stages after it."""
        rec = self.read_status()["stages"].get(stage) or {}
        return digest(rec["outputs"]) if isinstance(rec.get("outputs"), dict) else rec.get("key")

    def mark_stage(self, stage: str, key: str, outputs: list[str] | tuple[str, ...] = (), **info: Any) -> None:
        """Record ``stage`` as done with inputs digest ``key`` and the digests of ``outputs`` (paths
        relative to the folder, all written by now). The one place a stage record is replaced."""
        files = {}
        for rel in outputs:
            d = file_digest(self.root / rel)
            if d is None:
                raise BackendError("internal", f"stage {stage} did not write {rel}")
            files[rel] = d
        status = self.read_status()
        status["stages"][stage] = {"done": True, "key": key, "finished": time.time(), "outputs": files, **info}
        status.update(stage=stage, error=None)
        status["updated"] = time.time()
        write_json_atomic(self.status_json, status)

    def files(self, *folders: str, exclude: tuple[str, ...] = ()) -> list[str]:
        """Every file under ``folders`` (relative paths, sorted; temporary files left out)."""
        out = []
        for folder in folders:
            base = self.root / folder
            if base.is_dir():
                out += [p.relative_to(self.root).as_posix() for p in base.rglob("*")
                        if p.is_file() and not p.name.startswith(".")]
        return sorted(r for r in out if r not in exclude)

    def stage_info(self, stage: str) -> dict:
        return dict(self.read_status()["stages"].get(stage) or {})

    def invalidate_from(self, stage: str, order: tuple[str, ...]) -> None:
        """Forget ``stage`` and every stage after it in ``order``."""
        status = self.read_status()
        for s in order[order.index(stage):]:
            status["stages"].pop(s, None)
        write_json_atomic(self.status_json, status)
