"""The parts' motion over the clip as an articulated skeleton, fitted to the part masks of the
generated views; its pivots are the joints.

Model: the root part moves rigidly (6 degrees of freedom per frame); every other part turns
about its pivot q (one point per part, fixed in its parent, shared by all frames) by a rotation
per frame, composed down the tree. So the mesh in frame t is the rest mesh posed by forward
kinematics, and a pivot is the point of the parent about which the child's observed motion is a
pure rotation.

Data, per view, from what the posed mesh shows there (visibility from a depth buffer):
- parts: a part's visible vertices on the edge of its visible region (on the occluding contour,
  or on the boundary with another part where the other side shows too) should land on its mask's
  boundary, the others inside it (masks.MaskField's signed distances). On a part seam the point is
  the seam's midpoint, posed by both parts where they are parent and child: a labelled image's
  part boundary runs between the two parts' vertices, and the faces across it stretch as the
  joint turns (a seam vertex itself lies half an edge, 2–5 px, inside its mask: a model error
  that bent every fitted pivot even on clean images);
- silhouette: vertices on the object's own outline should land on the outline of the whole
  object (all parts together): far steadier than part boundaries, which wander and bleed in
  generated images.
Both are Cauchy-weighted, so a view with wrong colours pulls little.

Solve (Levenberg–Marquardt): frame by frame first (root and rotations, pivots held at their
current estimate, each frame starting from the last: one frame's small turns cannot tell a
pivot's shift from a turn), then all frames and the pivots together,
with a pull of each pivot towards the centre of its part's contact with the parent: a hinge
then keeps the point of its axis nearest the contact, and a joint the clip does not move keeps
the contact. The pull is weak on clean masks and grows with their noise (as its 4th power: noisy
masks over-turn thin parts and drag their pivots along), a broad contact's only as its square
(a lid's pivot lies at the patch's edge, far from its centre).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from .masks import CAP, MaskField
from .mesh import adjacency, vertex_normals
from .views import SurfaceSamples, ViewSet, splat_depth, visible

CONTOUR = 0.3  # |normal · view direction| below which a vertex is on the occluding contour
TURN_STARTS = (-20.0, -10.0, 10.0, 20.0)  # degrees: Tracker._turned's starts about a hinge's axis
JUMP_DEG = 45.0  # a joint turning more than this between two frames is tried again (Tracker._unjump)
CELL = 3  # px: the depth buffer's cell (visibility)
ROBUST = 2.0  # px: scale of the Cauchy weights at the end of a solve (it starts wider: ANNEAL)
ANNEAL = 16.0  # px: the first iteration's scale, halved every iteration down to ROBUST
PRIOR_NOISE_POWER = 4  # a pivot's pull towards its contact grows as the masks' robust noise scale to this power...
BROAD_NOISE_POWER = 2  # ...a broad contact's (a lid's) only as its square (Tracker.solve)


@dataclass
class Motion:
    """Fitted articulated motion of P parts over T frames (frame 0 = rest pose)."""
    world: np.ndarray  # (T, P, 4, 4) rest -> frame t
    pivots: np.ndarray  # (P, 3) pivot of each non-root part (rest coordinates; the root: its centroid)
    local: np.ndarray  # (T, P, 3, 3) rotation of each part relative to its parent
    residual: np.ndarray  # (P,) mean distance (px) outside its masks of each part's interior points
    support: np.ndarray  # (P,) number of those points
    pivot_sigma: np.ndarray  # (P,) standard deviation of each pivot (normalised units, largest axis)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross products (R, 3) (np.cross's overhead dominates for many small calls)."""
    return np.stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1], a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                     a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]], 1)


class Skeleton:
    """Forward kinematics of a part tree with pivots."""

    def __init__(self, parent: np.ndarray, pivots: np.ndarray):
        self.parent = np.asarray(parent)
        self.p = len(parent)
        self.root = int(np.nonzero(self.parent < 0)[0][0])
        depth = np.zeros(self.p, int)
        for k in range(self.p):
            q = k
            while self.parent[q] >= 0:
                q, depth[k] = self.parent[q], depth[k] + 1
        self.order = sorted(range(self.p), key=lambda i: depth[i])
        self.joints = [k for k in self.order if k != self.root]
        self.slot = {k: i for i, k in enumerate(self.joints)}  # joint k -> its index among the joints
        self.ancestors = []  # joints on the path root -> k, k included when it is a joint
        for k in range(self.p):
            path, q = [], k
            while self.parent[q] >= 0:
                path.append(q)
                q = self.parent[q]
            self.ancestors.append(path[::-1])
        self.pivots = np.asarray(pivots, np.float64).copy()
        self.is_ancestor = np.zeros((self.p, self.p), bool)  # [a, k]: a is a proper ancestor of k
        for k in range(self.p):
            q = self.parent[k]
            while q >= 0:
                self.is_ancestor[q, k] = True
                q = self.parent[q]

    def forward(self, root: np.ndarray, local: np.ndarray) -> np.ndarray:
        """World transforms (P, 4, 4) from the root's (4, 4) and local rotations (P, 3, 3) about
        the pivots."""
        w = np.zeros((self.p, 4, 4))
        for k in self.order:
            if k == self.root:
                w[k] = root
                continue
            m = np.eye(4)
            m[:3, :3] = local[k]
            m[:3, 3] = self.pivots[k] - local[k] @ self.pivots[k]
            w[k] = w[self.parent[k]] @ m
        return w


@dataclass
class _Rows:
    """One frame's residual points: view, part (whose joints move the point: its Jacobian), mask
    (the part's, or the whole object's: SILHOUETTE), vertex and other (indices into
    Tracker.points: the point is the mean of the two, each moved by its own part; the same
    index for a point on one part), and whether the point should lie on the mask's edge."""
    view: np.ndarray
    part: np.ndarray
    mask: np.ndarray
    vertex: np.ndarray
    edge: np.ndarray
    other: np.ndarray

    def slices(self) -> list[tuple[int, slice]]:
        """(view, rows) for each run of equal views (rows come grouped by view); computed once."""
        if "_slices" not in self.__dict__:
            if len(self.view) == 0:
                self._slices = []
            else:
                cut = np.nonzero(np.diff(self.view))[0] + 1
                starts, ends = np.r_[0, cut], np.r_[cut, len(self.view)]
                self._slices = [(int(self.view[a]), slice(int(a), int(b))) for a, b in zip(starts, ends, strict=True)]
        return self._slices

    def by_part(self) -> dict[int, np.ndarray]:
        """Part -> its rows, in the order of the parts; computed once."""
        if "_by_part" not in self.__dict__:
            self._by_part = _by_part(self.part)
        return self._by_part


def _by_part(part: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(part, kind="stable")
    cut = np.nonzero(np.diff(part[order]))[0] + 1
    return {int(part[g[0]]): g for g in np.split(order, cut) if len(g)}


class Tracker:
    """Levenberg–Marquardt over the articulated model (see the module doc)."""

    def __init__(self, vertices, faces, labels, parent, pivots, label_images, present, part_ids, views: ViewSet,
                 prior: float = 10000.0, edge_points: int = 90, inner_points: int = 40, outline_points: int = 40,
                 pool: int = 800, seed: int = 0, fields: list | None = None, broad: np.ndarray | None = None,
                 turns: dict[int, np.ndarray] | None = None):
        self.v = np.asarray(vertices, np.float64)
        self.faces = np.asarray(faces)
        self.labels = np.asarray(labels)
        self.skel = Skeleton(parent, pivots)
        self.contact = np.asarray(pivots, np.float64).copy()
        self.views = views
        self.present = present
        self.n_t = label_images.shape[0]
        self.prior_unit = prior  # the pivots' pull per px² of residual noise (see solve)
        self.broad = np.zeros(len(parent), bool) if broad is None else np.asarray(broad, bool)
        self.turns = {k: np.asarray(a, np.float64) / np.linalg.norm(a) for k, a in (turns or {}).items()
                      if np.linalg.norm(a) > 1e-9}  # {part: unit hinge axis}: frames also solved turned (_turned)
        self.prior = np.full(len(parent), float(prior))  # (P,) each pivot's pull, set per solve
        self.silhouette = len(part_ids)  # the whole object's mask comes after the parts'
        self.fields = fields or mask_fields(label_images, present, part_ids)
        adj = adjacency(len(self.v), faces).tocoo()
        a, b = seam_edges(adj, self.labels)
        self.seam = np.zeros(len(self.v), bool)
        self.seam[a] = True
        # residual points (2N, 3): the vertices, then where each vertex meets its mask's edge at
        # rest (seam_points); an edge row is a seam's posed midpoint where the parts on its two
        # sides are parent and child (the boundary runs between their vertices wherever the two
        # turn), the rest midpoint moving with its part across a seam with another branch
        self.points = np.concatenate([self.v, seam_points(self.v, a, b)])
        self.point_part = np.concatenate([self.labels, self.labels])  # (2N,) the part moving each point
        self.partner = seam_partners(self.v, a, b)
        n_v = len(self.v)
        self._edge_a, self._edge_b = np.arange(n_v), np.arange(n_v)
        self._edge_part = self.labels.copy()
        own, across = self.labels, self.labels[self.partner]
        lineal = self.skel.is_ancestor[own, across] | self.skel.is_ancestor[across, own]
        pair = self.seam & lineal
        self._edge_b[pair] = self.partner[pair]
        self._edge_part[pair] = np.where(self.skel.is_ancestor[across, own], across, own)[pair]
        other = self.seam & ~lineal
        self._edge_a[other] += n_v
        self._edge_b[other] += n_v
        self.normals = vertex_normals(self.v, faces)
        self.occluders = SurfaceSamples.of(self.v, self.faces, count=12000)
        self.rng = np.random.default_rng(seed)
        p = len(parent)
        self.pool = [self.rng.permutation(np.nonzero(self.labels == k)[0])[:pool] for k in range(p)]
        self._allpool = np.concatenate(self.pool)
        self._pool_part = np.repeat(np.arange(p), [len(q) for q in self.pool])  # part of each pooled vertex
        self._pool_seam = self.seam[self._allpool]
        self._pool_partner = self.partner[self._allpool]
        self.edge_points, self.inner_points, self.outline_points = edge_points, inner_points, outline_points
        self.root = np.tile(np.eye(4), (self.n_t, 1, 1))
        self.local = np.tile(np.eye(3), (self.n_t, p, 1, 1))
        self.rows: list[_Rows | None] = [None] * self.n_t
        self._kept: list[list] = [[] for _ in range(self.n_t)]  # residuals' last evaluations per frame
        self._cols: dict = {}  # _columns by (part, frame slot, parameters per frame, pivots' offset)
        self.scale = ROBUST

    # --- what each frame's views show ----------------------------------------------------------
    def world(self, t: int) -> np.ndarray:
        return self.skel.forward(self.root[t], self.local[t])

    def select(self, t: int, world: np.ndarray | None = None) -> None:
        """Choose frame t's residual points at the current motion (visibility), or at the parts'
        transforms ``world`` (P, 4, 4)."""
        world, field = self.world(t) if world is None else world, self.fields[t]
        lab = self.labels
        m = world[lab]
        posed = np.einsum("nij,nj->ni", m[:, :3, :3], self.v) + m[:, :3, 3]
        occ = self.occluders.points(posed)
        allpool = self._allpool
        pooled = posed[allpool]
        rot_normals = np.einsum("nij,nj->ni", world[lab[allpool]][:, :3, :3], self.normals[allpool]).T.copy()
        pooled_t = pooled.T.copy()  # (3, S): the contour test column by column
        groups, heads = [], []  # the rows' vertices and (view, part, mask, on the edge), group by group

        for v in np.nonzero(self.present[t])[0]:
            u, d = self.views.project(occ, v)
            zbuf = splat_depth(u, d, self.views.size, CELL)
            near_bg = cv2.dilate((zbuf > 1e8).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            up, dp = self.views.project(pooled, v)
            cells = np.floor(up / CELL).astype(np.int64)
            vis_all = visible(up, dp, zbuf, CELL, cells=cells)
            ij = np.clip(cells, 0, np.array(zbuf.shape[::-1]) - 1)
            outline_all = near_bg[ij[:, 1], ij[:, 0]]
            ray = pooled_t - self.views.C[v][:, None]
            cos = (rot_normals[0] * ray[0] + rot_normals[1] * ray[1]) + rot_normals[2] * ray[2]
            contour_all = np.abs(cos) / np.sqrt((ray[0] * ray[0] + ray[1] * ray[1]) + ray[2] * ray[2]) < CONTOUR
            in_view = field.roi[v, :, 2] > 0  # the part's mask exists in this view
            # a seam vertex is on its mask's edge only where the other side of the seam shows too
            # (otherwise its own part hides the boundary there and its mask's edge lies elsewhere)
            seam_seen = self._pool_seam.copy()  # where the vertex across the seam shows
            uq, dq = self.views.project(posed[self._pool_partner[seam_seen]], v)
            seam_seen[seam_seen] = visible(uq, dq, zbuf, CELL)
            on_edge = seam_seen | contour_all
            edge, inner, outline = (self._by_pool_part(vis_all & m) for m in
                                    (on_edge, ~on_edge, contour_all & outline_all))
            for k in np.nonzero(np.bincount(self._pool_part[vis_all], minlength=len(self.pool)) >= 3)[0]:
                if in_view[k]:
                    groups.append(self.rng.permutation(edge[k])[:self.edge_points])
                    heads.append((v, k, k, True))
                    groups.append(self.rng.permutation(inner[k])[:self.inner_points])
                    heads.append((v, k, k, False))
                groups.append(self.rng.permutation(outline[k])[:self.outline_points])
                heads.append((v, k, self.silhouette, True))
        if not groups:
            e = np.zeros(0, int)
            self.rows[t] = _Rows(e, e, e, e, np.zeros(0, bool), e)
            return
        n = [len(g) for g in groups]
        h = np.array([hd[:3] for hd in heads], np.int64).reshape(-1, 3)
        vertex, part, mask = np.concatenate(groups), np.repeat(h[:, 1], n), np.repeat(h[:, 2], n)
        edge = np.repeat(np.array([hd[3] for hd in heads]), n)
        other = vertex.copy()
        seam_row = edge & (mask != self.silhouette)  # a part's edge: where its seams and contours are
        vs = vertex[seam_row]
        part[seam_row], other[seam_row] = self._edge_part[vs], self._edge_b[vs]
        vertex[seam_row] = self._edge_a[vs]
        self.rows[t] = _Rows(np.repeat(h[:, 0], n), part, mask, vertex, edge, other)

    def _by_pool_part(self, chosen: np.ndarray) -> list[np.ndarray]:
        """The pooled vertices ``chosen`` (a mask over the pool), part by part, in pool order."""
        counts = np.bincount(self._pool_part[chosen], minlength=len(self.pool))
        return np.split(self._allpool[chosen], np.cumsum(counts)[:-1])

    def residuals(self, t: int, world: np.ndarray):
        """Frame t's residuals at ``world``: signed distances (R,), d r / d y (R, 3) and the posed
        points (R, 3). The last two evaluations per frame are kept (by rows and transforms): a
        Levenberg–Marquardt step's cost is the next step's linearisation point, or, when the step
        is refused, the previous one's is again. The arrays returned are shared: read only."""
        r = self.rows[t]
        key = world.tobytes()
        kept = self._kept[t]
        for rows, k, value in kept:
            if rows is r and k == key:
                return value
        value = self._residuals(t, r, world)
        self._kept[t] = [(r, key, value)] + kept[:1]
        return value

    def _residuals(self, t: int, r: _Rows, world: np.ndarray):
        m = world[self.point_part[r.vertex]]
        y = np.einsum("rij,rj->ri", m[:, :3, :3], self.points[r.vertex]) + m[:, :3, 3]
        pair = r.other != r.vertex
        if pair.any():
            mb = world[self.point_part[r.other[pair]]]
            yb = np.einsum("rij,rj->ri", mb[:, :3, :3], self.points[r.other[pair]]) + mb[:, :3, 3]
            y[pair] = 0.5 * (y[pair] + yb)
        u, _, du = self.views.project_grouped(y, r.view, r.slices())
        d, g = self.fields[t].sample(u, r.view, r.mask)
        inner = ~r.edge & (d < 0)  # an interior point inside its mask costs nothing
        d = np.where(inner, 0.0, d)
        g = np.where(inner[:, None], 0.0, g)
        return d, np.einsum("ri,rij->rj", g, du), y

    def _robust(self, x2: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        return scale ** 2 * np.log1p(x2 / scale ** 2), 1.0 / (1.0 + x2 / scale ** 2)

    def pull_cost(self) -> float:
        """The pivots' pull towards their contacts: Σ prior_a |pivot_a − contact_a|² over the joints."""
        j = self.skel.joints
        return float(np.sum(self.prior[j] * np.sum((self.skel.pivots[j] - self.contact[j]) ** 2, axis=1)))

    def cost(self, frames: list[int]) -> float:
        c = 0.0
        for t in frames:
            d, _, _ = self.residuals(t, self.world(t))
            c += float(self._robust(d ** 2, self.scale)[0].sum())
        return c + self.pull_cost()

    # --- the normal equations ------------------------------------------------------------------
    def _frame_terms(self, t: int, world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per frame, what every part's Jacobian shares: the root's centre (3,), each joint's
        pivot in the world (P, 3) and d(pivot's image)/d(pivot) (P, 3, 3): the parent's rotation
        times (I − the joint's rotation)."""
        sk = self.skel
        c_root = world[sk.root][:3, :3] @ self.contact[sk.root] + world[sk.root][:3, 3]
        pivot_world = np.zeros((sk.p, 3))
        bend = np.zeros((sk.p, 3, 3))
        for a in sk.joints:
            pa = world[sk.parent[a]]
            pivot_world[a] = pa[:3, :3] @ sk.pivots[a] + pa[:3, 3]
            bend[a] = pa[:3, :3] @ (np.eye(3) - self.local[t, a])
        return c_root, pivot_world, bend

    def _columns(self, k: int, fi: int, per: int, pivot_off: int | None) -> np.ndarray:
        """The parameters part k's residuals depend on (see _blocks), in its Jacobian's order."""
        key = (k, fi, per, pivot_off)
        cols = self._cols.get(key)
        if cols is None:
            sk = self.skel
            parts = [fi * per + np.arange(6)]
            for a in sk.ancestors[k]:
                j = sk.slot[a]
                parts.append(fi * per + 6 + 3 * j + np.arange(3))
                if pivot_off is not None:
                    parts.append(pivot_off + 3 * j + np.arange(3))
            cols = self._cols[key] = np.concatenate(parts)
        return cols

    def _blocks(self, k: int, terms, y: np.ndarray, D: np.ndarray, with_pivots: bool,
                share: np.ndarray | None = None) -> np.ndarray:
        """Jacobian (S, c) of residuals with d r / d y = D (S, 3) at posed points y (S, 3) of part
        k: root rotation and shift, every ancestor joint's rotation, and (with pivots) every
        ancestor's pivot; columns as _columns. terms: _frame_terms of the frame. share (S,): how
        much of each point k's own joint moves (½ for a seam's midpoint with k the child: its
        other end stays with the parent), 1 when None."""
        c_root, pivot_world, bend = terms
        anc = self.skel.ancestors[k]
        J = np.empty((len(y), 6 + len(anc) * (6 if with_pivots else 3)))
        yt, dt = y.T, D.T

        def cross(col, point):  # (y − point) × D, as _cross computes it, into three columns
            r0, r1, r2 = yt[0] - point[0], yt[1] - point[1], yt[2] - point[2]
            J[:, col] = r1 * dt[2] - r2 * dt[1]
            J[:, col + 1] = r2 * dt[0] - r0 * dt[2]
            J[:, col + 2] = r0 * dt[1] - r1 * dt[0]

        cross(0, c_root)
        J[:, 3:6] = D
        col = 6
        for a in anc:
            cross(col, pivot_world[a])
            col += 3
            if with_pivots:
                J[:, col:col + 3] = D @ bend[a]
                col += 3
        if share is not None and anc and anc[-1] == k:
            last = 6 + (len(anc) - 1) * (6 if with_pivots else 3)
            J[:, last:] *= share[:, None]
        return J

    def normal_equations(self, frames: list[int], with_pivots: bool):
        """(H, b, cost) over the parameters: per frame [root ω, root τ, ω of every joint], then
        (with pivots) the pivots of every joint; the cost at the current state."""
        sk = self.skel
        nj = len(sk.joints)
        per = 6 + 3 * nj
        n = per * len(frames) + (3 * nj if with_pivots else 0)
        pivot_off = per * len(frames) if with_pivots else None
        H = np.zeros((n, n))
        b = np.zeros(n)
        cost = self.pull_cost()
        for fi, t in enumerate(frames):
            world = self.world(t)
            d, D, y = self.residuals(t, world)
            c, w = self._robust(d ** 2, self.scale)
            cost += float(c.sum())
            terms = self._frame_terms(t, world)
            r = self.rows[t]
            share = np.where(r.other != r.vertex, 0.5, 1.0)
            for k, m in r.by_part().items():
                idx = self._columns(k, fi, per, pivot_off)
                J = self._blocks(k, terms, y[m], D[m], with_pivots, share[m])
                H[np.ix_(idx, idx)] += J.T @ (w[m, None] * J)
                b[idx] += J.T @ (w[m] * d[m])
        if with_pivots:
            for j, a in enumerate(sk.joints):
                sl = pivot_off + 3 * j + np.arange(3)
                H[np.ix_(sl, sl)] += self.prior[a] * np.eye(3)
                b[sl] += self.prior[a] * (sk.pivots[a] - self.contact[a])
        return H, b, cost

    def apply(self, frames: list[int], step: np.ndarray, with_pivots: bool) -> None:
        sk = self.skel
        nj = len(sk.joints)
        per = 6 + 3 * nj
        for fi, t in enumerate(frames):
            s = step[fi * per:(fi + 1) * per]
            world = self.world(t)
            c_root = world[sk.root][:3, :3] @ self.contact[sk.root] + world[sk.root][:3, 3]
            rot = Rotation.from_rotvec(s[:3]).as_matrix()
            m = np.eye(4)
            m[:3, :3] = rot
            m[:3, 3] = c_root - rot @ c_root + s[3:6]
            self.root[t] = m @ self.root[t]
            for a in sk.joints:
                j = sk.slot[a]
                pr = world[sk.parent[a]][:3, :3]
                turn = Rotation.from_rotvec(s[6 + 3 * j:9 + 3 * j]).as_matrix()
                self.local[t, a] = pr.T @ turn @ pr @ self.local[t, a]
        if with_pivots:
            off = per * len(frames)
            for j, a in enumerate(sk.joints):
                sk.pivots[a] = sk.pivots[a] + step[off + 3 * j:off + 3 * j + 3]

    def robust_scale(self, frames: list[int]) -> float:
        """The Cauchy scale for noisy masks: 1.48 × the median absolute edge residual (a robust
        standard deviation), within [ROBUST, 3 ROBUST]."""
        res = [np.abs(self.residuals(t, self.world(t))[0][self.rows[t].edge]) for t in frames]
        r = np.concatenate(res) if res else np.zeros(0)
        return float(np.clip(1.4826 * np.median(r), ROBUST, 3 * ROBUST)) if len(r) else ROBUST

    def solve(self, frames: list[int], with_pivots: bool, iterations: int, anneal: bool = True) -> None:
        lam = 1e-3
        floor = self.robust_scale(frames)
        # the pivots' pull towards the contacts grows with the masks' noise: residuals that wander
        # together along a boundary carry less evidence than their count says, and noisy masks
        # over-turn thin parts and drag their pivots along; a broad contact's pull grows more
        # slowly (its pivot may lie at the patch's edge, far from the centre: a strong pull
        # shrinks a lid's turn instead). Set for 576-pixel views (smaller views show the same
        # motion in fewer pixels)
        power = np.where(self.broad, BROAD_NOISE_POWER, PRIOR_NOISE_POWER)
        self.prior = self.prior_unit * (floor / ROBUST) ** power * (self.views.size[0] / 576) ** 2
        for it in range(iterations):
            self.scale = max(floor, ANNEAL * 0.5 ** it) if anneal else floor
            H, b, cost = self.normal_equations(frames, with_pivots)
            state = (self.root.copy(), self.local.copy(), self.skel.pivots.copy())
            try:
                step = -np.linalg.solve(H + lam * np.diag(np.maximum(np.diag(H), 1e-9)), b)
            except np.linalg.LinAlgError:
                break
            self.apply(frames, step, with_pivots)
            if self.cost(frames) <= cost:
                lam *= 0.3
            else:
                self.root, self.local, self.skel.pivots = state
                lam *= 10
                if lam > 1e4:
                    break
        self.scale = ROBUST

    # --- the whole fit -----------------------------------------------------------------------------
    def run(self, frame_iterations: int = 16, joint_iterations: int = 6, rounds: int = 2) -> Motion:
        """Frame by frame (each from the last; the root and the rotations, the pivots held: one
        frame's small turns cannot tell a pivot's shift from a turn, and a pivot moved there
        sends the later frames' fits astray), then all frames and the pivots together
        (``rounds`` times, the data selected again each time)."""
        frames = list(range(1, self.n_t))
        for t in frames:
            self.root[t], self.local[t] = self.root[t - 1], self.local[t - 1]
            self.select(t)
            self.solve([t], False, frame_iterations // 2)
            self.select(t)  # visibility at the better pose
            self.solve([t], False, frame_iterations - frame_iterations // 2)
            self._unjump(t, frame_iterations // 2)
            self._turned(t, frame_iterations // 2)
        return self.refine(joint_iterations, rounds)

    def _turned(self, t: int, iterations: int) -> None:
        """Frame t solved again with each part of ``turns`` started turned by TURN_STARTS degrees
        about its axis from its pose there, the lowest-cost fit kept: a lid's masks change little
        over its first degrees of opening, and a frame solved from the last one's pose can stop
        short of its turn (a local minimum the data alone does not leave)."""
        for k, axis in self.turns.items():
            best = (self.cost([t]), self.root[t].copy(), self.local[t].copy())
            base = best[1], best[2]
            for deg in TURN_STARTS:
                self.root[t], self.local[t] = base[0].copy(), base[1].copy()
                self.local[t, k] = Rotation.from_rotvec(np.radians(deg) * axis).as_matrix() @ base[1][k]
                self.select(t)
                self.solve([t], False, iterations)
                self.select(t)
                self.solve([t], False, iterations)
                c = self.cost([t])
                if c < best[0]:
                    best = (c, self.root[t].copy(), self.local[t].copy())
            self.root[t], self.local[t] = best[1], best[2]
            self.select(t)

    def _unjump(self, t: int, iterations: int) -> None:
        """Frame t solved again with every joint that turned more than JUMP_DEG since frame t − 1
        put back at its turn there, the lower-cost fit kept: a round part (a hand flat against a
        thigh) can spin to a look-alike pose in one frame that the next frames then follow."""
        j = np.array(self.skel.joints, int)
        if not len(j):
            return
        step = np.einsum("nji,njk->nik", self.local[t - 1, j], self.local[t, j])
        jumped = j[np.degrees(Rotation.from_matrix(step).magnitude()) > JUMP_DEG]
        if not len(jumped):
            return
        before, kept = self.cost([t]), (self.root[t].copy(), self.local[t].copy())
        self.local[t, jumped] = self.local[t - 1, jumped]
        self.select(t)
        self.solve([t], False, iterations)
        if self.cost([t]) >= before:
            self.root[t], self.local[t] = kept
            self.select(t)

    def start_from(self, world: np.ndarray, max_shift: float = 2.0) -> None:
        """Take over a motion fitted with another tree or other labels: world (T, P, 4, 4) per
        part. The root follows its part, every other part rotates relative to its (new) parent as
        the two parts did, about the pivot of that relative motion (joints.fit_pivot)."""
        from .joints import fit_pivot

        sk = self.skel
        self.root = world[:, sk.root].copy()
        for a in sk.joints:
            rel = np.einsum("tij,tjk->tik", np.linalg.inv(world[:, sk.parent[a]]), world[:, a])
            self.local[:, a] = rel[:, :3, :3]
            sk.pivots[a] = fit_pivot(rel, self.contact[a], max_shift).position

    def refine(self, iterations: int = 5, rounds: int = 2) -> Motion:
        """All frames and the pivots together, with the data selected again at the current motion,
        ``rounds`` times."""
        frames = list(range(1, self.n_t))
        for _ in range(rounds if frames else 0):
            for t in frames:
                self.select(t)
            self.solve(frames, True, iterations, anneal=False)
        return self.result()

    def result(self) -> Motion:
        sk = self.skel
        world = np.stack([self.world(t) for t in range(self.n_t)])
        resid = np.zeros(sk.p)
        support = np.zeros(sk.p, int)
        for t in range(1, self.n_t):  # interior points only: how far outside its mask the part lands
            d = self.residuals(t, world[t])[0]
            inner = ~self.rows[t].edge
            resid += np.bincount(self.rows[t].part[inner], weights=np.minimum(np.abs(d[inner]), CAP), minlength=sk.p)
            support += np.bincount(self.rows[t].part[inner], minlength=sk.p)
        resid /= np.maximum(support, 1)
        pivots = sk.pivots.copy()
        pivots[sk.root] = self.contact[sk.root]
        return Motion(world, pivots, self.local.copy(), resid, support, self.pivot_sigma())

    def pivot_sigma(self) -> np.ndarray:
        """Each pivot's standard deviation from the normal equations of all frames (marginal over
        the rotations, which trade off against the pivot), with the residuals' robust scale."""
        frames = list(range(1, self.n_t))
        sigma = np.zeros(self.skel.p)
        if not frames or not self.skel.joints:
            return sigma
        self.scale = self.robust_scale(frames)
        H, _, _ = self.normal_equations(frames, True)
        self.scale = ROBUST
        off = H.shape[0] - 3 * len(self.skel.joints)
        try:
            cov = np.linalg.inv(H + 1e-9 * np.eye(len(H)))
        except np.linalg.LinAlgError:
            return sigma + np.inf
        s2 = self.robust_scale(frames) ** 2
        for j, a in enumerate(self.skel.joints):
            sl = off + 3 * j + np.arange(3)
            sigma[a] = float(np.sqrt(max(np.linalg.eigvalsh(cov[np.ix_(sl, sl)])[-1], 0) * s2))
        return sigma


def seam_edges(adj, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mesh's edges across part seams, both ways: (a, b) vertex indices with labels[a] !=
    labels[b]. adj: the mesh's vertex adjacency (COO)."""
    cross = labels[adj.row] != labels[adj.col]
    return adj.row[cross], adj.col[cross]


def seam_points(vertices: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where each vertex (N, 3) should meet its part's mask edge: a vertex on a part seam is
    half-way to the other part's vertices next to it (the mean of its seam edges' midpoints), as
    a labelled image's part boundary runs between differently labelled vertices, not through
    them (at half an edge, 2–5 px in 576-px views, the seam vertices themselves would push two
    parts apart); any other vertex is itself. a, b: the seam edges (seam_edges)."""
    v = np.asarray(vertices, np.float64)
    count = np.bincount(a, minlength=len(v)).astype(np.float64)
    half = np.stack([np.bincount(a, weights=0.5 * (v[b, i] - v[a, i]), minlength=len(v)) for i in range(3)], 1)
    return v + half / np.maximum(count, 1.0)[:, None]


def seam_partners(vertices: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) for each vertex on a part seam its nearest neighbour across the seam (another
    part's), for any other vertex itself. a, b: the seam edges (seam_edges)."""
    v = np.asarray(vertices, np.float64)
    out = np.arange(len(v))
    if len(a):
        order = np.lexsort((np.linalg.norm(v[a] - v[b], axis=1), a))
        a, b = a[order], b[order]
        first = np.r_[True, a[1:] != a[:-1]]
        out[a[first]] = b[first]
    return out


def mask_fields(label_images: np.ndarray, present: np.ndarray, part_ids: list[int]) -> list:
    """Per frame (frame 0: None), the masks of the parts and of the whole object (MaskField)."""
    return [None] + [MaskField(np.where(present[t][:, None, None], label_images[t], 0), part_ids, silhouette=True)
                     for t in range(1, label_images.shape[0])]


def fields_of(fields: list, parts: list[int]) -> list:
    """mask_fields' list narrowed to the parts ``parts`` (indices into the part_ids it was built
    for), in that order."""
    return [f if f is None else f.subset(parts) for f in fields]


def track(vertices, faces, labels, parent, contact, label_images, present, part_ids, views: ViewSet,
          start: np.ndarray | None = None, rounds: int = 2, keep: bool = False, **options):
    """Fit the articulated motion (see the module doc). vertices (N, 3) and contact (P, 3: each
    part's contact centre with its parent; the root: its centroid) in the cameras' normalised
    space; labels (N,) part of each vertex; label_images (T, V, H, W) with part_ids[k] the label
    of part k; present (T, V) which images exist. ``start``: a motion (T, P, 4, 4) fitted before
    (another tree or labels) to continue from instead of tracking frame by frame. With ``keep``:
    (Motion, the Tracker), for fits on the same data (rigid.py). Options go to the Tracker
    (``turns``: {part: hinge axis (3,)}, parts whose frames are also solved from several turns
    about their hinge, Tracker._turned)."""
    tracker = Tracker(vertices, faces, labels, parent, contact, label_images, present, part_ids, views, **options)
    if start is None:
        motion = tracker.run(rounds=rounds)
    else:
        tracker.start_from(start)
        motion = tracker.refine(rounds=rounds)
    return (motion, tracker) if keep else motion
