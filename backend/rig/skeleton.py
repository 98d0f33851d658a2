"""Bones from the structure and the joints: one deform bone per part under an upright ``root``.

A part's bone runs from its joint to the joint of the child that continues its chain (the spine's
next part, a limb's next segment; its only child otherwise), or, at a chain's end, towards the
far end of the part. The root part's bone spans the part towards the spine's next joint. The
non-deform ``root`` bone stands upright on the ground under the root part. A bone whose joint
bends about one axis (a hinge, from the clip's motion) has its roll set so that its local X axis
is that axis, as Rigify rolls limbs: rotating about X bends the joint.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from .structure import MID, Structure

ROOT = "root"


def roll_for_x_axis(head: np.ndarray, tail: np.ndarray, x_axis: np.ndarray) -> float:
    """Blender's bone roll that points the bone's local X axis along ``x_axis`` (projected
    perpendicular to the bone). Roll 0 is the shortest rotation of +Y onto the bone (Blender's
    convention; a bone along −Y gets the half turn about Z)."""
    y = np.asarray(tail, float) - np.asarray(head, float)
    y /= np.linalg.norm(y)
    if y[1] < -1 + 1e-6:
        r0 = np.diag([-1.0, -1.0, 1.0])
    else:
        r0 = Rotation.align_vectors([y], [[0.0, 1.0, 0.0]])[0].as_matrix()
    x0 = r0[:, 0]
    x = np.asarray(x_axis, float) - (np.asarray(x_axis, float) @ y) * y
    if np.linalg.norm(x) < 1e-9:
        return 0.0
    x /= np.linalg.norm(x)
    return float(np.arctan2(y @ np.cross(x0, x), x0 @ x))


def _continuation(s: Structure, k: int) -> int | None:
    """The child that continues part k's chain, if any."""
    kids = [int(c) for c in np.nonzero(s.parent == k)[0]]
    if not kids:
        return None
    if k in s.spine:
        i = s.spine.index(k)
        toward_head = s.spine[i + 1] if i + 1 < len(s.spine) else None
        if toward_head in kids:
            return toward_head
        mids = [c for c in kids if s.side[c] == MID]
        if k != s.root and len(mids) == 1:
            return mids[0]
    if len(kids) == 1:
        return kids[0]
    same = [c for c in kids if s.side[c] == s.side[k] and s.side[k] != MID]
    return max(same, key=lambda c: s.areas[c]) if same else None


def build_bones(vertices: np.ndarray, labels: np.ndarray, s: Structure, joints: np.ndarray, names: list[str],
                hinge_axes: np.ndarray | None = None, joint_info: list[dict] | None = None) -> dict:
    """The skeleton dict (docs/job-folder.md) in the space of ``vertices``: bones, joints, parts.

    joints (P, 3): each non-root part's joint; hinge_axes (P, 3): a part's bending axis, zero when
    not a hinge; joint_info: per part, extra fields recorded on its joint (method, confidence)."""
    n = len(s.parent)
    lo, hi = vertices.min(0), vertices.max(0)
    size = float(np.linalg.norm(hi - lo))
    heads, tails = np.zeros((n, 3)), np.zeros((n, 3))
    for k in range(n):
        pts = vertices[labels == k]
        if not len(pts):
            pts = s.centroids[k][None]
        nxt = _continuation(s, k)
        if k == s.root:
            if nxt is not None:
                d = joints[nxt] - s.centroids[k]
                if np.linalg.norm(d) < 1e-6:
                    d = joints[nxt] - pts.mean(0) + [0, 0, 1e-3]
                d /= np.linalg.norm(d)
                heads[k] = s.centroids[k] + d * min(np.percentile((pts - s.centroids[k]) @ d, 5), -0.02 * size)
                tails[k] = joints[nxt]
            else:
                axis = np.linalg.svd(pts - pts.mean(0), full_matrices=False)[2][0] if len(pts) > 2 else np.array(
                    [0, 0, 1.0])
                if axis[2] < 0:
                    axis = -axis
                proj = (pts - s.centroids[k]) @ axis
                heads[k] = s.centroids[k] + axis * np.percentile(proj, 10)
                tails[k] = s.centroids[k] + axis * max(np.percentile(proj, 90), np.percentile(proj, 10) + 0.02 * size)
            continue
        heads[k] = joints[k]
        if nxt is not None and np.linalg.norm(joints[nxt] - joints[k]) > 0.01 * size:
            tails[k] = joints[nxt]
            continue
        d = s.centroids[k] - heads[k]
        if np.linalg.norm(d) < 1e-3 * size and len(pts) > 2:
            d = np.linalg.svd(pts - pts.mean(0), full_matrices=False)[2][0]
        if np.linalg.norm(d) < 1e-9:
            d = np.array([0.0, 0, 1])
        d /= np.linalg.norm(d)
        reach = np.percentile((pts - heads[k]) @ d, 95)
        tails[k] = heads[k] + d * max(reach, 0.02 * size)
    for k in range(n):
        if np.linalg.norm(tails[k] - heads[k]) < 1e-3 * size:
            tails[k] = heads[k] + np.array([0, 0, 0.05 * size])
    rolls = np.zeros(n)
    if hinge_axes is not None:
        for k in range(n):
            if np.linalg.norm(hinge_axes[k]) > 0:
                rolls[k] = roll_for_x_axis(heads[k], tails[k], hinge_axes[k])
    height = hi[2] - lo[2]
    root_head = np.array([s.centroids[s.root][0], s.centroids[s.root][1], lo[2]])
    bones = [{"name": ROOT, "parent": None, "head": root_head.tolist(),
              "tail": (root_head + [0, 0, max(0.25 * height, 0.05 * size)]).tolist(), "roll": 0.0,
              "deform": False, "part": None}]
    order = _order(s.parent)
    for k in order:
        bones.append({"name": names[k], "parent": ROOT if s.parent[k] < 0 else names[s.parent[k]],
                      "head": heads[k].tolist(), "tail": tails[k].tolist(), "roll": float(rolls[k]),
                      "deform": True, "part": int(k)})
    info = [dict(i) for i in (joint_info or [{} for _ in range(n)])]
    if hinge_axes is not None:
        for k in range(n):
            if np.linalg.norm(hinge_axes[k]) > 0:
                info[k]["bend_axis"] = (hinge_axes[k] / np.linalg.norm(hinge_axes[k])).tolist()
    return {"bones": bones,
            "joints": [{"part": int(k), "parent_part": int(s.parent[k]), "position": joints[k].tolist(), **info[k]}
                       for k in order if s.parent[k] >= 0],
            "parts": [{"part": int(k), "bone": names[k], "vertices": int(s.sizes[k]),
                       "centroid": s.centroids[k].tolist(), "side": int(s.side[k])} for k in order],
            "root_part": int(s.root), "mirror_axis": s.mirror_axis}


def _order(parent: np.ndarray) -> list[int]:
    """Parts with every parent before its children (a stable breadth-first order)."""
    out = [int(k) for k in np.nonzero(parent < 0)[0]]
    i = 0
    while i < len(out):
        out += [int(c) for c in np.nonzero(parent == out[i])[0]]
        i += 1
    return out


def build_skeleton(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, n_parts: int) -> dict:
    """Skeleton of a labelled mesh without motion: joints at the contact centres."""
    from .naming import bone_names
    from .structure import build_structure

    s = build_structure(np.asarray(vertices, float), np.asarray(faces), np.asarray(labels), n_parts)
    return build_bones(np.asarray(vertices, float), np.asarray(labels), s, s.contact_centre,
                       bone_names(s, np.asarray(vertices, float), np.asarray(labels)))
