"""Orbit cameras of the SP4D view layout and projection of points into them.

Convention (documented in docs/job-folder.md): Blender world axes, Z up. The object is
normalised into the unit sphere (centre of its bounding box, radius = farthest vertex). View 0
looks at the object's front from -Y; view k sits at azimuth k*360/13 degrees, rotating
counter-clockwise seen from +Z, at the input view's elevation. Perspective pinhole cameras aim
at the origin; the default field of view makes the unit sphere span 0.9 of the frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sp4d_job.layout import VIEWS as N_VIEWS

DEFAULT_DISTANCE = 3.0
# the unit sphere at DEFAULT_DISTANCE subtends asin(1/3); it should fill 0.9 of the frame
DEFAULT_FOV_DEG = math.degrees(2 * math.atan(math.tan(math.asin(1 / DEFAULT_DISTANCE)) / 0.9))


def orbit_cameras(size: int = 576, n_views: int = N_VIEWS, elevation_deg: float = 0.0,
                  fov_deg: float = DEFAULT_FOV_DEG, distance: float = DEFAULT_DISTANCE,
                  azimuths_deg: Sequence[float] | None = None) -> list[dict]:
    """Camera records for views 0..n_views-1 as stored in views/cameras.json; view v at azimuth
    ``azimuths_deg[v]`` (relative to the input view, 0 first), by default v·360/n_views (SP4D's
    even orbit; SV4D 2.0's views are not evenly spaced)."""
    if azimuths_deg is not None and len(azimuths_deg) != n_views:
        raise ValueError(f"{len(azimuths_deg)} azimuths for {n_views} views")
    return [
        {"view": v, "azimuth_deg": float(azimuths_deg[v]) if azimuths_deg is not None else v * 360.0 / n_views,
         "elevation_deg": float(elevation_deg), "fov_deg": float(fov_deg), "distance": float(distance),
         "width": size, "height": size}
        for v in range(n_views)
    ]


def camera_pose(cam: dict) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera rotation R (rows: right, down, forward) and camera centre C."""
    az = math.radians(cam["azimuth_deg"])
    el = math.radians(cam["elevation_deg"])
    d = cam["distance"]
    centre = d * np.array([math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), math.sin(el)])
    forward = -centre / np.linalg.norm(centre)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-8:  # looking straight down or up
        right = np.array([math.cos(az), math.sin(az), 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward]), centre


def focal_px(cam: dict) -> float:
    return 0.5 * cam["width"] / math.tan(math.radians(cam["fov_deg"]) / 2)


def project(points: np.ndarray, cam: dict) -> tuple[np.ndarray, np.ndarray]:
    """Project world points (N, 3) to pixel coordinates (N, 2) (x right, y down) and depth (N,)."""
    R, C = camera_pose(cam)
    pc = (np.asarray(points, np.float64) - C) @ R.T
    depth = pc[:, 2]
    f = focal_px(cam)
    z = np.where(np.abs(depth) < 1e-9, 1e-9, depth)
    uv = np.stack([f * pc[:, 0] / z + cam["width"] / 2, f * pc[:, 1] / z + cam["height"] / 2], 1)
    return uv, depth


def view_direction(cam: dict) -> np.ndarray:
    """Unit vector from the camera towards the origin."""
    return camera_pose(cam)[0][2]


def normalisation(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and scale that map ``vertices`` into the unit sphere: (v - centre) * scale."""
    v = np.asarray(vertices, np.float64)
    centre = 0.5 * (v.min(0) + v.max(0))
    radius = float(np.linalg.norm(v - centre, axis=1).max())
    return centre, 1.0 / max(radius, 1e-12)


def blender_camera_matrix(cam: dict, centre: np.ndarray, scale: float) -> list[list[float]]:
    """Camera-to-world 4×4 in Blender's convention (looks down -Z, +Y up), in world units."""
    R, C = camera_pose(cam)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2] = R[0], -R[1], -R[2]
    m[:3, 3] = np.asarray(centre) + C / scale
    return m.tolist()


def cameras_record(cams: list[dict], frames: int, source: str, centre, scale: float, **extra) -> dict:
    """The views/cameras.json record (docs/job-folder.md)."""
    views = [dict(c, matrix_world=blender_camera_matrix(c, centre, scale)) for c in cams]
    return {"views": views, "frames": frames, "part_source": source,
            "normalisation": {"centre": [float(x) for x in centre], "scale": float(scale), "space": "world"},
            "layout": "views/{rgb,parts}/vVV_tTTT.png; view 0 = input view", **extra}
