"""An artist's rigged model as a benchmark asset with ground truth.

Input: the npz of ``scripts/rigged_asset_from_gltf.py`` (a glTF through Blender's importer: the
mesh as Blender leaves it, bones with heads and parents, skinning weights). The true parts are
the bones that dominate at least ``min_fraction`` of the vertices; a smaller bone's vertices and
weights go to its nearest kept ancestor (fingers into the hand, a jaw into the head). Each part
pivots at its bone's head, the root is the topmost kept bone, and the oracle poses the mesh
with the artist's own weights (linear blend skinning), so the reference is the artist's rig.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BackendError
from .assets import Asset


def asset_from_rig(path: str | Path, min_fraction: float = 0.01) -> Asset:
    """The Asset of one converted rigged model (vertices in Blender world space, Z up)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            v, f = z["vertices"].astype(np.float32), z["faces"].astype(np.int32)
            names = [str(n) for n in z["bone_names"]]
            parents = z["bone_parents"].astype(np.int64)
            heads = z["bone_heads"].astype(np.float32)
            w = z["weights"].astype(np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise BackendError("bad_input", f"{path} is not a converted rigged model: {exc}") from exc
    dominant = w.argmax(1)
    counts = np.bincount(dominant, minlength=len(names))
    keep = counts >= max(1, min_fraction * len(v))

    def kept_ancestor(b: int) -> int:
        while b >= 0 and not keep[b]:
            b = int(parents[b])
        return b

    owner = np.array([kept_ancestor(b) for b in range(len(names))])
    orphans = owner < 0  # bones above every kept bone: their vertices go to the topmost kept bone
    kept = np.nonzero(keep)[0]
    top = [b for b in kept if kept_ancestor(int(parents[b])) < 0]
    root = max(top, key=lambda b: _subtree_weight(b, parents, counts, keep))
    owner[orphans] = root
    index = {int(b): i for i, b in enumerate(kept)}
    part_w = np.zeros((len(v), len(kept)))
    for b in range(len(names)):
        part_w[:, index[int(owner[b])]] += w[:, b]
    part_parents = np.array([-1 if b == root else index.get(kept_ancestor(int(parents[b])), index[root])
                             for b in kept], np.int32)
    if (part_parents < 0).sum() != 1:  # several top-level bones: hang the others from the root
        part_parents[(part_parents < 0) & (kept != root)] = index[root]
    labels = part_w.argmax(1).astype(np.int32)
    return Asset(v, f, labels, [names[b] for b in kept], part_parents, heads[kept], np.zeros((len(kept), 3),
                 np.float32), part_w.astype(np.float32))


def _subtree_weight(b: int, parents: np.ndarray, counts: np.ndarray, keep: np.ndarray) -> int:
    total, stack = 0, [b]
    while stack:
        k = stack.pop()
        total += int(counts[k])
        stack += [int(c) for c in np.nonzero(parents == k)[0]]
    return total
