"""The parts oracle: renders a mesh with known parts in the SP4D view layout.

It stands in for SP4D when no weights or GPU are present, so the whole downstream path runs:
the mesh is animated by rigid rotations of its parts about their joints (a gentle walk cycle),
then rendered from the 13 orbit cameras for each frame, as an RGB image (grey shading) and a
part image (spatial colour encoding) on white.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..cameras import project, view_direction
from ..parts.encoding import part_colours
from ..raster import face_index_buffer, shade_faces


def _rot(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def part_motion(parents: np.ndarray, joints: np.ndarray, t: int, n_frames: int,
                amplitude: float = 0.5, axes: np.ndarray | None = None) -> np.ndarray:
    """World transforms (P, 4, 4) of each part at frame t: a swing of every non-root part about
    its joint (axis alternating between the Y and Z axes down the chain), composed parent to child.
    Frame 0 is the rest pose (the mesh as given), as for a clip rendered from the scene."""
    n = len(parents)
    local = np.tile(np.eye(4), (n, 1, 1))
    for p in range(n):
        if parents[p] < 0:
            continue
        depth = 0
        q = p
        while parents[q] >= 0:
            q, depth = parents[q], depth + 1
        axis = np.array([0.0, 1.0, 0.0]) if depth % 2 else np.array([0.0, 0.0, 1.0])
        if axes is not None and np.linalg.norm(axes[p]) > 0:
            axis = np.asarray(axes[p], float)
        # a sweep from the rest pose, direction and size varying by part, distinct in every frame
        sweep = math.sin(0.5 * math.pi * t / max(n_frames - 1, 1))
        ang = amplitude * (1.0 if p % 2 else -1.0) * (0.6 + 0.4 * math.cos(1.3 * p)) * sweep
        r = _rot(axis, ang)
        local[p, :3, :3] = r
        local[p, :3, 3] = joints[p] - r @ joints[p]
    world = np.zeros_like(local)
    order = sorted(range(n), key=lambda i: _depth(parents, i))
    for p in order:
        world[p] = local[p] if parents[p] < 0 else world[parents[p]] @ local[p]
    return world


def _depth(parents: np.ndarray, i: int) -> int:
    d = 0
    while parents[i] >= 0:
        i, d = parents[i], d + 1
    return d


def pose_vertices(vertices: np.ndarray, labels: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """Apply each vertex's part transform (rigid skinning)."""
    m = transforms[labels]
    return np.einsum("nij,nj->ni", m[:, :3, :3], vertices) + m[:, :3, 3]


def render_oracle(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, parents: np.ndarray,
                  joints: np.ndarray, cameras: list[dict], n_frames: int, axes: np.ndarray | None,
                  on_image: Callable[[int, int, np.ndarray, np.ndarray], None],
                  check: Callable[[], None] = lambda: None) -> np.ndarray:
    """Render RGB and part images for every (frame, view); calls ``on_image(t, v, rgb, parts)``.

    vertices/joints are in the cameras' normalised world space; ``axes`` (P, 3) optional hinge axes
    (world directions; zero rows: the default alternating axes). Returns the part colours (P, 3).
    """
    colours = part_colours(vertices, labels, len(parents))
    face_part = labels[faces[:, 0]]
    for t in range(n_frames):
        posed = pose_vertices(vertices, labels, part_motion(parents, joints, t, n_frames, axes=axes))
        for v, cam in enumerate(cameras):
            check()
            uv, depth = project(posed, cam)
            buf = face_index_buffer(uv, depth, faces, (cam["height"], cam["width"]))
            fg = buf >= 0
            rgb = np.full(buf.shape + (3,), 255, np.uint8)
            parts = rgb.copy()
            shade = shade_faces(posed, faces, view_direction(cam))
            base = np.array([200, 170, 140.0])
            rgb[fg] = np.clip(shade[buf[fg], None] * base, 0, 255).astype(np.uint8)
            parts[fg] = colours[face_part[buf[fg]]]
            on_image(t, v, rgb, parts)
    return colours
