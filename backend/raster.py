"""A small triangle rasteriser (painter's algorithm on OpenCV's polygon fill).

Enough for part-image oracles and visibility tests at 576 px; it returns, per pixel, the index
of the nearest face so that colours, depth and masks are lookups.
"""

from __future__ import annotations

import cv2
import numpy as np

_SHIFT = 4  # sub-pixel bits for cv2.fillConvexPoly


def face_index_buffer(uv: np.ndarray, depth: np.ndarray, faces: np.ndarray,
                      size: tuple[int, int]) -> np.ndarray:
    """Index (H, W) int32 of the face seen at each pixel, -1 for background.

    uv: (N, 2) pixel coordinates of the vertices, depth: (N,) distance along the view axis,
    faces: (M, 3) vertex indices. Faces behind the camera are skipped.
    """
    h, w = size
    buf = np.full((h, w), -1, np.int32)
    if len(faces) == 0:
        return buf
    fz = depth[faces].mean(1)
    keep = np.nonzero((depth[faces] > 1e-6).all(1))[0]
    order = keep[np.argsort(-fz[keep], kind="stable")]  # far to near
    pts = np.round(uv[faces[order]] * (1 << _SHIFT)).astype(np.int32)
    # skip triangles that fall completely outside the image
    lo, hi = pts.min(1), pts.max(1)
    inside = (hi[:, 0] >= 0) & (hi[:, 1] >= 0) & (lo[:, 0] < w << _SHIFT) & (lo[:, 1] < h << _SHIFT)
    fill = cv2.fillConvexPoly
    for fi, p in zip(order[inside].tolist(), pts[inside], strict=True):
        fill(buf, p, fi, cv2.LINE_8, _SHIFT)
    return buf


def nearest_corner(face_buf: np.ndarray, uv: np.ndarray, faces: np.ndarray,
                   mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, vertex) of every covered pixel (within ``mask``): the corner of the face
    under the pixel that is nearest to it (the largest barycentric coordinate in the image)."""
    keep = face_buf >= 0 if mask is None else (face_buf >= 0) & mask
    ys, xs = np.nonzero(keep)
    f = face_buf[ys, xs]
    tri = uv[faces[f]]  # (P, 3, 2)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    ep = np.stack([xs, ys], 1) - tri[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    b1 = (ep[:, 0] * e2[:, 1] - ep[:, 1] * e2[:, 0]) / det
    b2 = (e1[:, 0] * ep[:, 1] - e1[:, 1] * ep[:, 0]) / det
    corner = np.argmax(np.stack([1 - b1 - b2, b1, b2], 1), axis=1)
    return ys, xs, faces[f, corner]


def depth_from_faces(face_buf: np.ndarray, depth: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-pixel depth (face mean depth) with +inf for background."""
    fz = depth[faces].mean(1) if len(faces) else np.zeros(0)
    out = np.full(face_buf.shape, np.inf, np.float64)
    m = face_buf >= 0
    out[m] = fz[face_buf[m]]
    return out


def shade_faces(vertices: np.ndarray, faces: np.ndarray, view_dir: np.ndarray) -> np.ndarray:
    """Lambert-like grey level in [0, 1] per face, lit from the camera (for RGB previews)."""
    n = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return 0.35 + 0.6 * np.abs(n @ view_dir)
