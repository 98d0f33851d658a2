"""Make clean oracle part images look like generated ones (for the rig benchmark and tests):
boundary jitter, blur, colour noise and drift, speckles, and one view whose colours for one part
disagree with the other views."""

from __future__ import annotations

import cv2
import numpy as np


def degrade_part_image(img: np.ndarray, rng: np.random.Generator, jitter: float = 1.5, blur: float = 1.2,
                       noise: float = 6.0, drift: float = 4.0, speckle: float = 0.003) -> np.ndarray:
    """One degraded (H, W, 3) uint8 part image; the white background stays white."""
    h, w = img.shape[:2]
    fg = img.min(2) < 250
    # boundary jitter: a smooth random displacement field of about `jitter` px
    field = [cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 6) for _ in range(2)]
    field = [f / (np.abs(f).max() + 1e-6) * jitter for f in field]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    x = cv2.remap(img, gx + field[0], gy + field[1], cv2.INTER_NEAREST, borderValue=(255, 255, 255))
    fg = cv2.remap(fg.astype(np.uint8), gx + field[0], gy + field[1], cv2.INTER_NEAREST) > 0
    x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), blur)
    x += rng.normal(0, noise, x.shape) + rng.normal(0, drift, (1, 1, 3))
    sp = (rng.random((h, w)) < speckle) & fg
    x[sp] = rng.integers(0, 255, (int(sp.sum()), 3))
    x = np.where(cv2.dilate(fg.astype(np.uint8), np.ones((3, 3), np.uint8))[..., None] > 0, x, 255)
    return np.clip(x, 0, 255).astype(np.uint8)


def swap_part_colour(img: np.ndarray, src: np.ndarray, dst: np.ndarray, tol: int = 3) -> np.ndarray:
    """Paint the pixels of colour ``src`` with ``dst`` (a view-inconsistent part)."""
    out = img.copy()
    out[np.abs(img.astype(int) - src.astype(int)).max(2) <= tol] = dst
    return out
