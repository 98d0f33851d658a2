"""Reading an input clip and preparing the frames SP4D conditions on.

Accepted: video files (mp4, mov, webm, avi, mkv; OpenCV), GIFs and still images (Pillow, alpha
kept), folders of images (sorted by name) and glob patterns. T frames are picked evenly. The
object mask comes from alpha when the frames have it, otherwise from a plain-background estimate
(the median border colour), with a warning when the border is not plain. Frames are cropped
around the union of the masks so the object's longest side is 0.9 of the frame, centred,
composited on white and resized to the model's size.
"""

from __future__ import annotations

import glob as globmod
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .errors import BackendError

VIDEO_EXT = {".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v"}
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass
class Prepared:
    frames: np.ndarray  # (T, S, S, 3) uint8 on white
    masks: np.ndarray  # (T, S, S) bool
    source_indices: list[int]
    warnings: list[str] = field(default_factory=list)


def _read_pil_frames(path: Path) -> list[np.ndarray]:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return [np.asarray(f.convert("RGBA")) for f in ImageSequence.Iterator(im)]
    except (UnidentifiedImageError, OSError) as exc:
        raise BackendError("bad_input", f"cannot read image {path.name}: {exc}") from exc


def _read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while cap.isOpened():
            ok, f = cap.read()
            if not ok:
                break
            frames.append(np.dstack([f[:, :, ::-1], np.full(f.shape[:2], 255, np.uint8)]))
    finally:
        cap.release()
    if not frames:
        raise BackendError("bad_input", f"cannot read any frame from {path.name} (unsupported or broken video)")
    return frames


def read_clip(source: str | Path) -> list[np.ndarray]:
    """All frames of ``source`` as RGBA uint8 (H, W, 4)."""
    src = str(source)
    p = Path(src)
    if any(ch in src for ch in "*?["):
        files = sorted(Path(f) for f in globmod.glob(src))
        if not files:
            raise BackendError("bad_input", f"no files match {src}")
    elif p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXT)
        if not files:
            raise BackendError("bad_input", f"the folder {p} has no images ({', '.join(sorted(IMAGE_EXT))})")
    elif p.is_file():
        files = [p]
    else:
        raise BackendError("bad_input", f"the clip {src} does not exist")
    frames: list[np.ndarray] = []
    for f in files:
        frames += _read_video(f) if f.suffix.lower() in VIDEO_EXT else _read_pil_frames(f)
    if not frames:
        raise BackendError("bad_input", f"{src} has no frames")
    shapes = {fr.shape for fr in frames}
    if len(shapes) > 1:
        raise BackendError("bad_input", f"the frames have different sizes: {sorted(s[:2] for s in shapes)}")
    h, w = frames[0].shape[:2]
    if h < 8 or w < 8:
        raise BackendError("bad_input", f"the frames are too small ({w}×{h} px)")
    return frames


def pick_frames(n: int, t: int) -> list[int]:
    """t indices spread evenly over n frames (repeats when n < t)."""
    return [int(round(x)) for x in np.linspace(0, n - 1, t)]


def object_mask(rgba: np.ndarray, tol: float = 24.0) -> tuple[np.ndarray, str | None]:
    """Object pixels of one frame and an optional warning."""
    alpha = rgba[:, :, 3]
    if (alpha < 255).any():
        return alpha > 127, None
    rgb = rgba[:, :, :3].astype(np.float32)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    bg = np.median(border, axis=0)
    spread = np.abs(border - bg).max(1)
    warning = None
    if np.mean(spread > tol) > 0.1:
        warning = (f"the background is not plain ({100 * np.mean(spread > tol):.0f}% of the border differs from "
                   f"its median colour): remove it (alpha) for reliable results")
    m = (np.abs(rgb - bg).max(2) > tol).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return m > 0, warning


def prepare_frames(frames: list[np.ndarray], n_frames: int = 4, size: int = 576,
                   ratio: float = 0.9) -> Prepared:
    """Pick, mask, crop (longest side = ratio of the frame, centred), whiten and resize."""
    idx = pick_frames(len(frames), n_frames)
    chosen = [frames[i] for i in idx]
    masks, warnings = [], []
    for f in chosen:
        m, w = object_mask(f)
        masks.append(m)
        if w and w not in warnings:
            warnings.append(w)
    union = np.any(masks, axis=0)
    if not union.any():
        raise BackendError("bad_input", "no object found in the clip (the frames are empty or all background)")
    ys, xs = np.nonzero(union)
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    side = max(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min()) / ratio
    # affine crop: the square of `side` around the centre -> size×size (white outside the frame)
    s = size / side
    m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float32)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    out_f, out_m = [], []
    for f, mk in zip(chosen, masks, strict=True):
        rgb = f[:, :, :3].astype(np.float32)
        a = mk.astype(np.float32) if (f[:, :, 3] == 255).all() else f[:, :, 3].astype(np.float32) / 255
        comp = rgb * a[..., None] + 255 * (1 - a[..., None])
        warped = cv2.warpAffine(comp, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=(255, 255, 255))
        wm = cv2.warpAffine(a, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
        out_f.append(np.clip(np.round(warped), 0, 255).astype(np.uint8))
        out_m.append(wm > 0.5)
    return Prepared(np.stack(out_f), np.stack(out_m), idx, warnings)
