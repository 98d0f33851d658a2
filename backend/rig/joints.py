"""Joints from the parts' motion: the pivot that best explains a child's motion relative to its
parent across the frames.

A child's relative motion in frame t is A_t = W_parent(t)⁻¹ · W_child(t) (rest pose → rest pose of
the parent's frame). A pivot q stays put: R_t q + T_t = q for every t, i.e. (R_t − I) q = −T_t,
solved by least squares over the frames. A hinge (all R_t about one axis) leaves q free along the
axis; a small pull towards the contact centre (the boundary between the two parts) takes the
point of the axis nearest it, and decides where the motion says nothing. The contact centre is
kept where the clip does not move the joint (largest relative rotation under ``min_angle``) and
where the fit explains the motion poorly or lands beyond the child's reach. Every joint records
which.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation


@dataclass
class Joint:
    position: np.ndarray  # (3,)
    method: str  # "motion" or "contact"
    confidence: float  # 0..1
    angle_deg: float  # largest relative rotation over the frames
    axis: np.ndarray | None  # (3,) hinge axis when the motion is about one axis, else None
    residual: float  # rms of (R_t − I) q + T_t, same units as positions


def relative_motion(world: np.ndarray, parent: int, child: int) -> np.ndarray:
    """(T, 4, 4) the child's motion in its parent's rest frame."""
    return np.einsum("tij,tjk->tik", np.linalg.inv(world[:, parent]), world[:, child])


def fit_pivot(rel: np.ndarray, contact: np.ndarray, max_shift: float, min_angle: float = 4.0,
              prior: float = 2.5e-3, max_residual: float = 0.02) -> Joint:
    """The pivot of relative motions rel (T, 4, 4) (frame 0 the identity), pulled towards
    ``contact`` with weight ``prior`` (relative to one frame of a 1-radian rotation), within
    ``max_shift`` of it."""
    rots = Rotation.from_matrix(rel[1:, :3, :3])
    vec = rots.as_rotvec()
    angles = np.degrees(np.linalg.norm(vec, axis=1))
    biggest = float(angles.max()) if len(angles) else 0.0
    if biggest < min_angle:
        return Joint(contact.copy(), "contact", 0.0, biggest, None, 0.0)
    A = (rel[1:, :3, :3] - np.eye(3)).reshape(-1, 3)
    b = -rel[1:, :3, 3].reshape(-1)
    q = np.linalg.solve(A.T @ A + prior * np.eye(3), A.T @ b + prior * contact)
    resid = float(np.sqrt(np.mean((A @ q - b) ** 2)))
    axes = vec[angles > 0.5 * biggest] / np.linalg.norm(vec[angles > 0.5 * biggest], axis=1, keepdims=True)
    mean_axis = axes.mean(0)
    hinge = mean_axis / np.linalg.norm(mean_axis) if np.linalg.norm(mean_axis) > 0.97 else None
    if float(np.linalg.norm(q - contact)) > max_shift or resid > max_residual:
        return Joint(contact.copy(), "contact", 0.0, biggest, hinge, resid)
    conf = float(np.clip((biggest - min_angle) / 10.0, 0, 1) * np.clip(1 - resid / max_residual, 0, 1))
    return Joint(q, "motion", conf, biggest, hinge, resid)


FLAT = 0.1  # a contact patch thinner than this share of its length is flat (face to face: a lid's)
MIN_STAY = 0.1  # the least staying score of the hinge side's band (else the score²-weighted mean of the patch)
RIM = 0.15  # share of a broad contact's patch, at each end of its axes, whose staying score names the hinge's side


def contact_vertices(vertices: np.ndarray, labels: np.ndarray, child: int, parent: int,
                     reach: float = 0.015) -> np.ndarray:
    """Indices of the child's vertices within ``reach`` × the diagonal of the parent's (the contact
    patch, whether the two share edges or are separate pieces)."""
    from scipy.spatial import cKDTree

    vc, vp = np.nonzero(labels == child)[0], np.nonzero(labels == parent)[0]
    if len(vc) == 0 or len(vp) == 0:
        return np.zeros(0, int)
    diag = float(np.linalg.norm(np.ptp(vertices, axis=0)))
    d, _ = cKDTree(vertices[vp]).query(vertices[vc])
    return vc[d <= reach * diag]


def broad_contact(vertices: np.ndarray, labels: np.ndarray, child: int, patch: np.ndarray,
                  min_spread: float = 0.5) -> bool:
    """Whether the contact patch (vertex indices) spreads over ≥ ``min_spread`` of the child's
    length (a lid on a box, not a limb's ring): its pivot may lie anywhere along it, far from
    its centre."""
    pts = vertices[labels == child]
    if len(patch) < 3 or len(pts) < 3:
        return False
    length = np.ptp(pts @ np.linalg.svd(pts - pts.mean(0), full_matrices=False)[2][0])
    return bool(np.linalg.norm(vertices[patch] - vertices[patch].mean(0), axis=1).max() >= min_spread * length)


def broad_joints(vertices: np.ndarray, labels: np.ndarray,
                 parent: np.ndarray) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """The contact patch of every non-root part with its parent ({part: vertex indices}) and which
    of them are broad (P,) bool (broad_contact): the tracker pulls those pivots less, and their
    hinges are looked for on the patch."""
    patches = {c: contact_vertices(vertices, labels, c, int(parent[c])) for c in range(len(parent)) if parent[c] >= 0}
    broad = np.zeros(len(parent), bool)
    for c, patch in patches.items():
        broad[c] = broad_contact(vertices, labels, c, patch)
    return patches, broad


def flat_contact(vertices: np.ndarray, patch: np.ndarray) -> bool:
    """Whether the contact patch (vertex indices) is flat, thinner than FLAT of its length (two
    faces resting on each other: a lid on its box; not a shoulder's socket or a cap)."""
    if len(patch) < 3:
        return False
    s = np.linalg.svd(vertices[patch] - vertices[patch].mean(0), compute_uv=False)
    return bool(s[2] <= FLAT * s[0])


def hinge_on_contact(vertices: np.ndarray, labels: np.ndarray, child: int, patch: np.ndarray,
                     label_images: np.ndarray, present: np.ndarray, views, part_id: int,
                     min_spread: float = 0.5, edge_quantile: float = 0.98,
                     towards: np.ndarray | None = None) -> np.ndarray | None:
    """For a broad contact (the patch spreads over ≥ ``min_spread`` of the child's length: a lid
    on a box, not a limb's ring), the hinge: a turn leaves the patch's vertices near the hinge in
    place, so they keep landing on the child's pixels in the later frames while those far from it
    leave. Each patch vertex scores the share of (frame ≥ 1, view) where its rest position still
    shows the child; of the patch's four ends along its principal axes (a hinge runs along an
    edge), the one whose outer band (RIM) scores highest is the hinge's side, and the hinge is
    the middle of the patch's far edge there (the ``edge_quantile`` of the positions along that
    axis, halfway across): the point of a hinge axis nearest the contact. Bands, not a
    score-weighted mean: noisy part images (bleeding, blobs) raise every vertex's score alike,
    which drags a weighted mean to the centre but leaves the bands' order. Where the patch is
    not flat (FLAT: a shoulder's socket, a cap) or no band stays the child's in MIN_STAY of the
    later images (a contact made broad by noisy labels), the score²-weighted mean of the patch.
    None for a narrow contact or when nothing stays.
    ``towards``: a pivot found otherwise (the child's free rigid
    motion); the end of the patch in its direction is the hinge's side instead."""
    if not broad_contact(vertices, labels, child, patch, min_spread):
        return None
    score = np.zeros(len(patch))
    count = 0
    h, w = label_images.shape[2:]
    for t in range(1, label_images.shape[0]):
        for v in np.nonzero(present[t])[0]:
            u, _ = views.project(vertices[patch], v)
            px = np.round(u).astype(int)
            ok = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
            score[ok] += label_images[t, v][px[ok, 1], px[ok, 0]] == part_id
            count += 1
    if towards is None and (not count or score.max() <= 0):
        return None
    p = vertices[patch]
    centre = p.mean(0)
    plane = np.linalg.svd(p - centre, full_matrices=False)[2][:2]  # (2, 3) the patch's own axes
    xy = (p - centre) @ plane.T
    share = score / max(count, 1)
    ends = (np.array([1.0, 0]), np.array([-1.0, 0]), np.array([0, 1.0]), np.array([0, -1.0]))
    if towards is not None:
        d = max(ends, key=lambda e: float(e @ (plane @ (towards - centre))))
    else:
        best = -1.0
        for e in ends:
            along = xy @ e
            rim = along >= np.quantile(along, 1 - RIM)  # the patch's outer band towards e
            if share[rim].mean() > best:
                best, d = float(share[rim].mean()), e
        if best < MIN_STAY or not flat_contact(vertices, patch):  # no hinge along an edge: where anything stays
            wts = share ** 2
            return (p * wts[:, None]).sum(0) / wts.sum()
    g = d @ plane
    side = np.array([-d[1], d[0]])
    along, across = xy @ d, xy @ side
    lo, hi = np.quantile(across, [1 - edge_quantile, edge_quantile])
    mid = 0.5 * (lo + hi)  # the middle of the patch's extent along the hinge (its mean leans with stray labels)
    band = np.abs(across - mid) <= 0.1 * (hi - lo)  # the patch along the line from its middle towards the hinge
    return centre + mid * (side @ plane) + float(np.quantile(along[band] if band.sum() >= 3 else along,
                                                             edge_quantile)) * g


def hinge_axis(vertices: np.ndarray, patch: np.ndarray, hinge: np.ndarray) -> np.ndarray:
    """(3,) unit axis of a hinge placed on a flat contact patch's edge (hinge_on_contact): in the
    patch's plane, across the line from the patch's centre to the hinge."""
    p = vertices[patch]
    centre = p.mean(0)
    normal = np.linalg.svd(p - centre, full_matrices=False)[2][2]
    axis = np.cross(normal, hinge - centre)
    return axis / max(float(np.linalg.norm(axis)), 1e-12)


def mirror_joints(joints: np.ndarray, parent: np.ndarray, mirror_of: np.ndarray, side: np.ndarray,
                  axis: int | None, plane: float) -> np.ndarray:
    """Joints (P, 3) made symmetric about the mirror plane (normal ``axis``, at ``plane`` along
    it): each joint of a mirror pair whose parents are mirror images too (or the same mid part)
    becomes the mean of itself and its partner's reflection, and a mid part's joint lies on the
    plane. The two sides' pivots come from different views and labels, so their errors are
    largely independent: a rigging TD's symmetrise. Without symmetry, the joints unchanged."""
    out = joints.copy()
    if axis is None:
        return out
    for k in range(len(parent)):
        q = parent[k]
        if q < 0:
            continue
        m = mirror_of[k]
        if m >= 0:
            qm = parent[m]
            if qm >= 0 and (qm == mirror_of[q] or (qm == q and side[q] == 0)):
                r = joints[m].copy()
                r[axis] = 2 * plane - r[axis]
                out[k] = 0.5 * (joints[k] + r)
        elif side[k] == 0 and side[q] == 0:
            out[k, axis] = plane
    return out
