"""Decode generated part images into part labels that agree across views and frames.

Generated part images have blurred boundaries, colour drift and speckles. Since one part has
one colour everywhere (parts/encoding.py), colours are clustered jointly over all foreground
pixels of all views and frames: confident interior pixels (away from the silhouette and from
colour edges) find the clusters (histogram peaks, then a few Lloyd iterations; the count is
automatic and tiny clusters are merged away), then every foreground pixel takes the nearest
cluster and each image is cleaned with a small mode filter.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from ..errors import BackendError

BIN = 8  # colour histogram bin width (levels)


def foreground_mask(rgb: np.ndarray | None, parts: np.ndarray, white: int = 245) -> np.ndarray:
    """Object pixels: not white in the part image or in the RGB image."""
    m = parts.min(-1) < white
    if rgb is not None:
        m |= rgb.min(-1) < white
    return m


def _interior(parts: np.ndarray, mask: np.ndarray, edge: float) -> np.ndarray:
    er = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    g = np.zeros(mask.shape, np.float32)
    for c in range(3):
        ch = parts[..., c].astype(np.float32)
        dx, dy = cv2.Sobel(ch, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(ch, cv2.CV_32F, 0, 1, ksize=3)
        g = np.maximum(g, np.abs(dx) + np.abs(dy))
    return er & (g < edge)


def find_part_colours(samples: np.ndarray, min_frac: float = 0.003, merge_dist: float = 22.0,
                      iters: int = 8) -> np.ndarray:
    """Cluster centres (K, 3) float of colour samples (S, 3) with an automatic K."""
    if len(samples) == 0:
        raise BackendError("bad_input", "the part images have no foreground pixels")
    nb = 256 // BIN
    idx = (samples // BIN).astype(np.int64)
    hist = np.bincount((idx[:, 0] * nb + idx[:, 1]) * nb + idx[:, 2], minlength=nb ** 3).reshape(nb, nb, nb)
    smooth = ndimage.gaussian_filter(hist.astype(np.float64), 1.0)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=3)) & (smooth > min_frac * len(samples) / 8)
    pk = np.argwhere(peaks)
    order = np.argsort(-smooth[peaks])
    centres = (pk[order] + 0.5) * BIN
    # greedy merge of close peaks, strongest first
    kept: list[np.ndarray] = []
    for c in centres:
        if all(np.linalg.norm(c - k) > merge_dist for k in kept):
            kept.append(c)
    c = np.array(kept, np.float64)
    x = samples.astype(np.float64)
    for _ in range(iters):
        lab = _nearest(x, c)
        counts = np.bincount(lab, minlength=len(c))
        keep = counts >= min_frac * len(x)
        if not keep.all():  # tiny clusters: drop and let their pixels join neighbours
            c = c[keep]
            continue
        c = np.stack([x[lab == k].mean(0) for k in range(len(c))])
    # merge centres that converged together
    out: list[np.ndarray] = []
    for k in c[np.argsort(-np.bincount(_nearest(x, c), minlength=len(c)))]:
        if all(np.linalg.norm(k - o) > merge_dist for o in out):
            out.append(k)
    return np.array(out)


def _nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    d = (x ** 2).sum(1)[:, None] - 2 * x @ c.T + (c ** 2).sum(1)[None]
    return d.argmin(1)


def _mode_filter(labels: np.ndarray, k: int, size: int = 5) -> np.ndarray:
    """Most frequent label in a size×size window (background 0 stays background)."""
    fg = labels > 0
    best = np.zeros(labels.shape, np.float32)
    out = labels.copy()
    for lab in range(1, k + 1):
        m = (labels == lab).astype(np.float32)
        if not m.any():
            continue
        s = cv2.boxFilter(m, -1, (size, size), normalize=False)
        upd = fg & (s > best)
        out[upd] = lab
        best = np.maximum(best, s)
    return out


def decode_parts(parts: np.ndarray, rgb: np.ndarray | None = None, *, edge: float = 60.0,
                 min_frac: float = 0.003, merge_dist: float = 22.0,
                 max_samples: int = 400_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels (..., H, W) uint16 (0 = background, 1..K parts) and colours (K, 3) uint8.

    parts, rgb: (..., H, W, 3) uint8 images of all views and frames (any leading shape).
    """
    parts = np.asarray(parts)
    lead = parts.shape[:-3]
    p = parts.reshape((-1,) + parts.shape[-3:])
    r = None if rgb is None else np.asarray(rgb).reshape(p.shape)
    masks = np.stack([foreground_mask(None if r is None else r[i], p[i]) for i in range(len(p))])
    inner = np.stack([_interior(p[i], masks[i], edge) for i in range(len(p))])
    samples = p[inner]
    if len(samples) < 100:
        samples = p[masks]
    if len(samples) > max_samples:
        samples = samples[np.random.default_rng(seed).choice(len(samples), max_samples, replace=False)]
    centres = find_part_colours(samples, min_frac=min_frac, merge_dist=merge_dist)
    k = len(centres)
    labels = np.zeros(p.shape[:3], np.uint16)
    for i in range(len(p)):
        m = masks[i]
        if m.any():
            labels[i][m] = _nearest(p[i][m].astype(np.float64), centres) + 1
            labels[i] = _mode_filter(labels[i], k)
    return labels.reshape(lead + p.shape[1:3]), np.clip(np.round(centres), 0, 255).astype(np.uint8)
