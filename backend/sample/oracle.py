"""The parts oracle: renders a mesh with known parts in the SP4D view layout.

It stands in for SP4D when no weights or GPU are present, so the whole downstream path runs:
the mesh is animated about its true pivots (every non-root part sweeps 15–35° over the clip
about its hinge axis, or about an axis that turns over the frames for a ball joint; the root
drifts and turns a little, as a creature in a clip does), then rendered from the 13 orbit
cameras for each frame, as an RGB image (grey shading) and a part image (spatial colour
encoding, each pixel the part of the nearest vertex of its face, so that part boundaries run
between differently labelled vertices even on a low-poly mesh) on white. Frame 0 is the rest
pose (the mesh as given). Meshes skinned by an artist (per-vertex weights over parts) are posed
by linear blend skinning, as their rig would.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from ..cameras import project, view_direction
from ..parts.encoding import part_colours
from ..raster import face_index_buffer, nearest_corner, shade_faces

SWEEP_DEG = (15.0, 35.0)


def depth_order(parents: np.ndarray) -> list[int]:
    """Part indices, every parent before its children."""
    parents = np.asarray(parents)
    depth = np.zeros(len(parents), int)
    for p in range(len(parents)):
        q = p
        while parents[q] >= 0:
            q, depth[p] = parents[q], depth[p] + 1
    return sorted(range(len(parents)), key=lambda i: depth[i])


def _about(rot: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = pivot - rot @ pivot
    return m


def part_motion(parents: np.ndarray, joints: np.ndarray, t: int, n_frames: int, axes: np.ndarray | None = None,
                seed: int = 0, root_motion: bool = True) -> np.ndarray:
    """World transforms (P, 4, 4) of each part at frame t (frame 0: the identity).

    Each non-root part rotates about its pivot by s·A, s = t/(n_frames-1), with A drawn in
    SWEEP_DEG (either sign); about its hinge axis when ``axes`` gives one, otherwise about an
    axis that turns with s (so the frames pin a ball joint's pivot down). The root moves by
    2 % of the joints' spread and turns 5° about Z (``root_motion``)."""
    joints = np.asarray(joints, np.float64)
    n = len(parents)
    s = t / max(n_frames - 1, 1)
    local = np.tile(np.eye(4), (n, 1, 1))
    spread = float(np.ptp(joints, axis=0).max()) if n > 1 else 1.0
    for p in range(n):
        rng = np.random.default_rng([seed, p])
        if parents[p] < 0:
            if root_motion:
                d = rng.normal(size=3) * [1, 1, 0.3]
                local[p] = _about(Rotation.from_euler("z", 5.0 * s, degrees=True).as_matrix(), joints[p])
                local[p, :3, 3] += 0.02 * spread * s * d / np.linalg.norm(d)
            continue
        amp = np.radians(rng.uniform(*SWEEP_DEG)) * rng.choice([-1.0, 1.0])
        a0, a1 = rng.normal(size=3), rng.normal(size=3)
        if axes is not None and np.linalg.norm(axes[p]) > 0:
            axis = np.asarray(axes[p], np.float64)
        else:
            axis = a0 / np.linalg.norm(a0) + 0.8 * s * a1 / np.linalg.norm(a1)
        rot = Rotation.from_rotvec(amp * s * axis / np.linalg.norm(axis)).as_matrix()
        local[p] = _about(rot, joints[p])
    world = np.zeros_like(local)
    for p in depth_order(parents):
        world[p] = local[p] if parents[p] < 0 else world[parents[p]] @ local[p]
    return world


def pose_vertices(vertices: np.ndarray, labels: np.ndarray, transforms: np.ndarray,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """Posed vertices: each vertex moved by its part's transform (rigid parts), or by linear
    blend skinning when ``weights`` (N, P) are given."""
    v = np.asarray(vertices, np.float64)
    if weights is None:
        m = transforms[labels]
        return np.einsum("nij,nj->ni", m[:, :3, :3], v) + m[:, :3, 3]
    per_part = np.einsum("pij,nj->pni", transforms[:, :3, :3], v) + transforms[:, None, :3, 3]
    return np.einsum("np,pni->ni", weights, per_part)


def render_oracle(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, parents: np.ndarray,
                  joints: np.ndarray, cameras: list[dict], n_frames: int, axes: np.ndarray | None,
                  on_image: Callable[[int, int, np.ndarray, np.ndarray], None],
                  check: Callable[[], None] = lambda: None, weights: np.ndarray | None = None,
                  seed: int = 0) -> np.ndarray:
    """Render RGB and part images for every (frame, view); calls ``on_image(t, v, rgb, parts)``.

    vertices/joints are in the cameras' normalised world space; ``axes`` (P, 3) optional hinge axes
    (zero rows: ball joints); ``weights`` (N, P) optional skinning weights. Returns the part
    colours (P, 3)."""
    colours = part_colours(vertices, labels, len(parents))
    for t in range(n_frames):
        posed = pose_vertices(vertices, labels, part_motion(parents, joints, t, n_frames, axes=axes, seed=seed),
                              weights)
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
            ys, xs, vert = nearest_corner(buf, uv, faces)  # a pixel shows the part of its nearest vertex
            parts[ys, xs] = colours[labels[vert]]
            on_image(t, v, rgb, parts)
    return colours
