"""Lift per-view part labels onto a mesh.

Per view: render the mesh with the orbit camera (a face per pixel), align its silhouette to the
image's with a 2D similarity (centroid and area; corrects a camera model that is slightly off),
and let every object pixel vote for its label on the nearest vertex of the face under it. With
the clip's motion (tracking.py), the later frames vote too, on the mesh posed per frame, where
the first frame is unsure. Vertices no view sees take the label of the nearest labelled vertex
along the mesh graph; then labels are smoothed where the votes are unsure (a low-poly mesh's
vertices, each voted by hundreds of pixels, keep theirs), and parts keep their pieces the views
support.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra

from ..cameras import project
from ..raster import face_index_buffer, nearest_corner
from .mesh import adjacency, neighbour_vote


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


def moved_buffer(buf: np.ndarray, s: float, c_src: np.ndarray, c_dst: np.ndarray) -> np.ndarray:
    """A face buffer (H, W) int32 (-1: background) moved by the 2D similarity x_dst = c_dst + s
    (x_src − c_src), each pixel taking the face under its nearest source pixel: what rendering the
    moved projection again would give up to half a pixel at the faces' edges, at the cost of one
    image lookup instead of a face-by-face fill (the second render was ~40 % of the lift)."""
    m = np.array([[1 / s, 0.0, c_src[0] - c_dst[0] / s], [0.0, 1 / s, c_src[1] - c_dst[1] / s]])
    moved = cv2.warpAffine(buf.astype(np.float32), m, (buf.shape[1], buf.shape[0]),
                           flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=-1.0)
    return moved.astype(np.int32)


def view_votes(vertices: np.ndarray, faces: np.ndarray, cam: dict, label_img: np.ndarray, n_labels: int,
               fit: bool = True) -> tuple[np.ndarray, tuple]:
    """Votes (N, n_labels) of one labelled view (label 0 = background, ignored) and the 2D
    similarity (s, c_model, c_image) that maps the camera's projection onto the image.

    Every object pixel votes for its label on the vertex nearest to it on the visible face under
    it (the largest barycentric coordinate): a vertex gets the votes of the surface around it, so
    a low-poly mesh's few vertices, each next to a part boundary, are labelled by their areas and
    not by the one pixel they project to."""
    h, w = label_img.shape
    uv, depth = project(vertices, cam)
    buf = face_index_buffer(uv, depth, faces, (h, w))
    sim = (1.0, np.zeros(2), np.zeros(2))
    if fit:
        s, c0, c1 = similarity_fit(buf >= 0, label_img > 0)
        if abs(s - 1) > 1e-3 or np.abs(c1 - c0).max() > 0.25:
            uv = c1 + s * (uv - c0)
            buf = moved_buffer(buf, s, c0, c1)
            sim = (s, c0, c1)
    ys, xs, vert = nearest_corner(buf, uv, faces, (label_img > 0) & (label_img <= n_labels))
    votes = np.zeros((len(vertices), n_labels))
    np.add.at(votes, (vert, label_img[ys, xs].astype(np.int64) - 1), 1.0)
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


SURE_SHARE = 0.7  # share of a vertex's votes for its part above which smoothing leaves it alone
DOUBT_VOTES = 5.0  # pixels' worth of doubt added to a vertex's votes: a vertex a few pixels see is never sure
AGREED_VIEWS = 4  # views that must all name a vertex's part before a piece of it too small to count stays


def view_agreement(tops: np.ndarray, label: np.ndarray, min_views: int = AGREED_VIEWS) -> np.ndarray:
    """(N,) bool: vertices that at least ``min_views`` views see and that every view seeing them
    gives most of its votes to ``label`` (N,). tops: (V, N) each view's most voted part per vertex,
    -1 where the view does not see it."""
    seen = tops >= 0
    return (seen.sum(0) >= min_views) & ((tops == label[None]) | ~seen).all(0)


def sure_votes(votes: np.ndarray, share: float = SURE_SHARE, doubt: float = DOUBT_VOTES) -> np.ndarray:
    """(N,) bool: vertices whose most voted part has ≥ ``share`` of their votes plus ``doubt``
    (votes (N, n_labels), pixel counts). Such a vertex is labelled by its own surroundings in the
    views, however few vertices its part has; a vertex seen by a few pixels only (a dense mesh's
    vertex under noisy labels) or split between parts is not."""
    return votes.max(1) >= share * (votes.sum(1) + doubt)


def clean_labels(adj: sp.csr_matrix, labels: np.ndarray, n_labels: int, smooth_iters: int = 2,
                 votes: np.ndarray | None = None, keep_share: float = 0.5, keep_size: int = 10,
                 agreed: np.ndarray | None = None) -> np.ndarray:
    """Majority smoothing on the 1-ring where the views are unsure, then each part's pieces: the
    largest stays, and so does every piece the views clearly support (``votes`` (N, n_labels):
    mean vote share of its label ≥ ``keep_share`` over at least ``keep_size`` vertices: a
    spider's inner leg seen between other legs; or, for a piece too small to count by its
    vertices, a low-poly mesh's two-vertex piece of a part, every vertex of it sure and named by
    all the views that see it, ``agreed`` (N,) bool from ``view_agreement``); other pieces join
    the neighbouring part they touch most. Pieces that touch nothing keep their label.

    With ``votes``, vertices the views are sure of (``sure_votes``) keep their label through the
    smoothing: on a low-poly mesh a part may be one or two rings wide (a figure's clavicle or
    spine part), and a 1-ring majority would hand it to its neighbours; without votes (bones
    edited by hand, reweight.py) every vertex is smoothed."""
    lab = labels.copy()
    keep = sure_votes(votes) if votes is not None else np.zeros(len(lab), bool)
    for _ in range(smooth_iters):
        lab = np.where(keep, labels, neighbour_vote(adj, lab, n_labels, self_weight=1.5).argmax(1))
    share = None
    if votes is not None:
        total = votes.sum(1)
        share = np.where(total[:, None] > 0, votes / np.maximum(total, 1e-12)[:, None], 0.0)
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
                if share is not None and share[piece, k].mean() >= keep_share and (
                        len(piece) >= keep_size or _agreed_piece(piece, k, votes, keep, agreed)):
                    continue  # well supported by the views: a real piece of the part
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


def _agreed_piece(piece: np.ndarray, k: int, votes: np.ndarray, sure: np.ndarray, agreed: np.ndarray | None) -> bool:
    """Every vertex of ``piece`` sure of part ``k`` and named so by all the views that see it."""
    if agreed is None:
        return False
    return bool((sure[piece] & agreed[piece] & (votes[piece].argmax(1) == k)).all())


def lift_labels(vertices: np.ndarray, faces: np.ndarray, cameras: list[dict], label_images: dict[int, np.ndarray],
                n_labels: int) -> tuple[np.ndarray, np.ndarray, dict[int, tuple], np.ndarray, np.ndarray]:
    """Per-vertex part index (N,) in 0..n_labels-1, its vote confidence in [0, 1], the 2D
    similarity fitted per view, the votes (N, n_labels) and whether all the views that see a
    vertex (at least ``AGREED_VIEWS``) name its most voted part (N,) bool.

    vertices: (N, 3) in the cameras' normalised space; label_images: view -> (H, W) labels of
    the first frame (0 = background, 1..n_labels parts).
    """
    votes = np.zeros((len(vertices), n_labels))
    tops = np.full((len(label_images), len(vertices)), -1, np.int32)
    fits = {}
    for i, (v, img) in enumerate(label_images.items()):
        vv, fits[v] = view_votes(vertices, faces, cameras[v], img, n_labels)
        votes += vv
        tops[i] = np.where(vv.sum(1) > 0, vv.argmax(1), -1)
    agreed = view_agreement(tops, votes.argmax(1))
    lab, conf = labels_from_votes(vertices, faces, votes, n_labels, agreed)
    return lab, conf, fits, votes, agreed


def labels_from_votes(vertices: np.ndarray, faces: np.ndarray, votes: np.ndarray, n_labels: int,
                      agreed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), confidence (N,)): the most voted part; unseen vertices take the nearest
    labelled vertex's along the mesh graph (then in space); then clean_labels (``agreed`` (N,):
    see lift_labels)."""
    total = votes.sum(1)
    lab = np.where(total > 0, votes.argmax(1), -1)
    conf = np.where(total > 0, votes.max(1) / np.maximum(total, 1e-12), 0.0)
    adj = adjacency(len(vertices), faces)
    lab = nearest_fill(vertices, propagate(adj, lab))
    return clean_labels(adj, lab, n_labels, votes=votes, agreed=agreed), conf


def frame_votes(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, world: np.ndarray,
                label_images: np.ndarray, present: np.ndarray, views, part_ids: list[int],
                weight: np.ndarray | None = None) -> np.ndarray:
    """Votes (N, P) of frames 1.. (label_images (T, V, H, W)): the mesh posed by each part's
    transform world (T, P, 4, 4); visible surface samples (splatted depth) vote for the part
    their pixel shows, on their nearest vertex, weighted by ``weight`` (P,) of the part that
    posed them (how much its motion is trusted)."""
    from .views import SurfaceSamples, visible_among

    n, p = len(vertices), len(part_ids)
    lookup = np.zeros(int(max(part_ids, default=0)) + 2, np.int64) - 1
    lookup[np.asarray(part_ids)] = np.arange(p)
    samples = SurfaceSamples.of(vertices, faces, count=max(20000, 3 * len(faces)))
    nearest = samples.faces[np.arange(len(samples.faces)), samples.bary.argmax(1)]
    trust = np.ones(p) if weight is None else np.asarray(weight, float)
    cells, weights = [], []  # every vote in order: (vertex, part) as one index, and its weight
    h, w = label_images.shape[2:]
    for t in range(1, label_images.shape[0]):
        m = world[t][labels]
        posed = np.einsum("nij,nj->ni", m[:, :3, :3], vertices) + m[:, :3, 3]
        pts = samples.points(posed)
        for v in np.nonzero(present[t])[0]:
            u, d = views.project(pts, v)
            vis = visible_among(u, d, views.size, 3)
            px = np.round(u).astype(np.int64)
            ok = vis & (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
            idx = np.nonzero(ok)[0]
            lab = lookup[np.minimum(label_images[t, v][px[idx, 1], px[idx, 0]], len(lookup) - 1)]
            good = lab >= 0
            vert = nearest[idx[good]]
            cells.append(vert * p + lab[good])
            weights.append(trust[labels[vert]])
    if not cells:
        return np.zeros((n, p))
    # summed in order from zero, as adding each vote in turn would
    return np.bincount(np.concatenate(cells), np.concatenate(weights), minlength=n * p).reshape(n, p)
