"""Harmonic skinning weights.

For each bone, w solves the Laplace equation on the mesh with w = 1 on the bone's part core and
w = 0 on the other cores (cores: part vertices whose 1-ring lies in the same part). The
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


def core_mask(adj: sp.csr_matrix, labels: np.ndarray) -> np.ndarray:
    """Vertices whose whole 1-ring has their own label (a part with no such vertex keeps all)."""
    coo = adj.tocoo()
    border = np.zeros(len(labels), bool)
    border[coo.row[labels[coo.row] != labels[coo.col]]] = True
    core = ~border
    for k in np.unique(labels):
        m = labels == k
        if not core[m].any():
            core[m] = True
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
                     top_k: int = 0, screening: float = 1e-6) -> np.ndarray:
    """Weights (N, n_bones) float32, rows summing to 1; labels[i] is the bone of vertex i."""
    n = len(vertices)
    L, M = cotan_laplacian(vertices, faces)
    core = core_mask(adjacency(n, faces), labels)
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
