"""The job folder: the one boundary between Blender and the backend.

A job folder is self-describing and resumable. Every file is written atomically (temporary
file in the same folder, then ``os.replace``), so a reader never sees half a file and a job
killed mid-write leaves the previous version. ``status.json`` records, per stage, a digest of
the stage's inputs; a stage whose record matches is not recomputed. Readers ignore unknown keys.
Layout: docs/job-folder.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendError

FORMAT_VERSION = 1
N_VIEWS = 13  # view 0 = input view, views 1..12 generated


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def write_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes_atomic(path, buf.getvalue())


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
        return self.root / "job.json"

    @property
    def status_json(self) -> Path:
        return self.root / "status.json"

    @property
    def mesh_npz(self) -> Path:
        return self.root / "mesh.npz"

    @property
    def cameras_json(self) -> Path:
        return self.root / "views" / "cameras.json"

    @property
    def labels_npz(self) -> Path:
        return self.root / "parts" / "labels.npz"

    @property
    def skeleton_json(self) -> Path:
        return self.root / "rig" / "skeleton.json"

    @property
    def weights_npz(self) -> Path:
        return self.root / "rig" / "weights.npz"

    def input_frame(self, t: int) -> Path:
        return self.root / "input" / f"frame_{t:03d}.png"

    def view_image(self, kind: str, v: int, t: int) -> Path:
        if kind not in ("rgb", "parts"):
            raise ValueError(kind)
        return self.root / "views" / kind / f"v{v:02d}_t{t:03d}.png"

    # --- job.json ----------------------------------------------------------------------------
    def create(self, source: dict, settings: dict) -> None:
        """Write job.json for a new job (keeps finished stages if the folder already exists)."""
        from . import __version__

        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            self.job_json,
            {"format": FORMAT_VERSION, "source": source, "settings": settings,
             "versions": {"backend": __version__}},
        )

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
        arrays = {"vertices": np.asarray(vertices, np.float32),
                  "faces": np.asarray(faces, np.int32),
                  "matrix_world": np.eye(4, dtype=np.float32) if matrix_world is None
                  else np.asarray(matrix_world, np.float32)}
        arrays.update(extra)
        write_npz_atomic(self.mesh_npz, **arrays)

    def read_mesh(self) -> dict | None:
        """The mesh as a dict of arrays, or None when the job has no mesh. Validates shapes."""
        if not self.mesh_npz.is_file():
            return None
        try:
            with np.load(self.mesh_npz, allow_pickle=False) as z:
                mesh = {k: z[k] for k in z.files}
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
