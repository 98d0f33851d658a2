"""An MP4 preview of a job's views: one video frame per clip frame, RGB above parts, views across."""

from __future__ import annotations

import os
import tempfile

import cv2
import numpy as np

from .jobdir import JobDir


def preview_grid(job: JobDir, t: int, n_views: int, thumb: int = 128) -> np.ndarray:
    rows = []
    for kind in ("rgb", "parts"):
        row = []
        for v in range(n_views):
            p = job.view_image(kind, v, t)
            img = cv2.imread(str(p)) if p.exists() else None
            row.append(np.full((thumb, thumb, 3), 255, np.uint8) if img is None
                       else cv2.resize(img, (thumb, thumb), interpolation=cv2.INTER_AREA))
        rows.append(np.hstack(row))
    return np.vstack(rows)


def write_preview(job: JobDir, n_frames: int, n_views: int, fps: float = 4.0) -> str | None:
    """views/preview.mp4 (written atomically); None when no video encoder is available."""
    out = job.root / "views" / "preview.mp4"
    frames = [preview_grid(job, t, n_views) for t in range(n_frames)]
    h, w = frames[0].shape[:2]
    fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=out.parent)
    os.close(fd)
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    try:
        if not writer.isOpened():
            return None
        for f in frames:
            writer.write(f)
    finally:
        writer.release()
        if os.path.getsize(tmp) == 0:
            os.unlink(tmp)
    if os.path.exists(tmp):
        os.replace(tmp, out)
        return str(out)
    return None
