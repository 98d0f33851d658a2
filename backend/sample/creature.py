"""A procedural articulated creature with its ground-truth rig.

The creature is the smooth union of capsules (one or more per part), meshed by marching cubes,
so it is one watertight surface with organic joints. Every vertex carries the part of the
capsule nearest to it; every part has a parent and a joint (where it attaches to its parent).
Body along +X (head at +X, tail at -X), legs down -Z: the front view (-Y) shows its profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# part name, parent, capsules [(a, b, radius)], joint (attachment point to the parent)
_PARTS = [
    ("body", None, [((-0.55, 0, 0.75), (0.45, 0, 0.78), 0.27)], (0.0, 0, 0.76)),
    ("neck", "body", [((0.5, 0, 0.86), (0.86, 0, 1.18), 0.11)], (0.55, 0, 0.9)),
    ("head", "neck", [((0.95, 0, 1.28), (0.95, 0, 1.28), 0.17), ((1.0, 0, 1.24), (1.22, 0, 1.16), 0.08)],
     (0.86, 0, 1.18)),
    ("leg_front.L", "body", [((0.32, 0.17, 0.62), (0.36, 0.2, 0.36), 0.09)], (0.32, 0.17, 0.62)),
    ("shin_front.L", "leg_front.L", [((0.36, 0.2, 0.36), (0.36, 0.2, 0.05), 0.07)], (0.36, 0.2, 0.36)),
    ("leg_front.R", "body", [((0.32, -0.17, 0.62), (0.36, -0.2, 0.36), 0.09)], (0.32, -0.17, 0.62)),
    ("shin_front.R", "leg_front.R", [((0.36, -0.2, 0.36), (0.36, -0.2, 0.05), 0.07)], (0.36, -0.2, 0.36)),
    ("leg_back.L", "body", [((-0.42, 0.17, 0.62), (-0.46, 0.2, 0.36), 0.1)], (-0.42, 0.17, 0.62)),
    ("shin_back.L", "leg_back.L", [((-0.46, 0.2, 0.36), (-0.42, 0.2, 0.05), 0.07)], (-0.46, 0.2, 0.36)),
    ("leg_back.R", "body", [((-0.42, -0.17, 0.62), (-0.46, -0.2, 0.36), 0.1)], (-0.42, -0.17, 0.62)),
    ("shin_back.R", "leg_back.R", [((-0.46, -0.2, 0.36), (-0.42, -0.2, 0.05), 0.07)], (-0.46, -0.2, 0.36)),
    ("tail", "body", [((-0.75, 0, 0.82), (-1.02, 0, 0.95), 0.07)], (-0.75, 0, 0.82)),
    ("tail_tip", "tail", [((-1.02, 0, 0.95), (-1.25, 0, 1.12), 0.05)], (-1.02, 0, 0.95)),
]
# the body capsule above stops short of the tail root; bridge it with a thinner capsule
_BRIDGES = [("body", ((-0.75, 0, 0.8), (-0.55, 0, 0.76), 0.12))]


@dataclass
class Creature:
    vertices: np.ndarray  # (N, 3) float32
    faces: np.ndarray  # (M, 3) int32
    labels: np.ndarray  # (N,) int32 part index
    names: list[str]
    parents: np.ndarray  # (P,) int32, -1 for the root
    joints: np.ndarray  # (P, 3) float32, attachment point of each part (root: its own pivot)
    tails: np.ndarray = field(default=None)  # (P, 3) far end of each part's main capsule


def _capsule_sdf(p: np.ndarray, a, b, r) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ab = b - a
    denom = float(ab @ ab)
    t = np.clip(((p - a) @ ab) / denom, 0, 1) if denom > 0 else np.zeros(len(p))
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1) - r


def _smooth_min(d: np.ndarray, k: float) -> np.ndarray:
    """Exponential smooth minimum over axis 0 (blends capsules into one surface)."""
    m = d.min(0)
    return m - k * np.log(np.exp(-(d - m) / k).sum(0))


def make_creature(resolution: int = 96, blend: float = 0.035) -> Creature:
    """Mesh the creature with marching cubes on a grid of ``resolution`` cells along its length."""
    from skimage.measure import marching_cubes

    caps = [(i, c) for i, (_, _, cs, _) in enumerate(_PARTS) for c in cs]
    names = [p[0] for p in _PARTS]
    caps += [(names.index(n), c) for n, c in _BRIDGES]
    lo, hi = np.array([-1.45, -0.4, -0.1]), np.array([1.4, 0.4, 1.55])
    step = (hi - lo).max() / resolution
    axes = [np.arange(lo[k], hi[k] + step, step) for k in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    d = np.stack([_capsule_sdf(grid, *c) for _, c in caps])
    sdf = _smooth_min(d, blend).reshape(len(axes[0]), len(axes[1]), len(axes[2]))
    verts, faces, _, _ = marching_cubes(sdf, 0.0, spacing=(step, step, step))
    verts = verts + lo
    faces = faces[:, ::-1]  # outward-facing winding
    dv = np.stack([_capsule_sdf(verts, *c) for _, c in caps])
    labels = np.array([i for i, _ in caps])[dv.argmin(0)]
    parents = np.array([names.index(p[1]) if p[1] else -1 for p in _PARTS], np.int32)
    joints = np.array([p[3] for p in _PARTS], np.float32)
    tails = np.array([p[2][-1][1] if len(p[2]) == 1 else p[2][0][1] for p in _PARTS], np.float32)
    return Creature(verts.astype(np.float32), faces.astype(np.int32), labels.astype(np.int32),
                    names, parents, joints, tails)


def save_creature(creature: Creature, path) -> None:
    """Write the creature as an npz the Blender side can import (no pickles)."""
    from ..jobdir import write_npz_atomic

    write_npz_atomic(path, vertices=creature.vertices, faces=creature.faces, labels=creature.labels,
                     parents=creature.parents, joints=creature.joints, tails=creature.tails,
                     names=np.array(creature.names))
