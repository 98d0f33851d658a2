"""Input image preparation and output frames, as the official demo does them.

``resize_and_crop``: the demo's upload handler (Pillow LANCZOS to cover the target, then a centre
crop whose float box Pillow rounds half to even); ``to_model`` drops alpha (no compositing, as the
demo) and maps u8 to [-1, 1] (u8/255·2 − 1); ``to_u8`` truncates clamp((x + 1)/2)·255.
"""

from __future__ import annotations

import numpy as np
import torch


def resize_and_crop(image: np.ndarray, width: int = 1024, height: int = 576) -> np.ndarray:
    """(H, W, C) uint8 (C 3 or 4) -> (height, width, C) uint8: resized so that it covers the target
    (the longer relative side truncated to an integer), then the centre cut out."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image))
    aspect = img.width / img.height
    if aspect > width / height:
        new_w, new_h = int(height * aspect), height
        box = ((new_w - width) / 2, 0, (new_w + width) / 2, height)
    else:
        new_w, new_h = width, int(width / aspect)
        box = (0, (new_h - height) / 2, width, (new_h + height) / 2)
    return np.asarray(img.resize((new_w, new_h), Image.LANCZOS).crop(box))


def to_model(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3 or 4) uint8 -> (1, 3, H, W) float32 in [-1, 1]; alpha dropped."""
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3|4) uint8 image, got {image.shape} {image.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)[None]
    return x.float() / 255.0 * 2.0 - 1.0


def to_u8(images: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in model range -> (T, H, W, 3) uint8, truncated like the demo."""
    x = (torch.clamp((images.float() + 1.0) / 2.0, min=0.0, max=1.0) * 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def flatten_alpha(image: np.ndarray) -> np.ndarray:
    """(H, W, 3|4) uint8 -> (H, W, 3) uint8, transparent pixels composited on white (what an
    artist's cut-out means; the demo would drop alpha and keep whatever colour lies under it)."""
    if image.shape[2] == 3:
        return image
    a = image[..., 3:].astype(np.float32) / 255
    return np.round(image[..., :3] * a + 255 * (1 - a)).astype(np.uint8)


def fit_on_canvas(image: np.ndarray, width: int = 1024, height: int = 576) -> np.ndarray:
    """(H, W, 3|4) uint8 -> (height, width, 3) uint8: alpha flattened on white, the whole picture
    scaled to fit (Pillow LANCZOS) and centred on a canvas of its border's median colour.

    The front stage's choice for one object picture: the demo's resize_and_crop fills the 16:9
    frame and would cut the head or feet off a portrait-shaped character."""
    from PIL import Image

    rgb = flatten_alpha(image)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = np.median(border, axis=0).astype(np.uint8)
    h, w = rgb.shape[:2]
    f = min(width / w, height / h)
    nw, nh = max(1, min(width, round(w * f))), max(1, min(height, round(h * f)))
    small = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((nw, nh), Image.LANCZOS))
    y0, x0 = (height - nh) // 2, (width - nw) // 2
    canvas[y0:y0 + nh, x0:x0 + nw] = small
    return canvas
