"""A mesh from the silhouettes of the views (for clips rigged without a mesh): visual hull.

Voxels of the normalised cube are kept when they project inside the object's silhouette in
every view. The generated views' framing does not follow our camera model exactly, so the
carving alternates with a per-view 2D similarity fit (as lifting does): the silhouette of the
current hull is matched to each view's mask by centroid and area, then carving is redone.
Marching cubes (scikit-image) turns the occupancy into a triangle mesh.
"""

from __future__ import annotations

import numpy as np

from ..cameras import focal_px, project
from ..errors import BackendError
from .lift import similarity_fit


def visual_hull(masks: dict[int, np.ndarray], cameras: list[dict], resolution: int = 64,
                iterations: int = 3, tolerance: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (N, 3), faces (M, 3)) in the cameras' normalised space from view masks."""
    import cv2
    from skimage.measure import marching_cubes

    if len(masks) < 3:
        raise BackendError("bad_input", f"a visual hull needs at least 3 silhouettes, got {len(masks)}")
    axis = np.linspace(-1, 1, resolution)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    kernel = np.ones((2 * tolerance + 1,) * 2, np.uint8)
    grown = {v: cv2.dilate(m.astype(np.uint8), kernel) > 0 for v, m in masks.items()}
    proj = {v: project(grid, cameras[v])[0] for v in masks}
    fits = {v: (1.0, np.zeros(2), np.zeros(2)) for v in masks}
    occ = np.ones(len(grid), bool)
    for _ in range(iterations):
        occ = np.ones(len(grid), bool)
        for v, m in grown.items():
            s, c0, c1 = fits[v]
            uv = c1 + s * (proj[v] - c0) if s != 1.0 or np.any(c0 != c1) else proj[v]
            px = np.round(uv).astype(int)
            h, w = m.shape
            inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
            keep = np.zeros(len(grid), bool)
            keep[inside] = m[px[inside, 1], px[inside, 0]]
            occ &= keep
        if not occ.any():
            break
        for v, m in masks.items():  # refit each view to the current hull's silhouette
            uv = np.round(proj[v][occ]).astype(int)
            h, w = m.shape
            ok = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
            sil = np.zeros((h, w), np.uint8)
            sil[uv[ok, 1], uv[ok, 0]] = 1
            # voxel centres -> area: grow each by the voxel's footprint in pixels
            k = max(1, int(round(2 / (resolution - 1) * focal_px(cameras[v]) / cameras[v]["distance"])))
            sil = cv2.dilate(sil, np.ones((k, k), np.uint8))
            fits[v] = similarity_fit(sil > 0, m)
    if occ.sum() < 8:
        raise BackendError("bad_input", "the silhouettes do not agree on any volume: no visual hull")
    vol = np.pad(occ.reshape((resolution,) * 3).astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(vol, 0.5, spacing=(2 / (resolution - 1),) * 3)
    return verts - 1 - 2 / (resolution - 1), faces.astype(np.int64)
