"""Harmonic skinning weights.

For each bone, w solves the Laplace equation on the mesh with w = 1 on the bone's part core and
w = 0 on the other cores. A part's core is the part minus a band along its boundary: the band is
``blend`` × the mesh's bounding-box diagonal wide (measured along mesh edges), at most half the
part's own depth, so every part keeps a core and the blend width does not depend on the mesh
resolution. The
cotangent Laplacian comes from robust_laplacian (intrinsic Delaunay, so it tolerates
non-manifold and degenerate meshes). A tiny screening term towards each vertex's own part
keeps the system regular on components without cores and on isolated vertices. One sparse
factorisation serves every bone; rows sum to 1 by construction and are renormalised after
clipping; optionally only the top-k influences are kept.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla

from .mesh import adjacency


def cotan_laplacian(vertices: np.ndarray, faces: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(L, M): positive semi-definite cotangent Laplacian and lumped mass matrix."""
    import robust_laplacian

    L, M = robust_laplacian.mesh_laplacian(np.asarray(vertices, np.float64), np.asarray(faces, np.int64))
    return L.tocsr(), M.tocsr()


def core_mask(vertices: np.ndarray, adj: sp.csr_matrix, labels: np.ndarray, blend: float = 0.04) -> np.ndarray:
    """Vertices farther than the blend band from their part's boundary (see module doc)."""
    from scipy.sparse.csgraph import dijkstra

    coo = adj.tocoo()
    cross = labels[coo.row] != labels[coo.col]
    border = np.zeros(len(labels), bool)
    border[coo.row[cross]] = True
    if not border.any():
        return np.ones(len(labels), bool)
    same = ~cross
    lengths = np.linalg.norm(vertices[coo.row[same]] - vertices[coo.col[same]], axis=1) + 1e-12
    g = sp.csr_matrix((lengths, (coo.row[same], coo.col[same])), shape=adj.shape)
    dist = dijkstra(g, directed=False, indices=np.nonzero(border)[0], min_only=True)
    band = blend * float(np.linalg.norm(np.ptp(vertices, axis=0)))
    core = np.zeros(len(labels), bool)
    for k in np.unique(labels):
        m = labels == k
        d = dist[m]
        finite = d[np.isfinite(d)]
        width = min(band, 0.5 * finite.max()) if finite.size else 0.0
        core[m] = ~np.isfinite(d) | (d > width)  # parts that touch nothing are all core
        if not core[m].any():
            core[np.nonzero(m)[0][np.argmax(np.where(np.isfinite(d), d, -1))]] = True
    return core


def limit_influences(w: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest weights per row and renormalise."""
    if k <= 0 or k >= w.shape[1]:
        return w
    idx = np.argpartition(-w, k - 1, axis=1)[:, :k]
    out = np.zeros_like(w)
    rows = np.arange(len(w))[:, None]
    out[rows, idx] = w[rows, idx]
    return out / np.maximum(out.sum(1, keepdims=True), 1e-12)


def harmonic_weights(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, n_bones: int,
                     top_k: int = 0, blend: float = 0.04, screening: float = 1e-6) -> np.ndarray:
    """Weights (N, n_bones) float32, rows summing to 1; labels[i] is the bone of vertex i."""
    n = len(vertices)
    L, M = cotan_laplacian(vertices, faces)
    core = core_mask(vertices, adjacency(n, faces), labels, blend)
    prior = np.zeros((n, n_bones))
    prior[np.arange(n), labels] = 1.0
    free = np.nonzero(~core)[0]
    w = prior.copy()
    if len(free):
        fixed = np.nonzero(core)[0]
        mass = M.diagonal()
        eps = screening * (L.diagonal().mean() / max(mass.mean(), 1e-30))
        A = L[free][:, free] + sp.diags(eps * mass[free])
        rhs = -(L[free][:, fixed] @ prior[fixed]) + eps * mass[free, None] * prior[free]
        solve = sla.factorized(A.tocsc())
        w[free] = np.column_stack([solve(rhs[:, b]) for b in range(n_bones)])
    w = np.clip(w, 0, None)
    w /= np.maximum(w.sum(1, keepdims=True), 1e-12)
    bad = w.sum(1) < 0.5  # all-zero rows cannot remain, but guard anyway
    w[bad] = prior[bad]
    return limit_influences(w, top_k).astype(np.float32)
