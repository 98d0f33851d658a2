"""The spatial colour encoding of kinematic parts (SP4D, as we implement it).

Each part's colour is its 3D centre in the first frame, after normalising the object's
bounding box to the unit cube axis by axis: x -> R, y -> G, z -> B. The colours are squeezed
into [LOW, HIGH] so that no part is confused with the white background of the part images.
One part therefore has one colour in every view and every frame. (docs/parts.md)
"""

from __future__ import annotations

import numpy as np

LOW, HIGH = 0.06, 0.94
BACKGROUND = (255, 255, 255)


def part_colours(vertices: np.ndarray, labels: np.ndarray, n_parts: int | None = None) -> np.ndarray:
    """Colours (P, 3) uint8 of parts 0..P-1 from their frame-0 vertex centroids."""
    v = np.asarray(vertices, np.float64)
    lab = np.asarray(labels)
    p = int(lab.max()) + 1 if n_parts is None else n_parts
    lo, hi = v.min(0), v.max(0)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    cols = np.zeros((p, 3))
    for i in range(p):
        m = lab == i
        cols[i] = ((v[m].mean(0) - lo) / span) if m.any() else 0.5
    return np.round(255 * (LOW + (HIGH - LOW) * cols)).astype(np.uint8)
