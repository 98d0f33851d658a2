"""Weld coincident vertices, so that a mesh split at UV seams or hard edges (as glTF importers
leave them) is one connected surface for lifting, the skeleton and the weights, while the
results go back to the user's own vertex order and count."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .mesh import vertex_normals


def weld(vertices: np.ndarray, faces: np.ndarray, tol: float = 1e-6,
         facing: float = -0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(welded vertices (W, 3), welded faces (M', 3), index (N,) of each input vertex's welded
    vertex). Vertices closer than ``tol`` × the bounding-box diagonal become one, unless their
    normals face away from each other (cosine below ``facing``): two separate pieces touching
    face to face (a lid resting on its box) stay two surfaces, each with its own label, while a
    seam or a hard edge (normals alike, or at most at right angles) is closed. Faces that
    collapse are dropped."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    diag = float(np.linalg.norm(np.ptp(v, axis=0))) if len(v) else 0.0
    pairs = cKDTree(v).query_pairs(max(tol * diag, 1e-12), output_type="ndarray")
    if len(pairs):
        n_ = vertex_normals(v, f)
        pairs = pairs[np.einsum("ij,ij->i", n_[pairs[:, 0]], n_[pairs[:, 1]]) >= facing]
    if len(pairs) == 0:
        return v, f, np.arange(len(v))
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(v), len(v)))
    n, comp = connected_components(g, directed=False)
    first = np.full(n, len(v))
    np.minimum.at(first, comp, np.arange(len(v)))
    order = np.argsort(first)  # welded vertices in the order of their first input vertex
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    index = rank[comp]
    wv = v[first[order]]
    wf = index[f]
    wf = wf[(wf[:, 0] != wf[:, 1]) & (wf[:, 1] != wf[:, 2]) & (wf[:, 0] != wf[:, 2])]
    return wv, wf, index
