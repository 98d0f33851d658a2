"""Choosing SP4D's input frames from an SVD clip: the most articulation, no blurred frames.

SP4D generates from a few frames (4 a window). An SVD clip has 25 frames whose poses drift
smoothly, and fast motion blurs some of them. ``choose_frames`` therefore

1. measures each frame's sharpness (variance of the Laplacian of its grey image) and drops the
   blurred ones: below half the clip's median sharpness (the first frame always stays);
2. measures how different two frames are: the mean absolute difference of blurred grey
   thumbnails, a frame-difference energy. The blur (σ = 1/16 of the thumbnail) makes it keep
   growing with how far a part moved, instead of saturating once the part no longer overlaps
   its old place;
3. starts from frame 0 (the input picture's pose: SVD's first frame stays close to it) and adds,
   one at a time, the sharp frame farthest from every frame chosen so far (farthest-point
   sampling in that difference): the chosen poses span the clip's motion instead of sitting
   next to each other;
4. returns the indices in time order (SP4D's motion attention reads a clip in order).
"""

from __future__ import annotations

import cv2
import numpy as np

THUMB = 128  # longest side of the thumbnails the differences are measured on
BLUR = THUMB / 16  # σ of their Gaussian blur, in thumbnail pixels
BLUR_RATIO = 0.5  # a frame below this fraction of the median sharpness counts as blurred


def grey(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3|4) uint8 -> (H, W) float32 in [0, 1]."""
    return cv2.cvtColor(np.ascontiguousarray(frame[..., :3]), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255


def sharpness(frame: np.ndarray) -> float:
    """Variance of the Laplacian of the grey frame: high for crisp edges, low when blurred."""
    return float(cv2.Laplacian(grey(frame), cv2.CV_32F).var())


def differences(frames: np.ndarray) -> np.ndarray:
    """(T, T) mean absolute grey difference between every two frames, on thumbnails."""
    h, w = frames.shape[1:3]
    f = THUMB / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    thumbs = np.stack([cv2.GaussianBlur(cv2.resize(grey(x), size, interpolation=cv2.INTER_AREA), (0, 0), BLUR)
                       for x in frames])
    thumbs = thumbs.reshape(len(frames), -1)
    return np.abs(thumbs[:, None] - thumbs[None]).mean(-1)


def choose_frames(frames: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` frames of ``frames`` (T, H, W, 3|4) uint8, in time order (module doc).
    With T <= n every frame (SP4D repeats the last when it needs more)."""
    t = len(frames)
    if t <= n:
        return list(range(t))
    sharp = np.array([sharpness(f) for f in frames])
    ok = sharp >= BLUR_RATIO * np.median(sharp)
    ok[0] = True
    d = differences(frames)
    chosen = [0]
    while len(chosen) < n:
        cand = [i for i in range(t) if i not in chosen and ok[i]] or [i for i in range(t) if i not in chosen]
        spread = [d[i, chosen].min() for i in cand]
        best = max(range(len(cand)), key=lambda k: (spread[k], sharp[cand[k]]))
        chosen.append(cand[best])
    return sorted(chosen)


def is_still(frames: list[np.ndarray] | np.ndarray, tol: float = 1.0 / 255) -> bool:
    """Whether a clip does not move: every frame's mean absolute grey difference from the first
    is at most ``tol`` (one level); a single frame is still."""
    if len(frames) < 2:
        return True
    g0 = grey(frames[0])
    return all(f.shape == frames[0].shape and float(np.abs(grey(f) - g0).mean()) <= tol for f in frames[1:])
