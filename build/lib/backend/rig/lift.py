"""Lift per-view part labels onto a mesh.

Per view: project the vertices with the orbit camera, align the projected silhouette to the
image's silhouette with a 2D similarity (centroid and area; corrects a camera model that is
slightly off), keep the vertices that pass a depth test, and vote with a weight that favours
surfaces facing the camera. Vertices no view sees take the label of the nearest labelled
vertex along the mesh graph; then labels are smoothed and each part is made connected.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra

from ..cameras import project, view_direction
from ..raster import depth_from_faces, face_index_buffer
from .mesh import adjacency, neighbour_vote, vertex_normals


def similarity_fit(src_mask: np.ndarray, dst_mask: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale s and centroids (c_src, c_dst) with  x_dst = c_dst + s (x_src - c_src)."""
    def moments(m):
        ys, xs = np.nonzero(m)
        return len(xs), np.array([xs.mean(), ys.mean()]) if len(xs) else np.zeros(2)
    a0, c0 = moments(src_mask)
    a1, c1 = moments(dst_mask)
    if a0 == 0 or a1 == 0:
        return 1.0, c0, c0
    return float(np.sqrt(a1 / a0)), c0, c1


def view_votes(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, cam: dict,
               label_img: np.ndarray, n_labels: int, fit: bool = True,
               depth_tol: float = 0.03) -> tuple[np.ndarray, tuple[float, np.ndarray, np.ndarray]]:
    """Votes (N, n_labels) of one labelled view (label 0 = background, ignored) and the 2D
    similarity (s, c_model, c_image) that maps the camera's projection onto the image."""
    h, w = label_img.shape
    uv, depth = project(vertices, cam)
    buf = face_index_buffer(uv, depth, faces, (h, w))
    sim = (1.0, np.zeros(2), np.zeros(2))
    if fit:
        s, c0, c1 = similarity_fit(buf >= 0, label_img > 0)
        if abs(s - 1) > 1e-3 or np.abs(c1 - c0).max() > 0.25:
            uv = c1 + s * (uv - c0)
            buf = face_index_buffer(uv, depth, faces, (h, w))
            sim = (s, c0, c1)
    zbuf = depth_from_faces(buf, depth, faces)
    zmin = -cv2.dilate(-np.where(np.isfinite(zbuf), zbuf, 1e9).astype(np.float32), np.ones((3, 3), np.uint8))
    px = np.round(uv).astype(np.int64)
    inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    votes = np.zeros((len(vertices), n_labels))
    idx = np.nonzero(inside)[0]
    x, y = px[idx, 0], px[idx, 1]
    visible = depth[idx] <= zmin[y, x] + depth_tol
    idx, x, y = idx[visible], x[visible], y[visible]
    lab = label_img[y, x].astype(np.int64)
    ok = (lab > 0) & (lab <= n_labels)
    facing = np.abs(normals[idx[ok]] @ view_direction(cam))
    np.add.at(votes, (idx[ok], lab[ok] - 1), 0.1 + facing)
    return votes, sim


def propagate(adj: sp.csr_matrix, labels: np.ndarray) -> np.ndarray:
    """Give unlabelled vertices (-1) the label of the nearest labelled vertex on the graph;
    vertices in components with no label at all get the label of the nearest labelled vertex
    in space (handled by the caller via ``nearest_fill``)."""
    known = np.nonzero(labels >= 0)[0]
    out = labels.copy()
    if len(known) == 0 or len(known) == len(labels):
        return out
    _, _, src = dijkstra(adj, directed=False, indices=known, min_only=True, return_predecessors=True)
    reach = src >= 0
    out[reach] = labels[src[reach]]
    return out


def nearest_fill(vertices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    out = labels.copy()
    miss = out < 0
    if miss.any() and (~miss).any():
        _, j = cKDTree(vertices[~miss]).query(vertices[miss])
        out[miss] = labels[~miss][j]
    out[out < 0] = 0
    return out


def clean_labels(adj: sp.csr_matrix, labels: np.ndarray, n_labels: int, smooth_iters: int = 2) -> np.ndarray:
    """Majority smoothing on the 1-ring, then keep each part's largest connected piece (other
    pieces join the neighbouring part they touch most); pieces that touch nothing are kept."""
    lab = labels.copy()
    for _ in range(smooth_iters):
        lab = neighbour_vote(adj, lab, n_labels, self_weight=1.5).argmax(1)
    coo = adj.tocoo()
    for _ in range(3):
        changed = False
        for k in range(n_labels):
            m = np.nonzero(lab == k)[0]
            if len(m) == 0:
                continue
            sub = adj[m][:, m]
            nc, comp = connected_components(sub, directed=False)
            if nc <= 1:
                continue
            sizes = np.bincount(comp)
            for c in np.argsort(-sizes)[1:]:
                piece = m[comp == c]
                inp = np.zeros(len(lab), bool)
                inp[piece] = True
                e = inp[coo.row] & ~inp[coo.col]
                if not e.any():
                    continue  # an island component: keep its label
                lab[piece] = np.bincount(lab[coo.col[e]], minlength=n_labels).argmax()
                changed = True
        if not changed:
            break
    return lab


def lift_labels(vertices: np.ndarray, faces: np.ndarray, cameras: list[dict], label_images: dict[int, np.ndarray],
                n_labels: int) -> tuple[np.ndarray, np.ndarray, dict[int, tuple]]:
    """Per-vertex part index (N,) in 0..n_labels-1, its vote confidence in [0, 1] and the 2D
    similarity fitted per view.

    vertices: (N, 3) in the cameras' normalised space; label_images: view -> (H, W) labels of
    the first frame (0 = background, 1..n_labels parts).
    """
    normals = vertex_normals(vertices, faces)
    votes = np.zeros((len(vertices), n_labels))
    fits = {}
    for v, img in label_images.items():
        vv, fits[v] = view_votes(vertices, faces, normals, cameras[v], img, n_labels)
        votes += vv
    total = votes.sum(1)
    lab = np.where(total > 0, votes.argmax(1), -1)
    conf = np.where(total > 0, votes.max(1) / np.maximum(total, 1e-12), 0.0)
    adj = adjacency(len(vertices), faces)
    lab = nearest_fill(vertices, propagate(adj, lab))
    return clean_labels(adj, lab, n_labels), conf, fits
