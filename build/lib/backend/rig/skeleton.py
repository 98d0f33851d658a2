"""A skeleton from parts on a mesh: kinematic tree, joints, bones with names.

The tree is a maximum spanning tree of the part adjacency graph (weight = number of mesh edges
two parts share), grown from the root part (the largest); parts that touch nothing attach to
the nearest part. Each child's joint is the centre of its boundary with its parent. One deform
bone per part runs from its joint to its single child's joint, or along the part towards its far
end; a non-deform ``root`` bone on the ground parents everything. Mirror pairs get .L/.R names.
"""

from __future__ import annotations

import numpy as np

from .mesh import adjacency

ROOT = "root"


def part_adjacency(adj, labels: np.ndarray, n_parts: int) -> np.ndarray:
    """Counts (P, P) of mesh edges between parts."""
    coo = adj.tocoo()
    a, b = labels[coo.row], labels[coo.col]
    m = a != b
    c = np.zeros((n_parts, n_parts))
    np.add.at(c, (a[m], b[m]), 1)
    return c


def kinematic_tree(counts: np.ndarray, centroids: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Parent index per part (-1 for the root) by Prim's algorithm on shared-edge counts."""
    p = len(sizes)
    present = sizes > 0
    root = int(np.argmax(sizes))
    parent = np.full(p, -1)
    in_tree = np.zeros(p, bool)
    in_tree[root] = True
    while (present & ~in_tree).any():
        out = np.nonzero(present & ~in_tree)[0]
        ins = np.nonzero(in_tree)[0]
        w = counts[np.ix_(ins, out)]
        if w.max() > 0:
            i, j = np.unravel_index(np.argmax(w), w.shape)
        else:  # disconnected part: attach to the nearest part in the tree
            d = np.linalg.norm(centroids[ins][:, None] - centroids[out][None], axis=2)
            i, j = np.unravel_index(np.argmin(d), d.shape)
        parent[out[j]] = ins[i]
        in_tree[out[j]] = True
    return parent


def _mirror_names(centroids: np.ndarray, sizes: np.ndarray, parent: np.ndarray, root: int,
                  extent: np.ndarray) -> list[str]:
    """'torso' for the root, 'part_NN' otherwise, with .L/.R for mirror pairs (similar size,
    mirrored centroids) across the lateral plane (X or Y through the root's centroid) that pairs
    the most parts, the closer match winning a tie."""
    p = len(parent)
    names = ["torso" if i == root else f"part_{i:02d}" for i in range(p)]
    best = None
    for axis in (0, 1):
        ref = centroids.copy()
        ref[:, axis] = 2 * centroids[root, axis] - ref[:, axis]
        d = np.linalg.norm(ref[:, None] - centroids[None], axis=2)
        pairs, err = [], 0.0
        for i in range(p):
            j = int(np.argmin(d[i]))
            off = abs(centroids[i, axis] - centroids[root, axis])
            similar = min(sizes[i], sizes[j]) >= 0.7 * max(sizes[i], sizes[j])
            if (j != i and int(np.argmin(d[j])) == i and d[i, j] < 0.08 * extent.max()
                    and off > 0.03 * extent.max() and similar):
                pairs.append((i, j))
                err += d[i, j]
        if best is None or (len(pairs), -err) > (len(best[1]), -best[2]):
            best = (axis, pairs, err)
    axis, pairs, _ = best
    for i, j in pairs:
        if i < j:
            # facing -Y (Blender's front) the left side is +X; facing +X it is +Y
            left, right = (i, j) if centroids[i, axis] > centroids[j, axis] else (j, i)
            names[left] = f"part_{min(i, j):02d}.L"
            names[right] = f"part_{min(i, j):02d}.R"
    return names


def part_tree(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, n_parts: int) -> dict:
    """Parent per part, boundary joints, centroids and sizes of the parts of a labelled mesh."""
    adj = adjacency(len(vertices), faces)
    sizes = np.bincount(labels, minlength=n_parts)
    centroids = np.stack([vertices[labels == k].mean(0) if sizes[k] else np.zeros(3) for k in range(n_parts)])
    parent = kinematic_tree(part_adjacency(adj, labels, n_parts), centroids, sizes)
    coo = adj.tocoo()
    joints = centroids.copy()
    for c in range(n_parts):
        p = parent[c]
        if p < 0 or not sizes[c]:
            continue
        e = (labels[coo.row] == c) & (labels[coo.col] == p)
        if e.any():
            joints[c] = 0.5 * (vertices[coo.row[e]].mean(0) + vertices[coo.col[e]].mean(0))
        else:
            from scipy.spatial import cKDTree

            vc, vp = vertices[labels == c], vertices[labels == p]
            d, j = cKDTree(vp).query(vc)
            i = int(np.argmin(d))
            joints[c] = 0.5 * (vc[i] + vp[j[i]])
    extents = np.array([np.linalg.norm(vertices[labels == k] - centroids[k], axis=1).max() if sizes[k] else 0.0
                        for k in range(n_parts)])
    return {"parent": parent, "joints": joints, "centroids": centroids, "sizes": sizes, "extents": extents,
            "root": int(np.argmax(sizes))}


def skeleton_from(vertices: np.ndarray, labels: np.ndarray, tree: dict, joints: np.ndarray | None = None) -> dict:
    """Skeleton dict (rest pose, same space as ``vertices``); see docs/job-folder.md."""
    parent, centroids, sizes, root = tree["parent"], tree["centroids"], tree["sizes"], tree["root"]
    joints = tree["joints"] if joints is None else joints
    n_parts = len(sizes)
    lo, hi = vertices.min(0), vertices.max(0)
    extent = hi - lo
    children = [np.nonzero(parent == k)[0] for k in range(n_parts)]
    heads = np.zeros((n_parts, 3))
    tails = np.zeros((n_parts, 3))
    for k in range(n_parts):
        pts = vertices[labels == k]
        if not len(pts):
            continue
        if k == root:
            x = pts - centroids[k]
            axis = np.linalg.svd(x, full_matrices=False)[2][0]
            proj = x @ axis
            heads[k] = centroids[k] + axis * np.percentile(proj, 10)
            tails[k] = centroids[k] + axis * np.percentile(proj, 90)
            continue
        heads[k] = joints[k]
        if len(children[k]) == 1:
            tails[k] = joints[children[k][0]]
        else:
            d = centroids[k] - heads[k]
            if np.linalg.norm(d) < 1e-9:
                d = np.linalg.svd(pts - centroids[k], full_matrices=False)[2][0]
            d /= np.linalg.norm(d)
            reach = np.percentile((pts - heads[k]) @ d, 95)
            tails[k] = heads[k] + d * max(reach, 0.02 * extent.max())
        if np.linalg.norm(tails[k] - heads[k]) < 1e-3 * extent.max():
            tails[k] = heads[k] + np.array([0, 0, 0.05 * extent.max()])
    names = _mirror_names(centroids, sizes, parent, root, extent)
    root_head = np.array([centroids[root][0], centroids[root][1], lo[2]])
    bones = [{"name": ROOT, "parent": None, "head": root_head.tolist(),
              "tail": (root_head + [0, 0.25 * extent.max(), 0]).tolist(), "roll": 0.0,
              "deform": False, "part": None}]
    order = sorted((k for k in range(n_parts) if sizes[k]), key=lambda k: _depth(parent, k))
    for k in order:
        bones.append({"name": names[k], "parent": ROOT if parent[k] < 0 else names[parent[k]],
                      "head": heads[k].tolist(), "tail": tails[k].tolist(), "roll": 0.0,
                      "deform": True, "part": int(k)})
    return {"bones": bones,
            "joints": [{"part": int(k), "parent_part": int(parent[k]), "position": joints[k].tolist()}
                       for k in order if parent[k] >= 0],
            "parts": [{"part": int(k), "bone": names[k], "vertices": int(sizes[k]),
                       "centroid": centroids[k].tolist()} for k in order]}


def build_skeleton(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, n_parts: int) -> dict:
    """Skeleton from a labelled mesh with joints at the part boundaries (no motion)."""
    return skeleton_from(vertices, labels, part_tree(vertices, faces, labels, n_parts))


def _depth(parent: np.ndarray, k: int) -> int:
    d = 0
    while parent[k] >= 0:
        k, d = parent[k], d + 1
    return d
