"""The kinematic structure of a labelled mesh: which parts touch, the mirror plane, the root and
the tree.

- Contacts: mesh edges shared by two parts (their boundary), plus, for pieces that share no edge
  (separate meshes overlapping at a joint, as in low-poly and mechanical assets), surface points
  of two parts within a small distance of each other; shared boundaries always win.
- Symmetry: the vertical plane (normal X or Y) through the object's centre that mirrors most
  parts onto a part of similar size; parts on it are *mid* parts, the others *sided*.
- Tree: a maximum spanning tree of the contacts in which a sided part never hangs from a part of
  the other side, directed away from the root; the contacts between mid parts first, each
  weighted by whether it lies between the two parts, pooled with its mirror image; a part's stray
  pieces that touch none of its neighbours first join the part they lie on.
- Root, from structure, never from size (the largest part is often the head): a part that alone
  stands on the ground with a broad footprint is a *base* (lamps, robot arms, chests); otherwise,
  for a creature, the mid parts form the spine chain from the head (the higher end of an upright
  body; of a horizontal one, the end the limbs hang from, else the bulkier end) to the tail, and
  the root is the spine part, farthest from the head, that limbs hang from (the hips of a biped
  or a quadruped, the body of a spider or a bird); without limbs or symmetry, the part at the
  tree's weighted centre.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree, shortest_path

from .mesh import adjacency

MID, LEFT, RIGHT = 0, 1, -1
MIN_PART_VERTICES = 30  # a part with fewer vertices does not resolve where along it, or beside it, a contact lies
MID_SIDE = 0.5  # an end factor below this: the contact lies along the middle of an elongated part (hang_by_ends)


@dataclass
class Structure:
    """Parts of a labelled mesh and how they hang together (P parts)."""
    parent: np.ndarray  # (P,) parent part, -1 for the root
    root: int
    side: np.ndarray  # (P,) MID, LEFT or RIGHT
    mirror_axis: int | None  # 0 (X) or 1 (Y): the normal of the mirror plane, None without symmetry
    mirror_of: np.ndarray  # (P,) the mirror partner of a sided part, -1 otherwise
    contact: np.ndarray  # (P, P) contact strength
    contact_centre: np.ndarray  # (P, 3) centre of each part's contact with its parent (root: its centroid)
    centroids: np.ndarray  # (P, 3)
    areas: np.ndarray  # (P,) surface area
    sizes: np.ndarray  # (P,) vertex count
    base: bool  # the root is a base standing on the ground
    head: int  # the head part of a creature's spine chain, -1 if none
    spine: list[int]  # the spine chain from the root's far end to the head (mid parts), may be empty
    pair_weight: np.ndarray  # (P, P) the contacts as the tree weighed them (between, end to end, mirrored)
    pair_centre: np.ndarray  # (P, P, 3) centre of each pair's contact (meaningless where contact is 0)

    def subtree(self, k: int) -> np.ndarray:
        """(P,) bool: part k and every part below it."""
        return subtree(self.parent, k)

    def rehung(self, moves: dict[int, int]) -> Structure:
        """The structure with each child k of ``moves`` hung from moves[k] instead (its subtree
        with it), its joint's contact centre the new pair's where the two touch. A creature's
        root follows its limbs: where the moves leave another spine part the first, from the
        tail end, that limbs hang from (choose_root's rule), the tree is turned to hang from it
        (a dragon whose shoulders touched its oversized head more than its torso had the head
        for root; moved to the torso by their motion, they make the torso the root)."""
        parent, cc = self.parent.copy(), self.contact_centre.copy()
        for k, q in moves.items():
            parent[k] = q
            if self.contact[k, q] > 0:
                cc[k] = self.pair_centre[k, q]
        root = self.root
        if not self.base and root in self.spine:
            hubs = limb_hubs(self.spine, parent, self.side)
            if hubs and hubs[0] != root:
                root = hubs[0]
                path = [root]  # the new root up to the old one: each of these edges turns round
                while parent[path[-1]] >= 0:
                    path.append(int(parent[path[-1]]))
                for child, above in zip(path[:-1], path[1:], strict=True):
                    parent[above] = child
                    cc[above] = self.pair_centre[above, child] if self.contact[above, child] > 0 \
                        else 0.5 * (self.centroids[above] + self.centroids[child])
                parent[root], cc[root] = -1, self.centroids[root]
        return replace(self, parent=parent, contact_centre=cc, root=root)


def limb_hubs(spine: list[int], parent: np.ndarray, side: np.ndarray) -> list[int]:
    """The spine parts, in the spine's order, that a sided part (a limb) hangs from; parent (P,),
    side (P,)."""
    return [k for k in spine if (side[parent == k] != MID).any()]


def subtree(parent: np.ndarray, k: int) -> np.ndarray:
    """(P,) bool: part k and every part below it in the tree ``parent`` (P,)."""
    below = np.zeros(len(parent), bool)
    below[k] = True
    while True:
        grow = below | ((parent >= 0) & below[np.maximum(parent, 0)])
        if (grow == below).all():
            return below
        below = grow


def part_stats(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, n: int):
    """(centroids (P, 3), areas (P,), sizes (P,)) of the parts; a face's area goes to its first corner's part."""
    sizes = np.bincount(labels, minlength=n)
    cent = np.zeros((n, 3))
    np.add.at(cent, labels, vertices)
    cent /= np.maximum(sizes, 1)[:, None]
    fa = 0.5 * np.linalg.norm(np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]],
                                       vertices[faces[:, 2]] - vertices[faces[:, 0]]), axis=1)
    areas = np.bincount(labels[faces[:, 0]], weights=fa, minlength=n)
    return cent, areas, sizes


def surface_samples(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, count: int = 20000,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted random points on the surface (S, 3) with the part of their face's first corner."""
    fa = 0.5 * np.linalg.norm(np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]],
                                       vertices[faces[:, 2]] - vertices[faces[:, 0]]), axis=1)
    if fa.sum() <= 0:
        return vertices, labels
    rng = np.random.default_rng(seed)
    fi = rng.choice(len(faces), count, p=fa / fa.sum())
    r = rng.random((count, 2))
    flip = r.sum(1) > 1
    r[flip] = 1 - r[flip]
    tri = vertices[faces[fi]]
    pts = tri[:, 0] + r[:, :1] * (tri[:, 1] - tri[:, 0]) + r[:, 1:] * (tri[:, 2] - tri[:, 0])
    return np.concatenate([pts, vertices]), np.concatenate([labels[faces[fi, 0]], labels])


def cross_part_pairs(points: np.ndarray, labels: np.ndarray, reach: float) -> np.ndarray:
    """(K, 2) index pairs of points (S, 3) of different parts (labels (S,)) closer than ``reach``:
    a KD-tree per part, queried only against the parts whose boxes come that close. The same
    pairs as one tree's ``query_pairs`` filtered to different labels, without enumerating the
    many pairs inside a part (20 per cross pair on the spider)."""
    from scipy.spatial import cKDTree

    ids = [np.nonzero(labels == p)[0] for p in np.unique(labels)]
    trees = [cKDTree(points[i]) for i in ids]
    lo = np.array([points[i].min(0) for i in ids])
    hi = np.array([points[i].max(0) for i in ids])
    out = [np.zeros((0, 2), np.int64)]
    for a in range(len(ids)):
        for b in range(a + 1, len(ids)):
            if (lo[a] > hi[b] + reach).any() or (lo[b] > hi[a] + reach).any():
                continue
            m = trees[a].sparse_distance_matrix(trees[b], reach, output_type="ndarray")
            if len(m):
                out.append(np.stack([ids[a][m["i"]], ids[b][m["j"]]], 1))
    return np.concatenate(out)


def contacts(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, n: int,
             reach: float = 0.015, samples: tuple[np.ndarray, np.ndarray] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(strength (P, P), centre (P, P, 3)) of every pair's contact: shared mesh edges (strength
    ≥ 1 per edge), else surface points of the two parts closer than ``reach`` × the diagonal
    (strength < 1, so that a shared boundary always wins). ``samples``: surface_samples' output
    when the caller has it already."""
    adj = adjacency(len(vertices), faces).tocoo()
    a, b = labels[adj.row], labels[adj.col]
    m = a != b
    strength = np.zeros((n, n))
    np.add.at(strength, (a[m], b[m]), 1.0)
    centre_sum = np.zeros((n, n, 3))
    mid = 0.5 * (vertices[adj.row[m]] + vertices[adj.col[m]])
    np.add.at(centre_sum, (a[m], b[m]), mid)
    diag = float(np.linalg.norm(np.ptp(vertices, axis=0)))
    pts, lab = samples if samples is not None else surface_samples(vertices, faces, labels)
    pairs = cross_part_pairs(pts, lab, reach * diag)
    near = np.zeros((n, n))
    near_sum = np.zeros((n, n, 3))
    if len(pairs):
        la, lb = lab[pairs[:, 0]], lab[pairs[:, 1]]
        pm = 0.5 * (pts[pairs[:, 0]] + pts[pairs[:, 1]])
        for x, y in ((la, lb), (lb, la)):
            np.add.at(near, (x, y), 1.0)
            np.add.at(near_sum, (x, y), pm)
    use_near = (strength == 0) & (near > 0)
    total = np.where(use_near, near, strength)
    csum = np.where(use_near[..., None], near_sum, centre_sum)
    centre = csum / np.maximum(total, 1e-12)[..., None]
    weight = np.where(use_near, near / (near.max() + 1.0), strength)
    return weight, centre


def mirror_error(vertices: np.ndarray, axis: int, centre: float, samples: int = 4000) -> float:
    """Mean distance from the mirrored surface to the surface (vertices), in units of the diagonal."""
    from scipy.spatial import cKDTree

    v = vertices[np.random.default_rng(0).choice(len(vertices), min(samples, len(vertices)), replace=False)]
    m = v.copy()
    m[:, axis] = 2 * centre - m[:, axis]
    diag = float(np.linalg.norm(np.ptp(vertices, axis=0)))
    return float(cKDTree(v).query(m)[0].mean() / max(diag, 1e-12))


def find_symmetry(vertices: np.ndarray, centroids: np.ndarray, areas: np.ndarray, max_error: float = 0.03):
    """(axis, side (P,), mirror_of (P,)) of the vertical mirror plane (normal X or Y through the
    bounding box's centre) that maps the surface best onto itself, if it does within
    ``max_error`` × the diagonal; parts pair with the part nearest their mirrored centroid
    (within 5 % of the diagonal, areas within a factor 1.8, at least one of the two off the
    plane by 2 % of the diagonal); side is +1/-1 along the axis for paired parts (opposite within
    a pair) and MID otherwise."""
    p = len(centroids)
    lo, hi = vertices.min(0), vertices.max(0)
    extent = float(np.linalg.norm(hi - lo))
    centre = 0.5 * (lo + hi)
    errors = [mirror_error(vertices, axis, centre[axis]) for axis in (0, 1)]
    axis = int(np.argmin(errors))
    if errors[axis] > max_error:
        return None, np.zeros(p, int), np.full(p, -1)
    ref = centroids.copy()
    ref[:, axis] = 2 * centre[axis] - ref[:, axis]
    d = np.linalg.norm(ref[:, None] - centroids[None], axis=2)
    off = centroids[:, axis] - centre[axis]
    mirror = np.full(p, -1)
    for i in range(p):
        j = int(np.argmin(d[i]))
        ratio = max(areas[i], areas[j]) / max(min(areas[i], areas[j]), 1e-12)
        if (j != i and int(np.argmin(d[j])) == i and d[i, j] < 0.05 * extent and abs(off[i]) > 0.02 * extent
                and ratio < 1.8):
            mirror[i] = j
    side = np.where(mirror >= 0, np.sign(off).astype(int), MID)
    for i in np.nonzero(mirror >= 0)[0]:  # a pair is a pair both ways, on the two sides, though one of the
        j = mirror[i]                       # two (a gripper finger with a piece of the hand) sits near the plane
        if mirror[j] < 0:
            mirror[j], side[j] = i, -side[i]
    return axis, side, mirror


def spanning_tree(weight: np.ndarray, side: np.ndarray, mid_first: bool = True) -> np.ndarray:
    """(P, P) boolean adjacency of a maximum spanning tree of the contacts, edges between the
    two sides forbidden; parts with no usable contact join the nearest component later. With
    symmetry (some parts sided), ``mid_first``: the contacts between mid parts come before all
    others, so the body's parts (on the mirror plane) hang from each other and never from a limb
    that touches two of them (a spider's hind leg touching both its cephalothorax and its
    abdomen)."""
    w = weight.copy()
    w = np.maximum(w, w.T)
    cross = (side[:, None] * side[None]) < 0
    w[cross] = 0
    mid = side == MID
    if mid_first and (~mid).any():
        body = mid[:, None] & mid[None] & (w > 0)
        w[body] += w.max() + 1.0
    cost = np.where(w > 0, 1.0 / (w + 1e-9), 0.0)  # maximum spanning tree = minimum of 1/w
    t = minimum_spanning_tree(sp.csr_matrix(cost)).toarray() > 0
    return t | t.T


def connect_components(tree: np.ndarray, centroids: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Join the tree's components by their closest centroids (never across sides if avoidable)."""
    tree = tree.copy()
    while True:
        n, comp = connected_components(sp.csr_matrix(tree), directed=False)
        if n <= 1:
            return tree
        big = np.argmax(np.bincount(comp))
        ins, outs = np.nonzero(comp == big)[0], np.nonzero(comp != big)[0]
        d = np.linalg.norm(centroids[ins][:, None] - centroids[outs][None], axis=2)
        d = d + 1e3 * ((side[ins][:, None] * side[outs][None]) < 0)
        i, j = np.unravel_index(np.argmin(d), d.shape)
        tree[ins[i], outs[j]] = tree[outs[j], ins[i]] = True


def orient(tree: np.ndarray, root: int) -> np.ndarray:
    """Parent of every part when the undirected tree hangs from ``root``."""
    p = len(tree)
    parent = np.full(p, -1)
    seen = np.zeros(p, bool)
    seen[root] = True
    stack = [root]
    while stack:
        k = stack.pop()
        for c in np.nonzero(tree[k])[0]:
            if not seen[c]:
                seen[c], parent[c] = True, k
                stack.append(int(c))
    return parent


def _ground_base(vertices: np.ndarray, labels: np.ndarray, n: int) -> int:
    """The part that alone stands on the ground with a broad footprint, or -1."""
    z = vertices[:, 2]
    height = np.ptp(z)
    floor = z < z.min() + 0.02 * height
    counts = np.bincount(labels[floor], minlength=n)
    k = int(np.argmax(counts))
    if counts[k] < 0.7 * counts.sum():
        return -1
    xy = vertices[:, :2]
    area = np.prod(np.ptp(xy, axis=0))
    foot = np.prod(np.ptp(xy[floor & (labels == k)], axis=0))
    return k if area > 0 and foot >= 0.25 * area else -1


def _tree_centre(tree: np.ndarray, weights: np.ndarray) -> int:
    """The part minimising the weighted sum of tree distances to all parts."""
    d = shortest_path(sp.csr_matrix(tree.astype(float)), unweighted=True, directed=False)
    d[~np.isfinite(d)] = len(tree)
    return int(np.argmin(d @ weights))


def choose_root(tree: np.ndarray, vertices: np.ndarray, labels: np.ndarray, centroids: np.ndarray,
                areas: np.ndarray, side: np.ndarray, has_symmetry: bool) -> tuple[int, bool, int, list[int]]:
    """(root, is a base, head part or -1, spine chain from its far end to the head)."""
    n = len(tree)
    base = _ground_base(vertices, labels, n)
    if base >= 0:
        return base, True, -1, []
    if not has_symmetry:
        return _tree_centre(tree, areas), False, -1, []
    mid = side == MID
    sub = tree & mid[:, None] & mid[None]
    mids = np.nonzero(mid)[0]
    if len(mids) == 0:
        return _tree_centre(tree, areas), False, -1, []
    # the spine: the longest path among the mid parts (both ends are chain ends)
    d = shortest_path(sp.csr_matrix(sub.astype(float)), unweighted=True, directed=False, return_predecessors=False)
    dm = np.where(np.isfinite(d), d, -1)[np.ix_(mids, mids)]
    a, b = np.unravel_index(np.argmax(dm), dm.shape)
    a, b = int(mids[a]), int(mids[b])
    height = max(np.ptp(vertices[:, 2]), 1e-12)

    def is_hub(k):
        return any(side[c] != MID for c in np.nonzero(tree[k])[0])

    def a_is_head():
        dz = centroids[a, 2] - centroids[b, 2]
        along = float(np.linalg.norm(centroids[a, :2] - centroids[b, :2]))
        if abs(dz) > 0.15 * height and abs(dz) > along:  # an upright body (steeper than 45°): the higher end
            return dz > 0
        if is_hub(a) != is_hub(b):  # a horizontal body whose limbs hang from one end: that is the front
            return is_hub(a)
        return 2.0 * dz / height + 0.5 * np.log(max(areas[a], 1e-12) / max(areas[b], 1e-12)) >= 0

    head, tail = (a, b) if a_is_head() else (b, a)
    _, pred = shortest_path(sp.csr_matrix(sub.astype(float)), unweighted=True, directed=False, indices=head,
                            return_predecessors=True)
    chain = [tail]
    while chain[-1] != head and pred[chain[-1]] >= 0:
        chain.append(int(pred[chain[-1]]))
    if chain[-1] != head:
        chain = [head]
    hubs = [k for k in chain if any(side[c] != MID for c in np.nonzero(tree[k])[0])]
    if hubs:
        return hubs[0], False, head, chain  # the chain runs from the tail end: the first hub is farthest from the head
    weights = areas.copy()
    c = _tree_centre(tree, weights)
    return (c if mid[c] else chain[len(chain) // 2]), False, head, chain


def detach_strays(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Labels (N,) with the stray pieces of the parts given to the part they lie on.

    Lifting keeps a part's extra pieces that the views support (a spider's inner leg seen between
    other legs), but noisy views (two parts' colours swapped in one, a leg tip's colour bleeding
    onto its neighbour's) also leave pieces of a part on a part far from it in the tree: a leg
    tip's piece at the end of the neighbouring leg's tip. Such a piece makes a contact that hangs
    one leg from the other and drags the part's motion and joint. The tree of the parts' main
    (largest) pieces alone says which parts are a part's neighbours; a piece that touches (shares
    mesh edges with) none of its part's neighbours joins the part it touches most. Pieces that
    touch nothing (separate meshes) keep their label."""
    adj = adjacency(len(vertices), faces)
    main = np.zeros(len(labels), bool)
    pieces = []
    for k in range(n):
        m = np.nonzero(labels == k)[0]
        if len(m) == 0:
            continue
        nc, comp = connected_components(adj[m][:, m], directed=False)
        big = int(np.argmax(np.bincount(comp)))
        main[m[comp == big]] = True
        pieces += [(k, m[comp == c]) for c in range(nc) if c != big]
    if not pieces:
        return labels
    mains = np.where(main, labels, n)  # the stray pieces as one extra label, left out of the tree
    cent, areas, _ = part_stats(vertices, faces, mains, n + 1)
    weight, _ = contacts(vertices, faces, mains, n + 1)
    _, side, _ = find_symmetry(vertices, cent[:n], areas[:n])
    tree = spanning_tree(weight[:n, :n], side)
    out = labels.copy()
    coo = adj.tocoo()
    for k, piece in pieces:
        inside = np.zeros(len(labels), bool)
        inside[piece] = True
        e = inside[coo.row] & ~inside[coo.col]
        touched = np.bincount(labels[coo.col[e]], minlength=n)
        if touched.sum() == 0 or tree[k, touched > 0].any():
            continue
        out[piece] = int(np.argmax(touched))
    return out


def between(weight: np.ndarray, centroids: np.ndarray, centre: np.ndarray, floor: float = 0.05,
            small: np.ndarray | None = None) -> np.ndarray:
    """Contacts (P, P) re-weighted by whether each lies between its two parts' centroids: a child
    continues away from its parent through their joint (a leg from the body outwards, a chain's
    next segment onwards), while a contact that a limb makes along the side of a part it passes
    (a spider's hind leg brushing the abdomen, its labels bled by noisy views) has both centroids
    on one side of it. ((1 + cos)/2)³ of the angle between contact − centroid(a) and
    centroid(b) − contact, at least ``floor``; the same both ways. ``small`` (P,) marks parts of
    too few vertices for their centroid to say where they lie (an artist's low-poly clavicle of
    2–4 vertices lying along the chest's top, whose contact with the chest reads as "beside"):
    their contacts keep their whole weight, as end_to_end keeps them."""
    u = centre - centroids[:, None]
    v = centroids[None] - centre
    cos = (u * v).sum(-1) / np.maximum(np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1), 1e-12)
    factor = np.clip((0.5 * (1 + cos)) ** 3, floor, 1.0)
    if small is not None:
        factor[small] = 1.0
        factor[:, small] = 1.0
    return weight * factor


def end_to_end(weight: np.ndarray, vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray,
               centroids: np.ndarray, centre: np.ndarray, min_vertices: int = MIN_PART_VERTICES,
               samples: tuple[np.ndarray, np.ndarray] | None = None, ends: np.ndarray | None = None) -> np.ndarray:
    """Contacts (P, P) re-weighted by whether each lies at an end of one of its two parts: a joint
    sits where a limb segment starts (a finger's base on the palm, a chain's next segment at the
    previous one's end), while two limbs lying side by side (fingers, or a tail along a leg, fused
    along their length) touch along their sides, and that contact lies between their centroids
    too, so ``between`` cannot tell it. For a part with principal axis a through the mean m of its
    area-weighted surface samples, a contact at c is at its end by s = |(c − m)·a| / h, h the
    part's reach along a on the contact's side (its 1st or 99th percentile: a tapered limb's
    mean sits near its wide end, where it usually attaches), 0 mid-side and 1 at the end; the
    part's factor is (1 − e) + e·s², e = 1 − λ₂/λ₁ its elongation (the variances of its surface
    across and along a). Each contact takes the larger of its two parts' factors, at least 0.05,
    so a compact part (a body, a head, a palm, a plate), whose factor is 1, keeps its contacts
    whole, and so does a part of fewer than ``min_vertices`` vertices (a low-poly mesh's: its few
    vertices do not resolve where along it a contact lies, and on artists' low-poly figures the
    rule then hung thighs from the chest). Pairs without contact have weight 0 and stay 0.
    ``samples``: surface_samples' output when the caller has it already (contacts uses the same);
    ``ends``: end_factors' output when the caller has it."""
    if ends is None:
        ends = end_factors(vertices, faces, labels, centre, min_vertices, samples)
    return weight * np.clip(np.maximum(ends, ends.T), 0.05, 1.0)


def end_factors(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, centre: np.ndarray,
                min_vertices: int = MIN_PART_VERTICES,
                samples: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(P, P) end_to_end's factor of each part for each contact: [a, b] is (1 − e) + e·s² for
    the contact of a with b seen along a (1 at a's end or for a compact or small part, 1 − e
    mid-side of an elongated one)."""
    p = len(centre)
    pts, lab = samples if samples is not None else surface_samples(vertices, faces, labels)
    pts, lab = pts[:-len(vertices)], lab[:-len(vertices)]  # the area samples alone, not the vertices appended
    counts = np.bincount(labels, minlength=p)
    ends = np.ones((p, p))  # ends[a, b]: how much the contact of a with b lies at an end of a
    for k in range(p):
        x = pts[lab == k]
        if counts[k] < min_vertices or len(x) < 4:
            continue
        mean = x.mean(0)
        d = x - mean
        var, vec = np.linalg.eigh(d.T @ d / len(x))  # ascending
        axis = vec[:, -1]
        if var[-1] <= 0:
            continue
        e = 1.0 - max(var[-2], 0.0) / var[-1]
        along = d @ axis
        reach = np.percentile(along, [1.0, 99.0])  # the part's two ends, a stray sample or two ignored
        c = (centre[k] - mean) @ axis  # (P,): where each contact lies along the axis
        h = np.where(c >= 0, max(reach[1], 1e-12), max(-reach[0], 1e-12))  # measured on the contact's side
        s = np.clip(np.abs(c) / h, 0.0, 1.0)
        ends[k] = (1.0 - e) + e * s ** 2
    return ends


def mirrored(weight: np.ndarray, mirror_of: np.ndarray) -> np.ndarray:
    """Contacts (P, P) of mirror pairs pooled: where a pair of parts and its mirror image are both in
    contact, each counts the sum, so the two sides' trees agree (the noise of one side's labels
    is outvoted by the other's); a contact on one side only keeps its own strength."""
    perm = np.where(mirror_of >= 0, mirror_of, np.arange(len(mirror_of)))
    other = weight[np.ix_(perm, perm)]
    return np.where((weight > 0) & (other > 0), weight + other, weight)


def hang_by_ends(parent: np.ndarray, weight: np.ndarray, ends: np.ndarray, areas: np.ndarray,
                 side: np.ndarray, min_share: float = 0.25) -> np.ndarray:
    """Parents (P,) with every part that hangs from a larger part by its side moved to a part it
    touches at one of its ends. A figure standing with its arms down (as scans stand) has each
    forearm lying against the hips along its length, a longer contact than its elbow's ring with
    the upper arm, so the spanning tree hangs it from the hips and leaves the upper arm a leaf;
    but a smaller part hangs from a larger by its end, never its side. A part c whose contact
    with its parent is mid-side of c (``ends[c, parent]`` below ``MID_SIDE``, c the smaller by
    area) takes, among the parts it touches at an end (``ends`` at least ``MID_SIDE``) outside
    its own subtree, never across the mirror plane and not hanging from the same parent (both
    touch it: nothing says which of the two hangs from the other), the one of strongest contact
    ``weight``, if that is at least ``min_share`` of its contact with the parent (a stray
    contact of a few bled labels does not move it). When an arm lies against the body, its
    upper arm (on the chest) and its forearm (on the hips) can both touch it mid-side: the part
    carrying more of the limb (the forearm with the hand) goes first, under the other, so the
    chain still runs from the body to the extremity (the upper arm first would hang from the
    forearm and reverse the arm); then the one hung most clearly by its side. The tree changes
    only there (a global rule on the contact weights reshuffled whole limbs on noisy labels:
    docs/rig.md)."""
    parent = parent.copy()
    tried = np.zeros(len(parent), bool)
    while True:  # the part carrying most of its limb first, then the one hung most clearly by its side
        hung = [(-int(subtree(parent, c).sum()), ends[c, p], c) for c, p in enumerate(parent)
                if p >= 0 and not tried[c] and ends[c, p] < MID_SIDE and areas[c] < areas[p]]
        if not hung:
            return parent
        c = min(hung)[2]
        tried[c] = True
        p = parent[c]
        below = subtree(parent, c)
        ok = (weight[c] > 0) & (ends[c] >= MID_SIDE) & ~below & (side * side[c] >= 0)
        ok[p] = False
        ok[parent == p] = False  # a sibling: both touch the parent, nothing says which hangs from which
        if ok.any():
            q = int(np.argmax(np.where(ok, weight[c], -1.0)))
            if weight[c, q] >= min_share * weight[c, p]:
                parent[c] = q


def build_structure(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, n: int) -> Structure:
    """The structure of a labelled mesh (vertices (N, 3), faces (M, 3), labels (N,) in 0..n-1),
    from the labels alone. (Contacts once counted less where the tracked relative motion of the
    two parts is no turn about one point; but the articulated tracker makes every edge of the
    tree it was given a pure turn, so that only confirmed the first tree, wrong or right.)"""
    cent, areas, sizes = part_stats(vertices, faces, labels, n)
    samples = surface_samples(vertices, faces, labels)
    weight, centre = contacts(vertices, faces, labels, n, samples=samples)
    axis, side, mirror_of = find_symmetry(vertices, cent, areas)
    small = np.bincount(labels, minlength=n) < MIN_PART_VERTICES
    ends = end_factors(vertices, faces, labels, centre, samples=samples)
    pair_weight = mirrored(end_to_end(between(weight, cent, centre, small=small), vertices, faces, labels, cent,
                                      centre, ends=ends), mirror_of)
    tree = connect_components(spanning_tree(pair_weight, side), cent, side)
    root, base, head, spine = choose_root(tree, vertices, labels, cent, areas, side, axis is not None)
    parent = hang_by_ends(orient(tree, root), pair_weight, ends, areas, side)
    cc = cent.copy()
    for c in range(n):
        if parent[c] >= 0 and np.isfinite(centre[c, parent[c]]).all() and weight[c, parent[c]] > 0:
            cc[c] = centre[c, parent[c]]
        elif parent[c] >= 0:  # joined by proximity of centroids: the closest pair of vertices
            from scipy.spatial import cKDTree

            vc, vp = vertices[labels == c], vertices[labels == parent[c]]
            if not len(vc) or not len(vp):  # a part no vertex carries keeps its centroid
                continue
            dd, j = cKDTree(vp).query(vc)
            i = int(np.argmin(dd))
            cc[c] = 0.5 * (vc[i] + vp[j[i]])
    return Structure(parent, root, side, axis, mirror_of, weight, cc, cent, areas, sizes, base, head, spine,
                     pair_weight, centre)
