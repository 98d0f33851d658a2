"""Articulated assets with a ground-truth rig (the bundled sample and the rig benchmark).

An asset is built from primitives (capsules, tapered capsules, rounded boxes, ellipsoids), one or
more per part. ``build_asset`` meshes their smooth union by marching cubes into one watertight
surface with organic joints (every vertex carries the part of the nearest primitive);
``build_separate`` meshes every primitive on its own, low-poly, overlapping at the joints as many
game and mechanical assets are. Every part has a parent and a pivot (the point it rotates about,
often buried inside its parent) and optionally a hinge axis. ``split_seams`` cuts a mesh into
UV-chart-like pieces with duplicated seam vertices, as glTF importers leave meshes.
The benchmark's assets are in sample/catalogue.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A part: (name, parent name or None, primitives, pivot[, hinge axis]). Primitives:
# ("capsule", a, b, radius), ("cone", a, b, radius_a, radius_b), ("box", centre, half_extents, rounding),
# ("ellipsoid", centre, radii). With a hinge axis the oracle rotates the part about that axis through
# its pivot; without, about an axis that changes over the frames (a ball joint).
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


@dataclass
class Asset:
    vertices: np.ndarray  # (N, 3) float32
    faces: np.ndarray  # (M, 3) int32
    labels: np.ndarray  # (N,) int32 part index
    names: list[str]
    parents: np.ndarray  # (P,) int32, -1 for the root
    joints: np.ndarray  # (P, 3) float32 pivot of each part (root: its own centre)
    axes: np.ndarray  # (P, 3) float32 hinge axis of each part (zero: a ball joint)
    weights: np.ndarray | None = None  # (N, P) float32 skinning weights of an artist's rig (None: rigid parts)


def mirror(parts: list, axis: int = 0) -> list:
    """``parts`` plus the mirror image (across the plane ``axis`` = 0) of every part named ``*.L``,
    named ``*.R``, with its parent mirrored too when that is a ``.L`` part."""
    def flip(p):
        p = list(p)
        p[axis] = -p[axis]
        return tuple(p)

    def flip_prim(pr):
        if pr[0] in ("capsule", "cone"):
            return (pr[0], flip(pr[1]), flip(pr[2]), *pr[3:])
        return (pr[0], flip(pr[1]), *pr[2:])

    out = list(parts)
    for p in parts:
        if not p[0].endswith(".L"):
            continue
        parent = p[1][:-2] + ".R" if p[1] and p[1].endswith(".L") else p[1]
        q = (p[0][:-2] + ".R", parent, [flip_prim(pr) for pr in p[2]], flip(p[3]))
        if len(p) > 4:
            q += (flip(p[4]),)  # the hinge's line, mirrored
        out.append(q)
    return out


def _sdf(p: np.ndarray, prim: tuple) -> np.ndarray:
    kind = prim[0]
    if kind in ("capsule", "cone"):
        a, b = np.asarray(prim[1], float), np.asarray(prim[2], float)
        ra = prim[3]
        rb = prim[4] if kind == "cone" else ra
        ab = b - a
        denom = float(ab @ ab)
        t = np.clip(((p - a) @ ab) / denom, 0, 1) if denom > 0 else np.zeros(len(p))
        return np.linalg.norm(p - (a + t[:, None] * ab), axis=1) - (ra + t * (rb - ra))
    if kind == "box":
        c, h, r = np.asarray(prim[1], float), np.asarray(prim[2], float), prim[3]
        q = np.abs(p - c) - (h - r)
        return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0) - r
    if kind == "ellipsoid":
        c, r = np.asarray(prim[1], float), np.asarray(prim[2], float)
        k = np.linalg.norm((p - c) / r, axis=1)
        return (k - 1) * r.min()
    raise ValueError(kind)


def _bounds(prim: tuple) -> tuple[np.ndarray, np.ndarray]:
    if prim[0] in ("capsule", "cone"):
        pts = np.array([prim[1], prim[2]], float)
        r = max(prim[3], prim[4]) if prim[0] == "cone" else prim[3]
        return pts.min(0) - r, pts.max(0) + r
    c, h = np.asarray(prim[1], float), np.asarray(prim[2], float)
    return c - h, c + h


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


def _spec_arrays(spec: list) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    names = [p[0] for p in spec]
    parents = np.array([names.index(p[1]) if p[1] else -1 for p in spec], np.int32)
    joints = np.array([p[3] for p in spec], np.float32)
    axes = np.array([p[4] if len(p) > 4 else (0, 0, 0) for p in spec], np.float32)
    norms = np.linalg.norm(axes, axis=1, keepdims=True)
    axes = np.where(norms > 0, axes / np.maximum(norms, 1e-12), 0).astype(np.float32)
    return names, parents, joints, axes


def _union_sdf(grid_axes: list[np.ndarray], prims: list[tuple], blend: float) -> np.ndarray:
    """Smooth-union signed distance on the grid, each primitive evaluated only near its bounds
    (a streaming log-sum-exp; far from every primitive the field is a positive constant)."""
    shape = [len(a) for a in grid_axes]
    step = max(float(a[1] - a[0]) for a in grid_axes)
    far = 12 * blend + 4 * step
    m = np.full(shape, far)
    s = np.ones(shape)
    for pr in prims:
        lo, hi = _bounds(pr)
        sl = tuple(slice(int(np.searchsorted(a, lo[k] - far)), int(np.searchsorted(a, hi[k] + far)))
                   for k, a in enumerate(grid_axes))
        sub = np.stack(np.meshgrid(*[a[q] for a, q in zip(grid_axes, sl, strict=True)], indexing="ij"), -1)
        d = _sdf(sub.reshape(-1, 3), pr).reshape(sub.shape[:3])
        mm, ss = m[sl], s[sl]
        new = np.minimum(mm, d)
        s[sl] = ss * np.exp(-(mm - new) / blend) + np.exp(-(d - new) / blend)
        m[sl] = new
    return m - blend * np.log(s)


def build_asset(spec: list, resolution: int = 96, blend: float = 0.035, subdivisions: int = 0,
                separate: bool = False) -> Asset:
    """Mesh ``spec``'s smooth union with marching cubes (``resolution`` cells along its longest
    side); with ``separate``, each part's own union as a closed surface of its own (a lid that
    lifts off its box, as modelled pieces do)."""
    if separate:
        pieces = [build_asset([(p[0], None, p[2], p[3])], resolution, blend, subdivisions) for p in spec]
        offsets = np.cumsum([0] + [len(a.vertices) for a in pieces])
        names, parents, joints, hinge = _spec_arrays(spec)
        return Asset(np.concatenate([a.vertices for a in pieces]),
                     np.concatenate([a.faces + o for a, o in zip(pieces, offsets, strict=False)]).astype(np.int32),
                     np.concatenate([np.full(len(a.vertices), i) for i, a in enumerate(pieces)]).astype(np.int32),
                     names, parents, joints, hinge)
    from skimage.measure import marching_cubes

    prims = [(i, pr) for i, p in enumerate(spec) for pr in p[2]]
    lo = np.min([_bounds(pr)[0] for _, pr in prims], 0) - 0.1
    hi = np.max([_bounds(pr)[1] for _, pr in prims], 0) + 0.1
    step = (hi - lo).max() / resolution
    axes = [np.arange(lo[k], hi[k] + step, step) for k in range(3)]
    sdf = _union_sdf(axes, [pr for _, pr in prims], blend)
    verts, faces, _, _ = marching_cubes(sdf, 0.0, spacing=(step,) * 3)
    verts = verts + lo  # skimage orients these faces outwards for a negative-inside field
    for _ in range(subdivisions):
        verts, faces = subdivide(verts, faces)
    owner = np.array([i for i, _ in prims])
    labels = owner[np.stack([_sdf(verts, pr) for _, pr in prims]).argmin(0)]
    names, parents, joints, hinge = _spec_arrays(spec)
    return Asset(verts.astype(np.float32), faces.astype(np.int32), labels.astype(np.int32), names, parents, joints,
                 hinge)


def _frame(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to d and to each other."""
    d = d / np.linalg.norm(d)
    u = np.cross(d, [0.0, 0, 1] if abs(d[2]) < 0.9 else [1.0, 0, 0])
    u /= np.linalg.norm(u)
    return u, np.cross(d, u)


def primitive_mesh(prim: tuple, segments: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A closed low-poly triangle mesh of one primitive (``segments`` around a capsule)."""
    kind = prim[0]
    if kind in ("capsule", "cone"):
        a, b = np.asarray(prim[1], float), np.asarray(prim[2], float)
        ra, rb = prim[3], (prim[4] if kind == "cone" else prim[3])
        d = b - a
        if np.linalg.norm(d) < 1e-9:
            d = np.array([0.0, 0, 1e-6])
        u, w = _frame(d)
        dn = d / np.linalg.norm(d)
        ang = np.linspace(0, 2 * np.pi, segments, endpoint=False)
        ring = np.cos(ang)[:, None] * u + np.sin(ang)[:, None] * w
        rings = [a + ra * ring, a + ra * ring * 0.6 - 0.8 * ra * dn, b + rb * ring, b + rb * ring * 0.6 + 0.8 * rb * dn]
        v = np.concatenate([rings[1], rings[0], rings[2], rings[3], [a - ra * dn, b + rb * dn]])
        f = []
        for r in range(3):
            for k in range(segments):
                i0, i1 = r * segments + k, r * segments + (k + 1) % segments
                j0, j1 = i0 + segments, i1 + segments
                f += [[i0, i1, j1], [i0, j1, j0]]
        s, e = 4 * segments, 4 * segments + 1
        for k in range(segments):
            f.append([s, (k + 1) % segments, k])
            f.append([e, 3 * segments + k, 3 * segments + (k + 1) % segments])
        return v, np.array(f)
    if kind == "ellipsoid":
        c, r = np.asarray(prim[1], float), np.asarray(prim[2], float)
        v, f = primitive_mesh(("box", (0, 0, 0), (1, 1, 1), 0))
        v, f = subdivide(v, f)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        return c + v * r, f
    c, h = np.asarray(prim[1], float), np.asarray(prim[2], float)
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    v, f = subdivide(corners, f)
    return c + v * h, f


def build_separate(spec: list, segments: int = 8) -> Asset:
    """Every primitive as its own low-poly closed mesh (separate components that overlap at the
    joints, as in many game and mechanical assets)."""
    vs, fs, labs, n = [], [], [], 0
    for i, p in enumerate(spec):
        for pr in p[2]:
            v, f = primitive_mesh(pr, segments)
            vs.append(v)
            fs.append(f + n)
            labs.append(np.full(len(v), i))
            n += len(v)
    names, parents, joints, hinge = _spec_arrays(spec)
    return Asset(np.concatenate(vs).astype(np.float32), np.concatenate(fs).astype(np.int32),
                 np.concatenate(labs).astype(np.int32), names, parents, joints, hinge)


def split_seams(asset: Asset, charts: int = 24, seed: int = 0) -> tuple[Asset, np.ndarray]:
    """The asset cut into ``charts`` pieces (k-means of face centres) with every vertex on a cut
    duplicated once per piece it belongs to, as a glTF importer leaves a mesh with UV seams.
    Returns the split asset and, per new vertex, the index of its original vertex."""
    from scipy.cluster.vq import kmeans2

    v, f = asset.vertices.astype(np.float64), asset.faces
    centres = v[f].mean(1)
    _, chart = kmeans2(centres, charts, minit="++", seed=seed)
    key = f * charts + chart[:, None]  # (vertex, chart) pairs -> one new vertex each
    uniq, inv = np.unique(key.ravel(), return_inverse=True)
    origin = uniq // charts
    w = None if asset.weights is None else asset.weights[origin]
    return Asset(asset.vertices[origin], inv.reshape(-1, 3).astype(np.int32), asset.labels[origin], asset.names,
                 asset.parents, asset.joints, asset.axes, w), origin


def make_creature(resolution: int = 96) -> Asset:
    """The bundled sample: a quadruped with neck, head and a two-segment tail (~7k vertices)."""
    return build_asset(QUADRUPED, resolution)


def save_asset(asset: Asset, path) -> None:
    """Write an asset as an npz the Blender side can import (no pickles)."""
    from ..jobdir import write_npz_atomic

    extra = {} if asset.weights is None else {"weights": asset.weights}
    write_npz_atomic(path, vertices=asset.vertices, faces=asset.faces, labels=asset.labels,
                     parents=asset.parents, joints=asset.joints, axes=asset.axes, names=np.array(asset.names),
                     **extra)
