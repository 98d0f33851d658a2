"""Make clean oracle part images look like generated ones, at a calibrated 2D part mIoU.

Generated part images (SP4D reports a 2D part mIoU of 0.68) err in several ways at once, and
this model has each, scaled by one ``level``: part boundaries that wander (a smooth random warp
of the label map), parts that bleed into a neighbour, blobs of a neighbour's label inside a
part, blur, per-pixel colour noise, a colour drift per image and speckles. On top, a few views
are badly wrong: two parts swap colours, or a part is merged into its neighbour. ``calibrate``
finds the level at which the mean 2D mIoU (the degraded image decoded with the true colours,
against the clean labels) meets a target, so that benchmark rows say how hard their images were.
"""

from __future__ import annotations

import cv2
import numpy as np

WHITE = 255


def label_image(parts: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Labels (H, W) of a clean part image: k+1 where the pixel has exactly colour k, 0 elsewhere."""
    code = lambda x: (x[..., 0].astype(np.int64) << 16) | (x[..., 1].astype(np.int64) << 8) | x[..., 2]  # noqa: E731
    keys = code(np.asarray(colours, np.uint8))
    order = np.argsort(keys)
    c = code(parts)
    i = np.clip(np.searchsorted(keys[order], c), 0, len(keys) - 1)
    hit = keys[order][i] == c
    return np.where(hit, order[i] + 1, 0).astype(np.int32)


def neighbours(labels: np.ndarray) -> np.ndarray:
    """(K+1, K+1) counts of 4-adjacent pixel pairs between labels (0 = background)."""
    k = int(labels.max()) + 1
    c = np.zeros((k, k), np.int64)
    for a, b in ((labels[:, 1:], labels[:, :-1]), (labels[1:], labels[:-1])):
        m = a != b
        np.add.at(c, (a[m], b[m]), 1)
    return c + c.T


def _warp(labels: np.ndarray, rng: np.random.Generator, amplitude: float, scale: float = 8.0) -> np.ndarray:
    h, w = labels.shape
    field = [cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), scale) for _ in range(2)]
    field = [f / (np.abs(f).max() + 1e-6) * amplitude for f in field]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = cv2.remap(labels.astype(np.float32), gx + field[0], gy + field[1], cv2.INTER_NEAREST).astype(np.int32)
    fg = labels > 0
    out[~fg] = 0
    hole = fg & (out == 0)  # warped in from the background: keep the old label
    out[hole] = labels[hole]
    return out


def degrade_labels(labels: np.ndarray, rng: np.random.Generator, level: float) -> np.ndarray:
    """A label map (H, W) with wandering boundaries, bleeding parts and blobs (silhouette kept)."""
    out = _warp(labels, rng, 0.5 + 5.0 * level)
    fg = labels > 0
    adj = neighbours(out)
    present = [k for k in np.unique(out) if k > 0]
    for k in present:  # bleeding into a neighbour
        if rng.random() > min(1.0, 0.6 * level):
            continue
        r = int(rng.integers(1, 2 + int(4 * level)))
        grown = cv2.dilate((out == k).astype(np.uint8), np.ones((2 * r + 1,) * 2, np.uint8)) > 0
        row = adj[k].copy()
        row[0] = 0
        if row.sum() == 0:
            continue
        victim = int(rng.choice(len(row), p=row / row.sum()))
        out[grown & fg & (out == victim)] = k
    ys, xs = np.nonzero(fg)
    for _ in range(rng.poisson(8.0 * level) if len(ys) else 0):  # blobs of a nearby label
        i = int(rng.integers(len(ys)))
        y, x = int(ys[i]), int(xs[i])
        ry, rx = (int(v) for v in rng.integers(2, 3 + int(8 * level), 2))
        dy, dx = (int(v) for v in rng.integers(-12, 13, 2))
        src = out[np.clip(y + dy, 0, out.shape[0] - 1), np.clip(x + dx, 0, out.shape[1] - 1)]
        if src == 0:
            continue
        blob = np.zeros(out.shape, np.uint8)
        cv2.ellipse(blob, (x, y), (rx, ry), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        out[(blob > 0) & fg] = src
    return out


def paint(labels: np.ndarray, colours: np.ndarray, rng: np.random.Generator, level: float) -> np.ndarray:
    """The RGB part image (H, W, 3) uint8 of a label map: blurred, noisy, drifting, speckled;
    white background."""
    fg = labels > 0
    c = min(level, 2.0)  # colour noise grows with the level, within what generated images show
    lut = np.concatenate([np.full((1, 3), WHITE), np.asarray(colours, np.float32)])
    x = lut[labels].astype(np.float32)
    x = cv2.GaussianBlur(x, (0, 0), 0.8 + 0.4 * c)
    x += rng.normal(0, 2.0 + 3.0 * c, x.shape) + rng.normal(0, 2.0 + 2.0 * c, (1, 1, 3))
    sp = (rng.random(fg.shape) < 0.001 + 0.002 * c) & fg
    x[sp] = rng.integers(0, 255, (int(sp.sum()), 3))
    x = np.where(cv2.dilate(fg.astype(np.uint8), np.ones((3, 3), np.uint8))[..., None] > 0, x, WHITE)
    return np.clip(x, 0, 255).astype(np.uint8)


def swap_parts(labels: np.ndarray, a: int, b: int) -> np.ndarray:
    """Labels a and b exchanged (a view that gives two parts each other's colour)."""
    out = labels.copy()
    out[labels == a], out[labels == b] = b, a
    return out


def merge_part(labels: np.ndarray, k: int) -> np.ndarray:
    """Part k painted as the neighbour it touches most (a view that merges two parts)."""
    row = neighbours(labels)[k].copy() if k <= labels.max() else np.zeros(1)
    row[0] = 0
    if row.sum() == 0:
        return labels
    out = labels.copy()
    out[labels == k] = int(np.argmax(row))
    return out


def nearest_colour_labels(img: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """The best decoding that knows the true colours: nearest colour for every non-white pixel."""
    fg = img.min(-1) < 250
    c = np.asarray(colours, np.float32)
    x = img[fg].astype(np.float32)
    d = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None]
    out = np.zeros(img.shape[:2], np.int32)
    out[fg] = d.argmin(1) + 1
    return out


def miou_2d(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean IoU over the parts present in either label map (background excluded)."""
    ks = np.union1d(np.unique(truth), np.unique(pred))
    ks = ks[ks > 0]
    if len(ks) == 0:
        return 1.0
    return float(np.mean([((truth == k) & (pred == k)).sum() / ((truth == k) | (pred == k)).sum() for k in ks]))


def wrong_view_plan(n_views: int, n_frames: int, count: int, rng: np.random.Generator) -> list[tuple[int, int, str]]:
    """``count`` (frame, view, kind) of badly wrong views: kinds 'swap' and 'merge' alternate."""
    cells = rng.choice(n_frames * n_views, size=min(count, n_frames * n_views), replace=False)
    return [(int(c) // n_views, int(c) % n_views, "swap" if i % 2 == 0 else "merge") for i, c in enumerate(cells)]


def degrade_image(clean: np.ndarray, colours: np.ndarray, rng: np.random.Generator, level: float,
                  wrong: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(degraded part image (H, W, 3), true labels (H, W), degraded labels (H, W)) of one clean
    oracle part image; ``wrong`` = 'swap' or 'merge' makes it one of the badly wrong views."""
    truth = label_image(clean, colours)
    lab = degrade_labels(truth, rng, level)
    if wrong:
        counts = np.bincount(lab.ravel(), minlength=len(colours) + 1)
        counts[0] = 0
        adj = neighbours(lab)
        big = [int(k) for k in np.argsort(-counts)[:8] if counts[k] > 0]
        if big:
            k = big[int(rng.integers(len(big)))]
            if wrong == "merge":
                lab = merge_part(lab, k)
            else:
                row = adj[k].copy()
                row[0] = 0
                if row.sum() > 0:
                    lab = swap_parts(lab, k, int(np.argmax(row)))
    return paint(lab, colours, rng, level), truth, lab


def calibrate(clean_images: list[np.ndarray], colours: np.ndarray, target: float, seed: int = 0,
              iterations: int = 8) -> tuple[float, float]:
    """(level, measured mean 2D mIoU) for which the degraded label maps' mIoU against the clean
    ones is nearest ``target``, by bisection over the level in [0, 3] (the images: a sample of one
    asset's clean part images). Colour noise is left out of the measure: it is the decoder's job."""
    truths = [label_image(img, colours) for img in clean_images]
    lo, hi = 0.0, 6.0
    best = (0.0, 1.0)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        rng = np.random.default_rng(seed)
        m = float(np.mean([miou_2d(t, degrade_labels(t, rng, mid)) for t in truths]))
        if abs(m - target) < abs(best[1] - target):
            best = (mid, m)
        lo, hi = (mid, hi) if m > target else (lo, mid)
    return best
