"""The part masks of one frame as signed distance fields (the data term of the motion fit)."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

MARGIN = 32  # px around a part's mask where its distance transform is kept
CAP = 40.0  # px: distances are capped here (a part absent from a view pulls no further)


def _box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of a mask (H, W) as find_objects gives it (rows, columns), None if empty."""
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if not len(rows):
        return None
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


class MaskField:
    """Signed distance (pixels, negative inside) to the boundary of every part's mask in every
    view of one frame, as one flat buffer with a region of interest per (view, part)."""

    def __init__(self, labels: np.ndarray, part_ids: list[int], silhouette: bool = False):
        """labels: (V, H, W) decoded label images of one frame; part_ids[k]: the label of part k;
        with ``silhouette``, mask P (after the parts) is the whole object (every label > 0)."""
        n_v, h, w = labels.shape
        self.shape = (h, w)
        self.silhouette = silhouette
        p = len(part_ids) + int(silhouette)
        self.roi = np.zeros((n_v, p, 5), np.int64)  # x0, y0, width, height, offset; width 0: absent
        chunks, offset = [], 0
        n_parts = len(part_ids)
        for v in range(n_v):
            found = ndimage.find_objects(labels[v], max_label=int(max(part_ids, default=0)))
            boxes = [found[pid - 1] if 0 < pid <= len(found) else None for pid in part_ids]
            if silhouette:
                boxes.append(_box(labels[v] > 0))
            for k, box in enumerate(boxes):
                if box is None:
                    continue
                y0, y1 = max(box[0].start - MARGIN, 0), min(box[0].stop + MARGIN, h)
                x0, x1 = max(box[1].start - MARGIN, 0), min(box[1].stop + MARGIN, w)
                sub = labels[v, y0:y1, x0:x1]
                inside = ((sub == part_ids[k]) if k < n_parts else (sub > 0)).astype(np.uint8)
                if inside.sum() < 4:
                    continue
                d_out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5)
                d_in = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
                sd = np.where(inside > 0, 0.5 - d_in, d_out - 0.5)
                chunks.append(np.clip(sd, -CAP, CAP).astype(np.float32).ravel())
                self.roi[v, k] = (x0, y0, x1 - x0, y1 - y0, offset)
                offset += sd.size
        self.buf = np.concatenate(chunks) if chunks else np.zeros(1, np.float32)

    def subset(self, parts: list[int]) -> MaskField:
        """The same fields for the parts ``parts`` (indices into this field's part_ids) only, in
        that order (the silhouette, if any, after them); shares the distance buffer."""
        out = object.__new__(MaskField)
        out.shape, out.silhouette, out.buf = self.shape, self.silhouette, self.buf
        keep = list(parts) + ([self.roi.shape[1] - 1] if self.silhouette else [])
        out.roi = self.roi[:, keep]
        return out

    def present(self, view: np.ndarray, part: np.ndarray) -> np.ndarray:
        return self.roi[view, part, 2] > 0

    def sample(self, u: np.ndarray, view: np.ndarray, part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed distance (R,) and its gradient (R, 2) at image points u (R, 2) (bilinear; outside
        the region the distance grows with the distance to it, up to CAP)."""
        x0, y0, w, h, off = (self.roi[view, part, i] for i in range(5))
        x = u[:, 0] - x0
        y = u[:, 1] - y0
        cx = np.clip(x, 0, np.maximum(w - 1.001, 0))
        cy = np.clip(y, 0, np.maximum(h - 1.001, 0))
        out_d = np.hypot(x - cx, y - cy)
        ix, iy = np.floor(cx).astype(np.int64), np.floor(cy).astype(np.int64)
        a, b = cx - ix, cy - iy
        base = off + iy * w + ix
        d00, d10 = self.buf[base], self.buf[base + 1]
        d01, d11 = self.buf[base + w], self.buf[base + w + 1]
        d = (1 - a) * (1 - b) * d00 + a * (1 - b) * d10 + (1 - a) * b * d01 + a * b * d11
        gx = (1 - b) * (d10 - d00) + b * (d11 - d01)
        gy = (1 - a) * (d01 - d00) + a * (d11 - d10)
        g = np.stack([gx, gy], 1)
        outside = out_d > 0
        if outside.any():  # beyond the region: point back towards it
            g[outside] = np.stack([x - cx, y - cy], 1)[outside] / out_d[outside, None]
            d = np.where(outside, np.minimum(d + out_d, CAP), d)
        return d, g
