"""Reading an input clip and preparing the frames SP4D conditions on.

Accepted: video files (mp4, mov, webm, avi, mkv; OpenCV), GIFs and still images (Pillow, alpha
kept), folders of images (sorted by name) and glob patterns. T frames are picked evenly, and only
they are decoded, one at a time (``Clip``): a clip's length does not change the memory it takes,
and a frame larger than MAX_PIXELS is refused from its header, before decoding. The
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
MAX_PIXELS = 40_000_000  # a frame's width × height: 8K video (33 MP) passes, a decompression bomb does not


@dataclass
class Prepared:
    frames: np.ndarray  # (T, S, S, 3) uint8 on white
    masks: np.ndarray  # (T, S, S) bool
    source_indices: list[int]
    warnings: list[str] = field(default_factory=list)


def _check_size(name: str, w: int, h: int) -> None:
    if w * h > MAX_PIXELS:
        raise BackendError("bad_input", f"{name} is {w}×{h} px ({w * h / 1e6:.0f} MP); frames may have at most "
                           f"{MAX_PIXELS / 1e6:.0f} MP: scale the clip down (the model sees 576×576)")
    if h < 8 or w < 8:
        raise BackendError("bad_input", f"the frames are too small ({w}×{h} px)")


@dataclass
class _Segment:
    """One file of a clip: a video, or an image with one or more frames (GIF, WebP, TIFF)."""

    path: Path
    video: bool
    count: int
    size: tuple[int, int]  # width, height


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own bomb check, at our limit
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise BackendError("bad_input", f"{path.name} is too large ({exc}); frames may have at most "
                           f"{MAX_PIXELS / 1e6:.0f} MP: scale the clip down (the model sees 576×576)") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BackendError("bad_input", f"cannot read image {path.name}: {exc}") from exc
    try:
        _check_size(path.name, *im.size)
    except BackendError:
        im.close()
        raise
    return im


def _image_segment(path: Path) -> _Segment:
    with _open_image(path) as im:
        return _Segment(path, False, int(getattr(im, "n_frames", 1) or 1), im.size)


def _video_segment(path: Path) -> _Segment:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise BackendError("bad_input", f"cannot read any frame from {path.name} (unsupported or broken video)")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        _check_size(path.name, w, h)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:  # the container does not say: count (grab decodes, keeps nothing)
            n = 0
            while cap.grab():
                n += 1
    finally:
        cap.release()
    if n <= 0:
        raise BackendError("bad_input", f"cannot read any frame from {path.name} (unsupported or broken video)")
    return _Segment(path, True, n, (w, h))


def _image_frames(seg: _Segment, wanted: list[int]):
    """RGBA frames ``wanted`` (non-decreasing) of an image file, decoded one at a time."""
    from PIL import Image

    with _open_image(seg.path) as im:
        for k in wanted:
            try:
                im.seek(k)
                frame = np.asarray(im.convert("RGBA"))
            except (OSError, ValueError, EOFError, Image.DecompressionBombError) as exc:
                raise BackendError("bad_input", f"cannot read frame {k} of {seg.path.name}: {exc}") from exc
            yield frame


def _video_frames(seg: _Segment, wanted: list[int]):
    """RGBA frames ``wanted`` (non-decreasing) of a video in one pass: every frame is grabbed,
    only the wanted ones are converted and kept (one at a time). A video shorter than its header
    said repeats its last frame."""
    cap = cv2.VideoCapture(str(seg.path))
    try:
        pos, last = -1, None
        for k in wanted:
            while pos < k and cap.grab():
                pos += 1
                if pos == k:
                    ok, f = cap.retrieve()
                    if ok:
                        last = np.dstack([f[:, :, ::-1], np.full(f.shape[:2], 255, np.uint8)])
            if last is None:
                raise BackendError("bad_input", f"cannot read any frame from {seg.path.name} "
                                   "(unsupported or broken video)")
            yield last
    finally:
        cap.release()


class Clip:
    """The frames of a clip, decoded only when asked for (``frames(indices)``), one at a time: the
    memory a clip takes does not grow with its length. ``len()`` is its frame count; ``size`` its
    frames' (width, height), checked against MAX_PIXELS before anything is decoded."""

    def __init__(self, segments: list[_Segment]):
        self.segments = segments
        sizes = sorted({s.size for s in segments})
        if len(sizes) > 1:
            raise BackendError("bad_input", f"the frames have different sizes: {[(h, w) for w, h in sizes]}")
        self.size = sizes[0]

    def __len__(self) -> int:
        return sum(s.count for s in self.segments)

    def frames(self, indices: list[int]):
        """The RGBA uint8 (H, W, 4) frames at ``indices`` (non-decreasing; repeats allowed), in order."""
        if list(indices) != sorted(indices):
            raise ValueError("frame indices must be non-decreasing")
        first = 0
        for seg in self.segments:
            wanted = [i - first for i in indices if first <= i < first + seg.count]
            if wanted:
                yield from (_video_frames if seg.video else _image_frames)(seg, wanted)
            first += seg.count

    def __getitem__(self, i: int) -> np.ndarray:
        return next(self.frames([i]))


def read_clip(source: str | Path) -> Clip:
    """The clip at ``source`` (a video, image, folder or glob), opened without decoding its frames."""
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
    clip = Clip([_video_segment(f) if f.suffix.lower() in VIDEO_EXT else _image_segment(f) for f in files])
    if not len(clip):
        raise BackendError("bad_input", f"{src} has no frames")
    return clip


def pick_frames(n: int, t: int) -> list[int]:
    """t indices spread evenly over n frames (repeats when n < t)."""
    return [int(round(x)) for x in np.linspace(0, n - 1, t)]


def frames_at(frames, indices: list[int]):
    """The frames at ``indices`` of a Clip (decoded one at a time) or of a list of arrays."""
    return frames.frames(indices) if isinstance(frames, Clip) else (frames[i] for i in indices)


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


def prepare_frames(frames, n_frames: int = 4, size: int = 576, ratio: float = 0.9) -> Prepared:
    """Pick, mask, crop (longest side = ratio of the frame, centred), whiten and resize. ``frames``:
    a Clip or a list of RGBA arrays. Two passes over the picked frames (the masks' union box, then
    the crops), each holding one full-size frame at a time."""
    idx = pick_frames(len(frames), n_frames)
    warnings: list[str] = []
    box = None  # y0, y1, x0, x1 of the union of the masks
    for f in frames_at(frames, idx):
        m, w = object_mask(f)
        if w and w not in warnings:
            warnings.append(w)
        if m.any():
            ys, xs = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
            b = (ys[0], ys[-1] + 1, xs[0], xs[-1] + 1)
            box = b if box is None else (min(box[0], b[0]), max(box[1], b[1]), min(box[2], b[2]), max(box[3], b[3]))
    if box is None:
        raise BackendError("bad_input", "no object found in the clip (the frames are empty or all background)")
    cy, cx = (box[0] + box[1]) / 2, (box[2] + box[3]) / 2
    side = max(box[1] - box[0], box[3] - box[2]) / ratio
    # affine crop: the square of `side` around the centre -> size×size (white outside the frame)
    s = size / side
    m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float32)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    out_f, out_m = [], []
    for f in frames_at(frames, idx):
        mk, _ = object_mask(f)
        rgb = f[:, :, :3].astype(np.float32)
        a = mk.astype(np.float32) if (f[:, :, 3] == 255).all() else f[:, :, 3].astype(np.float32) / 255
        comp = rgb * a[..., None] + 255 * (1 - a[..., None])
        del rgb
        warped = cv2.warpAffine(comp, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=(255, 255, 255))
        wm = cv2.warpAffine(a, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
        out_f.append(np.clip(np.round(warped), 0, 255).astype(np.uint8))
        out_m.append(wm > 0.5)
    return Prepared(np.stack(out_f), np.stack(out_m), idx, warnings)
