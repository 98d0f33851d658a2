"""Motion of the parts across frames: centroid tracks, pivot refinement, per-frame transforms.

Each part's 3D centroid per frame is triangulated from its 2D centroids in all views (the rays of
the orbit cameras, through the per-view similarity fitted at lifting); only its displacement from
frame 0 is used, added to the mesh centroid, which cancels part of the bias of occlusion.
Per-frame transforms rotate each part about its joint, parents first, by the smallest rotation
that carries its rest direction (joint → centroid) to its direction in that frame.

``pivot`` can move a child's joint to the pivot of its motion relative to its parent (the point
equally far from its frame centroids, closest to the boundary joint); it is off by default: on
the benchmark the triangulated centroids of occluded or thin parts are too biased for it to help
(docs/rig.md).
"""

from __future__ import annotations

import numpy as np

from ..cameras import camera_pose, focal_px


def _ray(cam: dict, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R, C = camera_pose(cam)
    f = focal_px(cam)
    d = R.T @ np.array([(uv[0] - cam["width"] / 2) / f, (uv[1] - cam["height"] / 2) / f, 1.0])
    return C, d / np.linalg.norm(d)


def triangulate(rays: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray | None:
    """The point closest (weighted least squares) to rays (origin, unit direction, weight)."""
    A, b = np.zeros((3, 3)), np.zeros(3)
    for o, d, w in rays:
        m = w * (np.eye(3) - np.outer(d, d))
        A += m
        b += m @ o
    if len(rays) < 2 or np.linalg.cond(A) > 1e8:
        return None
    return np.linalg.solve(A, b)


def centroid_tracks(label_images: np.ndarray, present: np.ndarray, cameras: list[dict], fits: dict,
                    part_ids: list[int], rest_centroids: np.ndarray, min_pixels: int = 30) -> np.ndarray:
    """(T, P, 3) part centroids per frame (frame 0 = the mesh centroids); NaN where unknown."""
    n_t = label_images.shape[0]
    out = np.full((n_t, len(part_ids), 3), np.nan)
    tri = np.full_like(out, np.nan)
    for t in range(n_t):
        for p, pid in enumerate(part_ids):
            rays = []
            for v in range(label_images.shape[1]):
                if not present[t, v] or v not in fits:
                    continue
                ys, xs = np.nonzero(label_images[t, v] == pid)
                if len(xs) < min_pixels:
                    continue
                s, c0, c1 = fits[v]
                uv = np.array([xs.mean(), ys.mean()])
                uv = c0 + (uv - c1) / s if s != 1.0 or np.any(c1 != c0) else uv
                rays.append((*_ray(cameras[v], uv), float(len(xs))))
            x = triangulate(rays)
            if x is not None:
                tri[t, p] = x
    for p in range(len(part_ids)):
        if np.isfinite(tri[0, p]).all():
            out[:, p] = rest_centroids[p] + (tri[:, p] - tri[0, p])
        out[0, p] = rest_centroids[p]
    return out


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking direction a to direction b."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(a @ b)
    if c < -1 + 1e-9:  # opposite: turn half way round any perpendicular axis
        axis = np.cross(a, [1.0, 0, 0]) if abs(a[0]) < 0.9 else np.cross(a, [0, 1.0, 0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1 + c)


def pivot(points: np.ndarray, prior: np.ndarray, max_shift: float) -> np.ndarray:
    """The point equally far from every row of ``points`` that is closest to ``prior``;
    ``prior`` when the points barely move or the answer lies further than ``max_shift``."""
    p0, rest = points[0], points[1:]
    if len(rest) == 0 or np.linalg.norm(rest - p0, axis=1).max() < 0.02:
        return prior
    A = 2 * (p0 - rest)
    b = (p0 @ p0) - np.einsum("ij,ij->i", rest, rest)
    # min |A j - b|^2 + lam |j - prior|^2, lam small: fixes the free direction(s) at the prior
    lam = 1e-4 * np.trace(A.T @ A)
    j = np.linalg.solve(A.T @ A + lam * np.eye(3), A.T @ b + lam * prior)
    return j if np.linalg.norm(j - prior) <= max_shift else prior


def _world(rot: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """4×4 transform rotating about src and moving src to dst."""
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = dst - rot @ src
    return m


def solve_motion(parent: np.ndarray, joints: np.ndarray, tracks: np.ndarray, extents: np.ndarray,
                 refine: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(refined joints (P, 3), world transforms (T, P, 4, 4)) from centroid tracks (T, P, 3)."""
    n_t, n_p = tracks.shape[:2]
    order = sorted(range(n_p), key=lambda k: _depth(parent, k))
    joints = joints.copy()
    world = np.tile(np.eye(4), (n_t, n_p, 1, 1))
    for p in order:
        q = parent[p]
        track = tracks[:, p]
        known = np.isfinite(track).all(1)
        if q < 0:
            for t in range(n_t):  # the root follows its centroid (translation only)
                if known[t]:
                    world[t, p, :3, 3] = track[t] - track[0]
            continue
        if refine and known.sum() >= 3:
            inv = [np.linalg.inv(world[t, q]) for t in range(n_t)]
            local = np.array([inv[t][:3, :3] @ track[t] + inv[t][:3, 3] for t in range(n_t) if known[t]])
            joints[p] = pivot(local, joints[p], 0.75 * extents[p])
        rest_dir = track[0] - joints[p]
        for t in range(n_t):
            jt = world[t, q][:3, :3] @ joints[p] + world[t, q][:3, 3]
            rot_q = world[t, q][:3, :3]
            if not known[t] or np.linalg.norm(rest_dir) < 1e-6 or np.linalg.norm(track[t] - jt) < 1e-6:
                world[t, p] = world[t, q]
                continue
            local_rot = rotation_between(rest_dir, rot_q.T @ (track[t] - jt))
            world[t, p] = _world(rot_q @ local_rot, joints[p], jt)
    return joints, world


def _depth(parent: np.ndarray, k: int) -> int:
    d = 0
    while parent[k] >= 0:
        k, d = parent[k], d + 1
    return d



def stable_joints(vertices: np.ndarray, labels: np.ndarray, parent: np.ndarray, joints: np.ndarray,
                  boundary: dict[int, np.ndarray], label_images: np.ndarray, present: np.ndarray,
                  cameras: list[dict], fits: dict, part_ids: list[int], moved: np.ndarray,
                  power: float = 2.0, min_spread: float = 0.5) -> np.ndarray:
    """Move each moving child's joint towards the part of its boundary that stays put, for
    broad contacts (boundary spread ≥ ``min_spread`` × the part's length, as a lid on a box;
    a limb's small contact ring keeps its centre).

    A rotation leaves its pivot in place: boundary vertices near a hinge keep projecting onto the
    child's pixels in every frame and view, those far from it leave them. Each boundary vertex
    scores the fraction of (frame ≥ 1, view) where its rest position still lands on the child;
    the joint becomes the score^power-weighted mean of the boundary (the plain boundary centre
    when all score alike, as for a ball joint)."""
    from ..cameras import project

    out = joints.copy()
    n_t, n_v = label_images.shape[:2]
    for c, idx in boundary.items():
        if parent[c] < 0 or not moved[c] or len(idx) < 3:
            continue
        pts = vertices[labels == c]
        length = np.ptp(pts @ np.linalg.svd(pts - pts.mean(0), full_matrices=False)[2][0])
        if np.linalg.norm(vertices[idx] - vertices[idx].mean(0), axis=1).max() < min_spread * length:
            continue
        score = np.zeros(len(idx))
        count = 0
        for t in range(1, n_t):
            for v in range(n_v):
                if not present[t, v] or v not in fits:
                    continue
                uv, _ = project(vertices[idx], cameras[v])
                s, c0, c1 = fits[v]
                uv = c1 + s * (uv - c0) if s != 1.0 or np.any(c0 != c1) else uv
                px = np.round(uv).astype(int)
                h, w = label_images.shape[2:]
                ok = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
                hit = np.zeros(len(idx))
                hit[ok] = label_images[t, v][px[ok, 1], px[ok, 0]] == part_ids[c]
                score += hit
                count += 1
        if count and score.max() > 0:
            wts = (score / count) ** power
            out[c] = (vertices[idx] * wts[:, None]).sum(0) / wts.sum()
    return out
