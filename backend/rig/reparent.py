"""A child's parent from the clip's motion where its contacts leave the choice close.

The tree (structure.py) weighs contacts by their size and shape alone; where a limb touches two
parts about as much, it may hang from the wrong one (a chibi knight's arms, whose shoulders touch
the oversized head as much as the chest, hung from the head). The clip tells them apart: a child
turns about one point fixed in its true parent, while relative to another part its motion also
carries that part's own turn. The articulated tracker cannot tell (relative to its tree parent
a part turns about one point by construction), so the child's own rigid motion is fitted free
of the tree (rigid.free_motion) and its relative motion to each candidate fitted by one pivot
(joints.fit_pivot); the candidate whose pivot explains it clearly better wins. Arrays in, arrays
out: the caller fits the free motions of the children ``in_doubt``. A mirror pair is
decided together (each side's residual relative to its own parent's, the two ratios' geometric
mean), so the two sides agree, one side's noise is outvoted, and a side whose free fit failed
cannot drown the other's clear answer with its large residuals.
"""

from __future__ import annotations

import numpy as np

from .joints import fit_pivot
from .structure import MID

CLOSE = 0.3  # a contact at least this share of the chosen parent's (pair weights) is a candidate
GAIN = 0.85  # the candidate wins where its residual is at most this share of the parent's (a pair: geometric mean)


def candidates(structure, close: float = CLOSE) -> list[tuple[int, int]]:
    """(child, other) pairs: a non-root child off the spine and another part it touches at least
    ``close`` as much as its parent (pair weights), not below it in the tree, on its side or
    the middle (a mid child's only mid parts: the body's parts never hang from a limb)."""
    s = structure
    out = []
    for c in range(len(s.parent)):
        q = s.parent[c]
        if q < 0 or c in s.spine:
            continue
        below = s.subtree(c)
        for a in np.nonzero(s.pair_weight[c] >= close * s.pair_weight[c, q])[0]:
            a = int(a)
            if a == q or below[a] or s.pair_weight[c, a] <= 0:
                continue
            if s.side[a] != MID and s.side[a] != s.side[c]:
                continue
            out.append((c, a))
    return out


def in_doubt(structure, close: float = CLOSE) -> list[int]:
    """The children whose parent ``candidates`` leaves in doubt, with their mirror images (a pair
    is weighed together): the parts whose free rigid motion motion_parents needs."""
    s = structure
    out = {c for c, _ in candidates(s, close)}
    out |= {int(s.mirror_of[c]) for c in out if s.mirror_of[c] >= 0}
    return sorted(out)


def motion_parents(structure, tracked: np.ndarray, free: np.ndarray, close: float = CLOSE,
                   gain: float = GAIN) -> dict[int, int]:
    """{child: new parent} where the child's own rigid motion relative to another part it
    touches (``candidates``) turns about one point clearly better (pivot residual ≤ ``gain`` ×,
    for a mirror pair the geometric mean of the two sides' ratios) than relative to its parent.
    tracked (T, P, 4, 4): every part's tracked world motion (the candidates' and the parents');
    free (T, P, 4, 4): the children's (``in_doubt``) own rigid motion, fitted free of the tree
    (rigid.free_motion)."""
    s = structure
    pairs = candidates(s, close)

    def residual(c: int, p: int) -> float:
        rel = np.einsum("tij,tjk->tik", np.linalg.inv(tracked[:, p]), free[:, c])
        centre = s.pair_centre[c, p] if s.contact[c, p] > 0 else s.centroids[c]
        return fit_pivot(rel, centre, np.inf, min_angle=0.0).residual

    def mirror(k: int) -> int:
        return int(s.mirror_of[k]) if s.mirror_of[k] >= 0 else k

    others: dict[int, list[int]] = {}
    for c, a in pairs:
        others.setdefault(c, []).append(a)
    moves: dict[int, int] = {}
    for c, alts in others.items():
        m = mirror(c)
        if c in moves or m in moves or (m != c and m < c and m in others):
            continue  # a mirror pair is decided once, by its first part
        group = [c] if m == c else [c, m]
        if m != c and s.parent[m] != mirror(s.parent[c]):
            continue  # the two sides hang differently already: leave them
        now = [max(residual(k, s.parent[k]), 1e-12) for k in group]
        best, best_alt = np.inf, -1
        for a in alts:
            if m != c and (s.pair_weight[m, mirror(a)] <= 0 or s.subtree(m)[mirror(a)]):
                continue
            # each side's ratio to its own parent's residual, the sides' geometric mean: a side
            # whose free fit failed (a small part flipped) is as bad relative to every candidate,
            # and its large residuals must not outweigh the other side's clear answer
            ratios = [residual(k, b) / r for k, b, r in zip(group, (a, mirror(a)), now, strict=False)]
            g = float(np.exp(np.mean(np.log(np.maximum(ratios, 1e-12)))))
            if g < best:
                best, best_alt = g, a
        if best_alt >= 0 and best <= gain:
            moves[c] = best_alt
            if m != c:
                moves[m] = mirror(best_alt)
    rehung = s.rehung(moves)
    for k in list(moves):  # a move that put a part below itself (two moves crossing) is dropped
        if rehung.subtree(k)[rehung.parent[k]]:
            return {}
    return moves
