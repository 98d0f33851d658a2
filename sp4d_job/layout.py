"""File names, views, stages and versions of a job folder, and its atomic writes.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so a
reader sees the old or the new version, never half a file, and a job killed mid-write leaves the
folder consistent. Readers ignore keys they do not know.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1  # job.json "format"
VIEWS = 13  # views in the folder: view 0 is the input view, views 1..12 are generated
GENERATED_VIEWS = VIEWS - 1  # what the model generates per frame
STAGES = ("generate", "parts", "rig")  # in order; a stage's record depends on the ones before it
VIEW_KINDS = ("rgb", "parts")

JOB_JSON = "job.json"
STATUS_JSON = "status.json"
MESH_NPZ = "mesh.npz"
CAMERAS_JSON = "views/cameras.json"
PREVIEW_MP4 = "views/preview.mp4"
LABELS_NPZ = "parts/labels.npz"
SKELETON_JSON = "rig/skeleton.json"
SKELETON_EDITED_JSON = "rig/skeleton_edited.json"  # Blender's edited bones, for reweight
WEIGHTS_NPZ = "rig/weights.npz"
WEIGHTS_EDITED_NPZ = "rig/weights_edited.npz"  # weights for the edited bones (reweight), beside the stage's own
CAPTURE_DIR = "capture"  # frames Blender rendered of the mesh (source.clip = "capture")


def capture_frame(t: int) -> str:
    """Frame t of a capture (CAPTURE_DIR), named so that sorting by name keeps their order."""
    return f"frame_{t:03d}.png"


def input_frame(t: int) -> str:
    """The model-ready input frame t (RGB on white, the model's size)."""
    return f"input/frame_{t:03d}.png"


def input_mask(t: int) -> str:
    """The object mask of input frame t (255 inside)."""
    return f"input/mask_{t:03d}.png"


def view_image(kind: str, v: int, t: int) -> str:
    """A view's image: kind 'rgb' or 'parts', view v (0 = input), frame t."""
    if kind not in VIEW_KINDS:
        raise ValueError(f"view image kind must be one of {VIEW_KINDS}, got {kind!r}")
    return f"views/{kind}/v{v:02d}_t{t:03d}.png"


def job_spec(source: dict, settings: dict, versions: dict) -> dict:
    """The content of job.json: source (kind 'mesh' or 'clip', docs/job-folder.md), settings
    (sp4d_job.settings), and the versions of who wrote it."""
    return {"format": FORMAT_VERSION, "source": source, "settings": settings, "versions": versions}


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
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


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def write_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes_atomic(path, buf.getvalue())


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an npz file (no pickles)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
