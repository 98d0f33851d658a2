"""MP4 files of frames, and the orbit videos of a job's generated views.

``export_orbits`` writes, from a finished generation (views/rgb/vVV_tTTT.png), one video per view
(views/orbit/vVV.mp4: that view's frames over time; view 0 is the input) and views/orbit/grid.mp4
(every view tiled, one video frame per clip frame): turntable references, 4D capture, texture
reference. Any number of frames and views (SP4D's 13, SV4D 2.0's, ...).
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np

from .errors import BackendError
from .jobdir import JobDir, read_png

ORBIT_DIR = "views/orbit"


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float) -> bool:
    """frames (T, H, W, 3) uint8 RGB as an MP4 (mp4v, written atomically); False when OpenCV has
    no encoder here."""
    import cv2

    h, w = frames.shape[1:3]
    fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    try:
        if writer.isOpened():
            for f in frames:
                writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    finally:
        writer.release()
    if os.path.getsize(tmp) == 0:
        os.unlink(tmp)
        return False
    os.replace(tmp, path)
    return True


def read_mp4(path: str | os.PathLike) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of a video (tests, checks)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[:, :, ::-1])
    cap.release()
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


def grid(images: list[np.ndarray], cols: int | None = None) -> np.ndarray:
    """Equal-size (H, W, 3) images tiled row by row on white, ``cols`` a row (default: near-square)."""
    n = len(images)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = images[0].shape[:2]
    out = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = im[..., :3]
    return out


def export_orbits(job: JobDir, fps: float = 8.0) -> dict:
    """views/orbit/vVV.mp4 per generated view and views/orbit/grid.mp4; returns what was written.
    BackendError bad_input when the job has no generated views, io_error when OpenCV cannot
    write MP4 here."""
    rgb = job.root / "views" / "rgb"
    names = sorted(rgb.glob("v*_t*.png")) if rgb.is_dir() else []
    if not names:
        raise BackendError("bad_input", f"{job.root} has no generated views (views/rgb): run generate first")
    views = sorted({int(p.name[1:3]) for p in names})
    times = sorted({int(p.stem.split("_t")[1]) for p in names})
    out = job.root / ORBIT_DIR
    out.mkdir(parents=True, exist_ok=True)
    frames = {v: np.stack([read_png(job.view_image("rgb", v, t)) for t in times]) for v in views}
    written = []
    for v in views:
        if not write_mp4(out / f"v{v:02d}.mp4", frames[v], fps):
            raise BackendError("io_error", "cannot write MP4 files here (OpenCV has no mp4v encoder)")
        written.append(f"{ORBIT_DIR}/v{v:02d}.mp4")
    tiles = np.stack([grid([frames[v][k] for v in views]) for k in range(len(times))])
    write_mp4(out / "grid.mp4", tiles, fps)
    written.append(f"{ORBIT_DIR}/grid.mp4")
    return {"videos": written, "views": len(views), "frames": len(times), "fps": fps}

