"""Each part's own rigid motion per frame, fitted to its masks free of the articulated model.

The tracker (tracking.py) moves every part about a pivot pulled towards the contact with its
parent; where the true pivot lies far from the contact (a lid hinged at its back edge, a leg
whose pivot is buried high in the body), that pull holds the pivot back and the rotation short.
Here each non-root part, frame by frame, gets a free 6-degree-of-freedom transform fitted to the
same data the tracker uses (its own mask's edge and interior points, the object's outline;
Cauchy-weighted, Levenberg–Marquardt), starting from the tracked pose; joints.fit_pivot then
finds the pivot that the free motions relative to the tracked parent share.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from .tracking import _cross, _Rows


def _part_rows(tracker, rows: _Rows, part: int) -> _Rows:
    """The rows of the points on ``part`` (a seam's midpoint counts for the part whose mask it
    edges)."""
    m = tracker.point_part[rows.vertex] == part
    return _Rows(rows.view[m], rows.part[m], rows.mask[m], rows.vertex[m], rows.edge[m], rows.other[m])


def _rest_points(tracker, rows: _Rows) -> np.ndarray:
    """The rows' points (R, 3) at rest (a seam's midpoint: of its two ends)."""
    return 0.5 * (tracker.points[rows.vertex] + tracker.points[rows.other])


def _residuals(tracker, t: int, rows: _Rows, pose: np.ndarray):
    """Signed distances (R,), d r / d y (R, 3) and posed points (R, 3) of ``rows`` moved by the
    one transform ``pose`` (4, 4)."""
    y = _rest_points(tracker, rows) @ pose[:3, :3].T + pose[:3, 3]
    u, _, du = tracker.views.project_grouped(y, rows.view, rows.slices())
    d, g = tracker.fields[t].sample(u, rows.view, rows.mask)
    inner = ~rows.edge & (d < 0)  # an interior point inside its mask costs nothing
    d = np.where(inner, 0.0, d)
    g = np.where(inner[:, None], 0.0, g)
    return d, np.einsum("ri,rij->rj", g, du), y


def robust_cost(d: np.ndarray, scale: float) -> float:
    return float((scale ** 2 * np.log1p(d ** 2 / scale ** 2)).sum())


def fit_part(tracker, t: int, part: int, pose: np.ndarray, iterations: int = 10, scale: float = 2.0,
             anneal: float = 16.0) -> tuple[np.ndarray, float, float]:
    """(pose (4, 4), cost at the start, cost at the end) of part ``part`` in frame t: its rows
    (selected by the tracker at the tracked motion) fitted by one rigid transform from ``pose``;
    the Cauchy scale anneals from ``anneal`` px, halving per iteration, down to ``scale``."""
    rows = _part_rows(tracker, tracker.rows[t], part)
    d0 = _residuals(tracker, t, rows, pose)[0] if len(rows.view) else np.zeros(0)
    start = robust_cost(d0, scale)
    if len(rows.view) < 12:
        return pose, start, start
    centre = _rest_points(tracker, rows).mean(0)
    lam = 1e-3
    for it in range(iterations):
        s = max(scale, anneal * 0.5 ** it)
        d, D, y = _residuals(tracker, t, rows, pose)
        c = pose[:3, :3] @ centre + pose[:3, 3]
        J = np.concatenate([_cross(y - c, D), D], 1)
        w = 1.0 / (1.0 + d ** 2 / s ** 2)
        H, b = J.T @ (w[:, None] * J), J.T @ (w * d)
        try:
            step = -np.linalg.solve(H + lam * np.diag(np.maximum(np.diag(H), 1e-9)), b)
        except np.linalg.LinAlgError:
            break
        m = np.eye(4)
        m[:3, :3] = Rotation.from_rotvec(step[:3]).as_matrix()
        m[:3, 3] = c - m[:3, :3] @ c + step[3:]
        trial = m @ pose
        if robust_cost(_residuals(tracker, t, rows, trial)[0], s) <= robust_cost(d, s):
            pose, lam = trial, lam * 0.3
        else:
            lam *= 10
            if lam > 1e4:
                break
    return pose, start, robust_cost(_residuals(tracker, t, rows, pose)[0], scale)


def free_motion(tracker, parts: list[int] | None = None,
                rounds: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(world (T, P, 4, 4): the free fit per frame of every non-root part in ``parts`` (default:
    all), the others as tracked; cost
    of each part's rows at the tracked motion (P,) and at its free fit (P,), summed over the
    frames, both on the rows selected at the free fit). Frame by frame, each part starting from
    the better of its tracked pose and its last frame's free pose relative to the tracked parent;
    the rows are selected again at the free poses ``rounds`` times (the tracker keeps these
    rows: call its select again before fitting it further)."""
    tracked = np.stack([tracker.world(t) for t in range(tracker.n_t)])
    world = tracked.copy()
    p = world.shape[1]
    cost_tracked, cost_free = np.zeros(p), np.zeros(p)
    parent = tracker.skel.parent
    moving = [k for k in tracker.skel.joints if parts is None or k in parts]
    if not moving:
        return world, cost_tracked, cost_free
    for t in range(1, tracker.n_t):
        tracker.select(t, world[t])
        for k in moving:
            if t > 1:
                carried = tracked[t, parent[k]] @ np.linalg.inv(tracked[t - 1, parent[k]]) @ world[t - 1, k]
                rows = _part_rows(tracker, tracker.rows[t], k)
                if robust_cost(_residuals(tracker, t, rows, carried)[0], 2.0) < \
                        robust_cost(_residuals(tracker, t, rows, world[t, k])[0], 2.0):
                    world[t, k] = carried
        for r in range(rounds):
            if r:
                tracker.select(t, world[t])
            for k in moving:
                world[t, k] = fit_part(tracker, t, k, world[t, k])[0]
        for k in moving:
            rows = _part_rows(tracker, tracker.rows[t], k)
            cost_tracked[k] += robust_cost(_residuals(tracker, t, rows, tracked[t, k])[0], 2.0)
            cost_free[k] += robust_cost(_residuals(tracker, t, rows, world[t, k])[0], 2.0)
    return world, cost_tracked, cost_free
