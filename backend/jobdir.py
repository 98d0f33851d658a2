"""The job folder on the backend's side: paths, job.json, mesh.npz, stage records.

A job folder is self-describing and resumable. Its names, files and atomic writes are defined in
sp4d_job (shared with Blender); here the backend's readers and stage records. ``status.json``
records, per stage, a digest of the stage's inputs; a stage whose record matches is not
recomputed. Readers ignore unknown keys. Layout: docs/job-folder.md.
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


def read_png(path: Path) -> np.ndarray:
    """Read a PNG as RGB uint8 (H, W, 3) with a clear error when unreadable."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).exists() else None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if img is None:
        raise BackendError("bad_input", f"cannot read image {path}")
    return img[:, :, ::-1].copy()


def digest(*parts: Any) -> str:
    """A stable digest of JSON-able values and arrays, used to decide whether a stage is stale."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.dtype).encode() + str(p.shape).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, (str, Path)) and Path(p).is_file():
            h.update(Path(p).read_bytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


class JobDir:
    """Paths and records of one job folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

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
        except (OSError, ValueError) as exc:
            raise BackendError("bad_input", f"job.json in {self.root} is not valid JSON: {exc}") from exc
        if not isinstance(job, dict):
            raise BackendError("bad_input", f"job.json in {self.root} is not an object")
        job.setdefault("source", {})
        job.setdefault("settings", {})
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
        except (OSError, ValueError):
            pass
        return {"stages": {}}

    def update_status(self, **fields: Any) -> dict:
        status = self.read_status()
        status.update(fields)
        status["updated"] = time.time()
        write_json_atomic(self.status_json, status)
        return status

    def stage_done(self, stage: str, key: str) -> bool:
        """True when ``stage`` finished with inputs digest ``key`` (so it need not run again)."""
        rec = self.read_status()["stages"].get(stage)
        return bool(rec and rec.get("done") and rec.get("key") == key)

    def mark_stage(self, stage: str, key: str, **info: Any) -> None:
        status = self.read_status()
        status["stages"][stage] = {"done": True, "key": key, "finished": time.time(), **info}
        status.update(stage=stage, error=None)
        status["updated"] = time.time()
        write_json_atomic(self.status_json, status)

    def stage_info(self, stage: str) -> dict:
        return dict(self.read_status()["stages"].get(stage) or {})

    def invalidate_from(self, stage: str, order: tuple[str, ...]) -> None:
        """Forget ``stage`` and every stage after it in ``order``."""
        status = self.read_status()
        for s in order[order.index(stage):]:
            status["stages"].pop(s, None)
        write_json_atomic(self.status_json, status)
