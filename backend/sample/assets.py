"""Procedural articulated assets with a ground-truth rig (the sample and the rig benchmark).

An asset is the smooth union of primitives (capsules, rounded boxes), one or more per part,
meshed by marching cubes into one watertight surface with organic joints. Every vertex carries
the part of the primitive nearest to it; every part has a parent and a joint (where it attaches
to its parent). Larger meshes come from midpoint subdivision (same shape, 4× the triangles).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A part: (name, parent name or None, primitives, joint). Primitives: ("capsule", a, b, radius)
# or ("box", centre, half_extents, rounding). An optional fifth item is the part's hinge axis
# (the oracle rotates it about this axis through its joint; otherwise about alternating axes).
QUADRUPED = [  # body along +X (head at +X, tail at -X), legs down -Z: the front view shows its profile
    ("body", None, [("capsule", (-0.55, 0, 0.75), (0.45, 0, 0.78), 0.27),
                    ("capsule", (-0.75, 0, 0.8), (-0.55, 0, 0.76), 0.12)], (0.0, 0, 0.76)),
    ("neck", "body", [("capsule", (0.5, 0, 0.86), (0.86, 0, 1.18), 0.11)], (0.55, 0, 0.9)),
    ("head", "neck", [("capsule", (0.95, 0, 1.28), (0.95, 0, 1.28), 0.17),
                      ("capsule", (1.0, 0, 1.24), (1.22, 0, 1.16), 0.08)], (0.86, 0, 1.18)),
    ("leg_front.L", "body", [("capsule", (0.32, 0.17, 0.62), (0.36, 0.2, 0.36), 0.09)], (0.32, 0.17, 0.62)),
    ("shin_front.L", "leg_front.L", [("capsule", (0.36, 0.2, 0.36), (0.36, 0.2, 0.05), 0.07)], (0.36, 0.2, 0.36)),
    ("leg_front.R", "body", [("capsule", (0.32, -0.17, 0.62), (0.36, -0.2, 0.36), 0.09)], (0.32, -0.17, 0.62)),
    ("shin_front.R", "leg_front.R", [("capsule", (0.36, -0.2, 0.36), (0.36, -0.2, 0.05), 0.07)], (0.36, -0.2, 0.36)),
    ("leg_back.L", "body", [("capsule", (-0.42, 0.17, 0.62), (-0.46, 0.2, 0.36), 0.1)], (-0.42, 0.17, 0.62)),
    ("shin_back.L", "leg_back.L", [("capsule", (-0.46, 0.2, 0.36), (-0.42, 0.2, 0.05), 0.07)], (-0.46, 0.2, 0.36)),
    ("leg_back.R", "body", [("capsule", (-0.42, -0.17, 0.62), (-0.46, -0.2, 0.36), 0.1)], (-0.42, -0.17, 0.62)),
    ("shin_back.R", "leg_back.R", [("capsule", (-0.46, -0.2, 0.36), (-0.42, -0.2, 0.05), 0.07)], (-0.46, -0.2, 0.36)),
    ("tail", "body", [("capsule", (-0.75, 0, 0.82), (-1.02, 0, 0.95), 0.07)], (-0.75, 0, 0.82)),
    ("tail_tip", "tail", [("capsule", (-1.02, 0, 0.95), (-1.25, 0, 1.12), 0.05)], (-1.02, 0, 0.95)),
]

BIPED = [  # standing along +Z, facing -Y, arms out along ±X (T-pose)
    ("torso", None, [("capsule", (0, 0, 0.95), (0, 0, 1.35), 0.2)], (0, 0, 1.1)),
    ("head", "torso", [("capsule", (0, 0, 1.68), (0, 0, 1.72), 0.13)], (0, 0, 1.55)),
    ("upper_arm.L", "torso", [("capsule", (0.24, 0, 1.42), (0.55, 0, 1.42), 0.06)], (0.24, 0, 1.42)),
    ("forearm.L", "upper_arm.L", [("capsule", (0.55, 0, 1.42), (0.85, 0, 1.42), 0.05)], (0.55, 0, 1.42)),
    ("upper_arm.R", "torso", [("capsule", (-0.24, 0, 1.42), (-0.55, 0, 1.42), 0.06)], (-0.24, 0, 1.42)),
    ("forearm.R", "upper_arm.R", [("capsule", (-0.55, 0, 1.42), (-0.85, 0, 1.42), 0.05)], (-0.55, 0, 1.42)),
    ("thigh.L", "torso", [("capsule", (0.11, 0, 0.85), (0.12, 0, 0.47), 0.08)], (0.11, 0, 0.85)),
    ("shin.L", "thigh.L", [("capsule", (0.12, 0, 0.47), (0.12, 0, 0.06), 0.06)], (0.12, 0, 0.47)),
    ("thigh.R", "torso", [("capsule", (-0.11, 0, 0.85), (-0.12, 0, 0.47), 0.08)], (-0.11, 0, 0.85)),
    ("shin.R", "thigh.R", [("capsule", (-0.12, 0, 0.47), (-0.12, 0, 0.06), 0.06)], (-0.12, 0, 0.47)),
]

SERPENT = [  # a neck/tail chain: six segments along +X, rising
    (f"seg{i}", None if i == 0 else f"seg{i - 1}",
     [("capsule", (0.32 * i, 0, 0.3 + 0.06 * i), (0.32 * (i + 1), 0, 0.3 + 0.06 * (i + 1)), 0.12 - 0.01 * i)],
     (0.32 * i, 0, 0.3 + 0.06 * i)) for i in range(6)
]

ROBOT_ARM = [  # base plate and a four-joint arm going up and over
    ("base", None, [("box", (0, 0, 0.08), (0.3, 0.3, 0.08), 0.02)], (0, 0, 0.08)),
    ("link1", "base", [("capsule", (0, 0, 0.16), (0, 0, 0.6), 0.09)], (0, 0, 0.16)),
    ("link2", "link1", [("capsule", (0, 0, 0.6), (0.35, 0, 0.95), 0.08)], (0, 0, 0.6)),
    ("link3", "link2", [("capsule", (0.35, 0, 0.95), (0.75, 0, 0.95), 0.07)], (0.35, 0, 0.95)),
    ("gripper", "link3", [("capsule", (0.75, 0, 0.95), (0.95, 0, 0.82), 0.05)], (0.75, 0, 0.95)),
]

LIDDED_BOX = [  # a rigid chest with a lid hinged along its back edge
    ("box", None, [("box", (0, 0, 0.3), (0.5, 0.35, 0.3), 0.03)], (0, 0, 0.3)),
    ("lid", "box", [("box", (0, 0, 0.66), (0.5, 0.35, 0.06), 0.03)], (0, 0.35, 0.6), (-1.0, 0, 0)),
]

ASSETS = {"quadruped": QUADRUPED, "biped": BIPED, "serpent": SERPENT, "robot_arm": ROBOT_ARM,
          "lidded_box": LIDDED_BOX}


@dataclass
class Asset:
    vertices: np.ndarray  # (N, 3) float32
    faces: np.ndarray  # (M, 3) int32
    labels: np.ndarray  # (N,) int32 part index
    names: list[str]
    parents: np.ndarray  # (P,) int32, -1 for the root
    joints: np.ndarray  # (P, 3) float32, attachment point of each part (root: its own pivot)
    axes: np.ndarray  # (P, 3) float32 hinge axis of each part (zero: the oracle's default)


def _sdf(p: np.ndarray, prim: tuple) -> np.ndarray:
    kind = prim[0]
    if kind == "capsule":
        a, b, r = np.asarray(prim[1], float), np.asarray(prim[2], float), prim[3]
        ab = b - a
        denom = float(ab @ ab)
        t = np.clip(((p - a) @ ab) / denom, 0, 1) if denom > 0 else np.zeros(len(p))
        return np.linalg.norm(p - (a + t[:, None] * ab), axis=1) - r
    if kind == "box":
        c, h, r = np.asarray(prim[1], float), np.asarray(prim[2], float), prim[3]
        q = np.abs(p - c) - (h - r)
        return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0) - r
    raise ValueError(kind)


def _bounds(prim: tuple) -> tuple[np.ndarray, np.ndarray]:
    if prim[0] == "capsule":
        pts = np.array([prim[1], prim[2]], float)
        return pts.min(0) - prim[3], pts.max(0) + prim[3]
    c, h = np.asarray(prim[1], float), np.asarray(prim[2], float)
    return c - h, c + h


def _smooth_min(d: np.ndarray, k: float) -> np.ndarray:
    """Exponential smooth minimum over axis 0 (blends primitives into one surface)."""
    m = d.min(0)
    return m - k * np.log(np.exp(-(d - m) / k).sum(0))


def subdivide(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint subdivision: every triangle into four, new vertices at edge midpoints."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    uniq, inv = np.unique(e, axis=0, return_inverse=True)
    mid = len(vertices) + inv.reshape(3, -1).T  # (M, 3): midpoints of edges 01, 12, 20
    v = np.concatenate([vertices, 0.5 * (vertices[uniq[:, 0]] + vertices[uniq[:, 1]])])
    a, b, c = faces.T
    m01, m12, m20 = mid.T
    f = np.concatenate([np.stack([a, m01, m20], 1), np.stack([m01, b, m12], 1),
                        np.stack([m20, m12, c], 1), np.stack([m01, m12, m20], 1)])
    return v, f


def build_asset(spec: list, resolution: int = 96, blend: float = 0.035, subdivisions: int = 0) -> Asset:
    """Mesh ``spec`` with marching cubes (``resolution`` cells along its longest side)."""
    from skimage.measure import marching_cubes

    names = [p[0] for p in spec]
    prims = [(i, pr) for i, p in enumerate(spec) for pr in p[2]]
    lo = np.min([_bounds(pr)[0] for _, pr in prims], 0) - 0.1
    hi = np.max([_bounds(pr)[1] for _, pr in prims], 0) + 0.1
    step = (hi - lo).max() / resolution
    axes = [np.arange(lo[k], hi[k] + step, step) for k in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    sdf = _smooth_min(np.stack([_sdf(grid, pr) for _, pr in prims]), blend)
    verts, faces, _, _ = marching_cubes(sdf.reshape([len(a) for a in axes]), 0.0, spacing=(step,) * 3)
    verts = verts + lo  # skimage orients these faces outwards for a negative-inside field
    for _ in range(subdivisions):
        verts, faces = subdivide(verts, faces)
    owner = np.array([i for i, _ in prims])
    labels = owner[np.stack([_sdf(verts, pr) for _, pr in prims]).argmin(0)]
    parents = np.array([names.index(p[1]) if p[1] else -1 for p in spec], np.int32)
    joints = np.array([p[3] for p in spec], np.float32)
    axes = np.array([p[4] if len(p) > 4 else (0, 0, 0) for p in spec], np.float32)
    return Asset(verts.astype(np.float32), faces.astype(np.int32), labels.astype(np.int32), names, parents, joints,
                 axes)


def make_creature(resolution: int = 96) -> Asset:
    """The bundled sample: a quadruped with neck, head and a two-segment tail (~7k vertices)."""
    return build_asset(QUADRUPED, resolution)


def save_asset(asset: Asset, path) -> None:
    """Write an asset as an npz the Blender side can import (no pickles)."""
    from ..jobdir import write_npz_atomic

    write_npz_atomic(path, vertices=asset.vertices, faces=asset.faces, labels=asset.labels,
                     parents=asset.parents, joints=asset.joints, axes=asset.axes, names=np.array(asset.names))
