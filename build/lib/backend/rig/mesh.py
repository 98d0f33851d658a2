"""Mesh validation and graph helpers shared by lifting, skeleton and weights."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import BackendError


def validate_mesh(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    """Check a triangle mesh and return (vertices float64 (N,3), faces int64 (M,3)).

    Degenerate faces (a repeated index) are dropped; everything else that cannot be rigged
    raises a BackendError naming the problem.
    """
    if vertices is None or faces is None:
        raise BackendError("bad_input", "mesh.npz needs 'vertices' (N,3) and 'faces' (M,3)")
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise BackendError("bad_input", f"mesh vertices must be (N,3) with N>0, got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise BackendError("bad_input", f"mesh faces must be triangles (M,3), got {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        raise BackendError("bad_input", f"mesh faces must be integers, got {f.dtype}")
    v = v.astype(np.float64)
    bad = ~np.isfinite(v).all(1)
    if bad.any():
        raise BackendError("bad_input", f"mesh has {int(bad.sum())} vertices with NaN/inf coordinates")
    f = f.astype(np.int64)
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise BackendError("bad_input", f"mesh faces index vertices outside 0..{len(v) - 1}")
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    if len(f) == 0:
        raise BackendError("bad_input", "mesh has no (non-degenerate) faces to rig")
    if np.ptp(v, axis=0).max() <= 0:
        raise BackendError("bad_input", "mesh has zero size")
    return v, f


def adjacency(n: int, faces: np.ndarray) -> sp.csr_matrix:
    """Symmetric 0/1 vertex adjacency (N, N) from triangle edges."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    a = ((a + a.T) > 0).astype(np.float64)
    a.setdiag(0)
    a.eliminate_zeros()
    return a.tocsr()


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (zero for isolated vertices)."""
    fn = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    vn = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def neighbour_vote(adj: sp.csr_matrix, labels: np.ndarray, n_labels: int, self_weight: float = 1.0) -> np.ndarray:
    """Label counts over each vertex's 1-ring plus itself, (N, n_labels)."""
    onehot = sp.csr_matrix((np.ones(len(labels)), (np.arange(len(labels)), labels)),
                           shape=(len(labels), n_labels))
    return np.asarray((adj @ onehot).todense()) + self_weight * onehot.toarray()
