"""Decode generated part images into part labels that agree across views and frames.

One part has one colour in every view and frame (parts/encoding.py), so colours are clustered
jointly over all images; generated images add blur, per-pixel noise, a colour drift per image
and speckles, and parts of a chain can differ by only a few levels. Steps:

1. Background: the colour of the images' borders (white for SP4D; any uniform colour is
   accepted, a non-uniform border is refused); foreground = pixels away from it, or object
   pixels of the RGB views.
2. Confident pixels: foreground away from the silhouette and from colour edges, their colour
   averaged over a 5×5 window (noise down five-fold).
3. Clusters: peaks of the colour histogram seed k-means (scipy's kmeans2); each image's drift is
   estimated against well-separated clusters first, then against fine ones, and removed. A
   second look at the samples no cluster explains finds small parts whose colour sits 7–20
   levels from a big neighbour's (a hoof, an ear's tip), whose peak the whole histogram hides;
   only flat colours count there, not the blends along two parts' boundary.
4. Merges only with evidence: two clusters closer than ``merge_dist`` levels whose pixels
   interleave (a noisy part split in two) rather than meet along a boundary (two parts) become
   one; a cluster whose colour is a bigger touching part's faded toward the background (a thin
   tip blurred with the white around it) joins it; clusters with too few pixels join their
   nearest. Every merge is reported.
5. Labels: confident pixels by their nearest cluster; the others (boundaries, blur) by their own
   colour when it is near a cluster, else from the nearest confident pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage
from scipy.cluster.vq import ClusterError, vq

from ..errors import BackendError

BIN = 4  # colour histogram bin width (levels)
LUT_BITS = 6  # colours are looked up at 6 bits per channel (≤ 2 levels off) when labelling
BORROW = 6  # px: an unsure pixel takes the label of the nearest confident pixel this close
OWN = 10.0  # levels: an unsure pixel whose own colour is this near a cluster keeps that cluster
COARSE = 40.0  # levels: colours this far apart estimate each image's drift before the fine clustering
FADED = 80.0  # levels: a cluster this near a bigger touching one may be it faded toward the background
STRONG = 0.45  # interleave ratio that merges a colour found on the second look (``_merge``)


@dataclass
class Decoded:
    labels: np.ndarray  # (..., H, W) uint16, 0 = background, 1..K parts
    colours: np.ndarray  # (K, 3) uint8
    merges: list[dict] = field(default_factory=list)  # clusters merged, with the evidence
    background: list[int] = field(default_factory=lambda: [255, 255, 255])


def background_colour(images: np.ndarray, tol: float = 12.0) -> np.ndarray:
    """The colour (3,) of the images' 2-pixel borders, which must be uniform (80 % within ``tol``)."""
    b = np.concatenate([images[:, :2].reshape(-1, 3), images[:, -2:].reshape(-1, 3),
                        images[:, :, :2].reshape(-1, 3), images[:, :, -2:].reshape(-1, 3)]).astype(np.float32)
    c = np.median(b, axis=0)
    near = np.abs(b - c).max(1) <= tol
    if near.mean() < 0.8:
        raise BackendError("bad_input", "the part images have no uniform background (their borders vary); "
                           "SP4D part images show the object on white")
    return c


def foreground_mask(rgb: np.ndarray | None, parts: np.ndarray, background=(255, 255, 255),
                    tol: float = 12.0) -> np.ndarray:
    """Object pixels (H, W): away from the part image's background colour, or, with an RGB view
    on white, not white there."""
    bg = np.asarray(np.round(background), np.uint8).astype(float)
    near = np.floor(tol)  # |level − background| ≤ tol in every channel: background (levels are integers)
    m = cv2.inRange(parts, tuple(bg - near), tuple(bg + near)) == 0
    if rgb is not None:  # not white: some channel below 245
        m |= cv2.inRange(rgb, (245, 245, 245), (255, 255, 255)) == 0
    return m


def _confident(smooth: np.ndarray, mask: np.ndarray, edge: float) -> np.ndarray:
    """Foreground pixels off the silhouette (3×3 erosion) where the smoothed colour is flat."""
    er = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    g = None
    for c in range(3):
        gx = cv2.convertScaleAbs(cv2.Sobel(smooth[..., c], cv2.CV_16S, 1, 0, ksize=3))
        gy = cv2.convertScaleAbs(cv2.Sobel(smooth[..., c], cv2.CV_16S, 0, 1, ksize=3))
        gc = cv2.add(gx, gy)
        g = gc if g is None else cv2.max(g, gc)
    return er & (g < edge)


def _denoise(img: np.ndarray, mask: np.ndarray, edge: float) -> tuple[np.ndarray, np.ndarray]:
    """(the image averaged over 5×5 windows of foreground pixels only (H, W, 3) uint8, confident
    pixels (H, W))."""
    m8 = mask.astype(np.uint8)
    # window sums of integers below 2^24 are exact in float32, so summing straight into float32 gives
    # what a 16-bit sum converted afterwards would; the arithmetic after it happens in place
    num = cv2.boxFilter(cv2.bitwise_and(img, img, mask=m8), cv2.CV_32F, (5, 5), normalize=False)
    den = cv2.boxFilter(m8, cv2.CV_32F, (5, 5), normalize=False)
    np.divide(num, np.maximum(den, 1)[..., None], out=num)
    num += 0.5
    np.clip(num, 0, 255, out=num)
    sm = num.astype(np.uint8)
    cv2.bitwise_or(sm, (255, 255, 255, 0), dst=sm, mask=cv2.compare(m8, 0, cv2.CMP_EQ))  # background white
    return sm, _confident(sm, mask, edge)


def _roi(mask: np.ndarray, margin: int = 8) -> tuple[slice, slice]:
    ys, xs = np.nonzero(mask.any(1)), np.nonzero(mask.any(0))
    if not len(ys[0]):
        return slice(0, 0), slice(0, 0)
    h, w = mask.shape
    return (slice(max(ys[0][0] - margin, 0), min(ys[0][-1] + margin + 1, h)),
            slice(max(xs[0][0] - margin, 0), min(xs[0][-1] + margin + 1, w)))


def _flat_nonzero(inside: list[np.ndarray]) -> np.ndarray:
    """Flat indices (S,) into the per-image regions ``inside`` (h_i, w_i) laid end to end of their
    true pixels, in the order np.nonzero gives for the whole stack (image, then row, then column):
    one pass over one buffer instead of a row and a column array per image (their images:
    ``_image_of``)."""
    return np.flatnonzero(np.concatenate([m.ravel() for m in inside])) if inside else np.zeros(0, np.int64)


def _image_of(flat: np.ndarray, inside: list[np.ndarray]) -> np.ndarray:
    """The image (S,) of flat indices ``flat`` (S,) into the per-image regions laid end to end."""
    ends = np.cumsum([m.size for m in inside])
    return np.searchsorted(ends, flat, side="right").astype(np.int64)


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared distances (S, K) of points x (S, 3) to centres c (K, 3) as |x|² − 2 x·c + |c|², in
    place in one (S, K) buffer."""
    d = (2 * x) @ c.T
    np.subtract((x * x).sum(1)[:, None], d, out=d)
    d += (c * c).sum(1)[None]
    return d


def _nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return _sq_dist(x, c).argmin(1)


def _peaks(samples: np.ndarray, min_count: float, sep: float) -> np.ndarray:
    nb = 256 // BIN
    # samples // BIN, clipped and truncated: BIN is a power of two, so samples · (1 / BIN) is the exact
    # quotient and clipping before truncating gives the same bins as flooring first (a third of the work)
    idx = np.clip(samples * (1.0 / BIN), 0, nb - 1).astype(np.int64)
    hist = np.bincount((idx[:, 0] * nb + idx[:, 1]) * nb + idx[:, 2], minlength=nb ** 3).reshape(nb, nb, nb)
    smooth = ndimage.gaussian_filter(hist.astype(np.float32), 1.0)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=3)) & (smooth > min_count)
    pk = np.argwhere(peaks)
    order = np.argsort(-smooth[peaks])
    kept: list[np.ndarray] = []
    for c in (pk[order] + 0.5) * BIN:
        if all(np.linalg.norm(c - k) > sep for k in kept):
            kept.append(c)
    return np.array(kept, np.float64).reshape(-1, 3)


def _kmeans(x: np.ndarray, seeds: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """scipy's ``kmeans2(x, seeds, iter=iters, minit="matrix", missing="raise")`` (centres (K, 3),
    labels (S,)): the same assignment (scipy's public ``vq``) and the same means (sums in point
    order, as kmeans2's C routine adds them), stopping once an iteration's labels repeat the
    previous one's: its centres would then be the previous centres to the last bit (the same means
    of the same points), so every further iteration would repeat it too and the result is the same.
    The drift loop's clusterings settle in 2–4 of their 6 iterations. Only public scipy is used:
    its private modules differ between releases. x (S, 3) float64."""
    code = np.array(seeds, np.float64)
    k = len(code)
    prev = None
    for _ in range(iters):
        lab = vq(x, code, check_finite=False)[0]
        if prev is not None and np.array_equal(lab, prev):
            break
        count = np.bincount(lab, minlength=k)
        if not count.all():
            raise ClusterError("One of the clusters is empty. Re-run kmeans with a different initialization.")
        sums = np.stack([np.bincount(lab, weights=x[:, d], minlength=k) for d in range(x.shape[1])], axis=1)
        code, prev = sums / count[:, None], lab
    return code, lab


def find_part_colours(samples: np.ndarray, min_frac: float = 0.0005, sep: float = 7.0) -> np.ndarray:
    """Cluster centres (K, 3) of colour samples (S, 3): histogram peaks at least ``sep`` levels
    apart refined by k-means; clusters under ``min_frac`` of the samples are dropped."""
    return _part_colours(samples, min_frac, sep)[0]


def _part_colours(samples: np.ndarray, min_frac: float, sep: float) -> tuple[np.ndarray, np.ndarray]:
    """find_part_colours' centres (K, 3), and which of them (K,) bool came from a second look at
    the samples no first cluster explains (``_residual_peaks``, fine clusterings only): flat
    colours of their own, which ``_merge`` joins to a neighbour only on strong evidence."""
    if len(samples) == 0:
        raise BackendError("bad_input", "the part images have no foreground pixels")
    x = samples.astype(np.float64)
    seeds = _peaks(x, max(3.0, min_frac * len(x) / 4), sep)
    if len(seeds) == 0:
        seeds = x.mean(0, keepdims=True)
    centres, _ = _settle(x, seeds, min_frac)
    second = np.zeros(len(centres), bool)
    if sep < COARSE:  # colours hidden under a bigger neighbour's peak: look again without the clusters found
        extra = _residual_peaks(x, centres, min_frac, sep)
        if len(extra):
            first = len(centres)
            centres, kept = _settle(x, np.concatenate([centres, extra]), min_frac)
            second = kept >= first
    return centres, second


def _settle(x: np.ndarray, seeds: np.ndarray, min_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """k-means from ``seeds`` (K, 3) over x (S, 3), clusters under ``min_frac`` of x dropped and
    the rest clustered again (up to three rounds): centres (K', 3) and the seed each came from (K',)."""
    index = np.arange(len(seeds))
    for _ in range(3):
        centres, lab = _kmeans(x, seeds, 6) if len(seeds) > 1 else (x.mean(0, keepdims=True), np.zeros(len(x), int))
        counts = np.bincount(lab, minlength=len(centres))
        keep = counts >= min_frac * len(x)
        if keep.all():
            return centres, index
        seeds, index = centres[keep], index[keep]
    return seeds, index


def _residual_peaks(x: np.ndarray, centres: np.ndarray, min_frac: float, sep: float) -> np.ndarray:
    """Histogram peaks (E, 3) of the samples x (S, 3) farther than ``sep`` levels from every centre
    (K, 3), themselves farther than ``sep`` from them. A small part whose colour is 7–20 levels from
    a big neighbour's (the tip of an ear, a hoof) makes no peak of its own in the whole histogram:
    the smoothed histogram's maximum filter or its threshold (set for the whole sample) hides it
    under the neighbour's shoulder. Among the samples no cluster explains, it stands out; its
    threshold is a cluster's minimum size spread as the smoothing spreads one bin (~1/13)."""
    far = x[_sq_dist(x, centres).min(1) > sep * sep]
    if len(far) < min_frac * len(x):
        return np.zeros((0, 3))
    pk = _peaks(far, max(3.0, min_frac * len(x) / 13), sep)
    if not len(pk):
        return pk
    pk = pk[_sq_dist(pk, centres).min(1) > sep * sep]
    d2 = _sq_dist(far, pk)
    inner = (d2 <= 16).sum(0)  # within 4 levels: a flat part's colour (and its noise)
    shell = ((d2 > 16) & (d2 <= 100)).sum(0)  # 4–10 levels: a blend between two parts runs on through it
    pk = pk[(inner >= min_frac * len(x)) & (inner >= 2 * shell)]
    return pk[~_on_a_blend(pk, centres)]


def _faded(a: np.ndarray, b: np.ndarray, background: np.ndarray, near: float = 4.0) -> bool:
    """Whether colour a (3,) is colour b (3,) moved 3–50 % of the way to the background (3,), to
    within ``near`` levels."""
    ab = np.asarray(background, np.float64) - b
    ln2 = float(ab @ ab)
    if ln2 < 1e-9:
        return False
    t = float((a - b) @ ab) / ln2
    return 0.03 < t < 0.5 and float(np.sum((a - b - t * ab) ** 2)) <= near * near


def _on_a_blend(pts: np.ndarray, centres: np.ndarray, near: float = 4.0, span: float = 60.0) -> np.ndarray:
    """Which colours pts (E, 3) lie within ``near`` levels of the segment between two centres (K, 3)
    at most ``span`` apart, away from its ends (E,) bool: the 5×5 average across the boundary of
    two parts of close colours, which the gradient test keeps as confident (farther colours make
    an edge)."""
    out = np.zeros(len(pts), bool)
    for i in range(len(centres)):
        ab = centres[i + 1:] - centres[i]  # (M, 3)
        ln2 = (ab * ab).sum(1)
        ok = (ln2 > 1e-9) & (ln2 <= span * span)
        if not ok.any():
            continue
        ab, ln2 = ab[ok], ln2[ok]
        ap = pts[:, None] - centres[i]  # (E, 1, 3)
        t = (ap * ab[None]).sum(2) / ln2  # (E, M)
        d2 = ((ap - t[..., None] * ab[None]) ** 2).sum(2)
        out |= ((t > 0.1) & (t < 0.9) & (d2 <= near * near)).any(1)
    return out


def _adjacency_counts(labels: np.ndarray, k: int) -> np.ndarray:
    """(K+1, K+1) 4-neighbour pixel pair counts between labels over images (..., H, W)."""
    c = np.zeros((k + 1) ** 2, np.int64)
    for a, b in ((labels[..., :, 1:], labels[..., :, :-1]), (labels[..., 1:, :], labels[..., :-1, :])):
        c += np.bincount(a.ravel().astype(np.int64) * (k + 1) + b.ravel(), minlength=(k + 1) ** 2)
    return c.reshape(k + 1, k + 1)


def decode_parts(parts: np.ndarray, rgb: np.ndarray | None = None, *, edge: float = 60.0,
                 min_frac: float = 0.0005, merge_dist: float = 30.0, interleave: float = 0.15,
                 max_samples: int = 200_000, seed: int = 0) -> Decoded:
    """Labels (..., H, W) and colours of part images parts (..., H, W, 3) uint8 of all views and
    frames (any leading shape), with the RGB views when available (see the module doc)."""
    parts = np.asarray(parts)
    if parts.ndim < 3 or parts.shape[-1] != 3:
        raise BackendError("bad_input", f"part images must be (..., H, W, 3), got {parts.shape}")
    lead = parts.shape[:-3]
    p = parts.reshape((-1,) + parts.shape[-3:])
    r = None if rgb is None else np.asarray(rgb).reshape(p.shape)
    bg = background_colour(p)
    n_img = len(p)
    rois, masks, smooth, conf = [], [], [], []  # per image: its region of interest, and there the
    for i in range(n_img):  # foreground, smoothed colours and confident pixels (outside it: background)
        mask = foreground_mask(None if r is None else r[i], p[i], bg)
        roi = _roi(mask)
        rois.append(roi)
        masks.append(mask[roi])
        if masks[i].any():
            sm, cf = _denoise(p[i][roi], masks[i], edge)
        else:
            sm, cf = np.full(p[i][roi].shape, 255, np.uint8), np.zeros(masks[i].shape, bool)
        smooth.append(sm)
        conf.append(cf)
    n_fg = sum(int(np.count_nonzero(m)) for m in masks)
    if not n_fg:
        raise BackendError("bad_input", "the part images have no foreground pixels")
    if sum(int(np.count_nonzero(c)) for c in conf) < 100:
        conf = [m.copy() for m in masks]
    rng = np.random.default_rng(seed)
    flat = _flat_nonzero(conf)
    if len(flat) > max_samples:
        flat = flat[rng.choice(len(flat), max_samples, replace=False)]
    img_of = _image_of(flat, conf)
    samples = np.concatenate([sm.reshape(-1, 3) for sm in smooth])[flat].astype(np.float64)
    drift = np.zeros((n_img, 3))
    by_image = np.argsort(img_of, kind="stable")  # the samples image by image: [bounds[i], bounds[i + 1])
    bounds = np.searchsorted(img_of[by_image], np.arange(n_img + 1))
    centres = find_part_colours(samples, min_frac, sep=COARSE)  # well-separated colours first: the drift
    for sep in (COARSE, 7.0, 7.0):  # remove each image's colour drift against the clusters, then cluster again
        x = samples - drift[img_of]
        lab = _nearest(x, centres)
        resid = (x - centres[lab])[by_image]
        for i in range(n_img):
            if bounds[i + 1] - bounds[i] > 20:
                drift[i] += np.median(resid[bounds[i]:bounds[i + 1]], axis=0)
        centres, second = _part_colours(samples - drift[img_of], min_frac, sep)
    labels = _label(p, smooth, masks, conf, drift, centres, rois)
    centres, labels, merges = _merge(centres, labels, rois, merge_dist, interleave, min_frac, n_fg, second, bg)
    return Decoded(labels.reshape(lead + p.shape[1:3]),
                   np.clip(np.round(centres), 0, 255).astype(np.uint8), merges, [int(round(v)) for v in bg])


def _label(raw, smooth, masks, conf, drift, centres, rois) -> np.ndarray:
    """Labels (I, H, W): confident pixels by the nearest cluster of their smoothed colour (through
    a colour lookup table); the others by their own colour when it is within OWN levels of a
    cluster, else from the nearest confident pixel within BORROW px, else by their smoothed
    colour. raw (I, H, W, 3) whole; masks, smooth and conf per image over its region of interest
    rois[i]."""
    q = 1 << LUT_BITS
    grid = (np.arange(q) + 0.5) * (256 / q)
    lut_colours = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    d2 = _sq_dist(lut_colours, centres)
    lut = (d2.argmin(1) + 1).astype(np.uint16)
    lut_near = np.sqrt(np.maximum(d2.min(1), 0)) <= OWN
    shift = 8 - LUT_BITS
    out = np.zeros(raw.shape[:3], np.uint16)

    levels = np.arange(256, dtype=np.float32)[:, None]

    def codes(img, i):
        # the drift-corrected, quantised channel of every level 0..255 (256, 3), shifted to its place
        # in the code: three table lookups per pixel instead of float arithmetic on every pixel
        q = (np.clip(levels - drift[i], 0, 255).astype(np.uint8) >> shift).astype(np.int32)
        q <<= np.array([2 * LUT_BITS, LUT_BITS, 0], np.int32)
        return q[img[..., 0], 0] | q[img[..., 1], 1] | q[img[..., 2], 2]

    for i in range(len(masks)):
        roi = rois[i]
        m = masks[i]
        if not m.any():
            continue
        c = conf[i]
        smooth_code = codes(smooth[i], i)
        lab = np.where(m, lut[smooth_code], 0)
        unsure = m & ~c
        at = np.flatnonzero(unsure)  # the raw colours matter only there (boundaries, blur): a few %
        raw_code = codes(raw[i][roi][unsure], i)  # (len(at),) in the order of at
        own = lut_near[raw_code]
        lab.reshape(-1)[at[own]] = lut[raw_code[own]]
        rest = unsure.copy()
        rest.reshape(-1)[at[own]] = False
        if c.any() and rest.any():
            d, idx = cv2.distanceTransformWithLabels((~c).astype(np.uint8), cv2.DIST_L2, 3,
                                                     labelType=cv2.DIST_LABEL_PIXEL)
            ys, xs = np.nonzero(c)
            by_index = np.zeros(idx.max() + 1, np.uint16)
            by_index[idx[ys, xs]] = lab[ys, xs]
            take = rest & (d <= BORROW)
            lab[take] = by_index[idx[take]]
        out[i][roi] = lab
    return out


def _merge(centres, labels, rois, merge_dist, interleave, min_frac, n_fg, second, background):
    """Merge clusters with evidence (module doc, step 4); returns centres, relabelled labels, merges.
    A smaller cluster whose colour is a bigger touching one's faded toward the ``background`` (3,)
    (the thin tip of a leg, blurred with the white around it) joins it and leaves its colour alone.
    A pair with a cluster from the second look (``second`` (K,) bool, ``_part_colours``) needs
    STRONG interleave: its colour is already a flat one of its own, and thin neighbours (a leg's
    segments) whose noisy boundaries wander interleave at 0.2–0.3."""
    merges = []
    k = len(centres)
    adj = sum(_adjacency_counts(labels[i][roi], k) for i, roi in enumerate(rois))
    counts = adj.sum(1)[1:].astype(float) / 4  # each pixel has (about) four neighbour pairs
    target = np.arange(k)
    faded = np.zeros(k, bool)
    adj = adj[1:, 1:].astype(float)
    order = np.argsort(counts)  # smallest first

    group, size = adj.copy(), counts.copy()  # adjacency and pixels of the parts as merged so far

    def root(i):
        while target[i] != i:
            i = target[i]
        return i

    def join(a, r):
        target[a] = r
        group[r] += group[a]
        group[:, r] += group[:, a]
        size[r] += size[a]

    for a in order:
        a = int(a)
        if counts[a] < min_frac * n_fg:  # too few pixels to be a part: join the nearest cluster
            d = np.linalg.norm(centres - centres[a], axis=1)
            d[a] = np.inf
            b = root(int(np.argmin(d)))
            if b != a:
                join(a, b)
                merges.append({"colours": [centres[a].round().tolist(), centres[b].round().tolist()],
                               "reason": f"too few pixels ({int(counts[a])})"})
            continue
        for b in np.argsort(np.linalg.norm(centres - centres[a], axis=1)):
            b = int(b)
            dist = np.linalg.norm(centres[a] - centres[b])
            rb = root(b)
            if b == a or rb == a or dist > FADED:
                continue
            # against the part b now belongs to: its pixels so far, and its own colour
            touch = group[a, rb] / max(min(group[a, a], group[rb, rb]), 1.0)
            if touch > 0.1 and counts[a] < size[rb] and _faded(centres[a], centres[rb], background):
                join(a, rb)
                faded[a] = True
                merges.append({"colours": [centres[a].round().tolist(), centres[rb].round().tolist()],
                               "reason": f"the first is the second faded toward the background (ratio {touch:.2f})"})
                break
            if dist > merge_dist:
                continue
            ratio = adj[a, b] / max(min(adj[a, a], adj[b, b]), 1.0)
            if ratio > (STRONG if second[a] or second[b] else interleave):
                join(a, rb)
                merges.append({"colours": [centres[a].round().tolist(), centres[b].round().tolist()],
                               "reason": f"pixels interleave (ratio {ratio:.2f})"})
                break
    roots = np.array([root(i) for i in range(k)])
    keep = np.unique(roots)
    new_index = np.zeros(k, np.int64)
    new_index[keep] = np.arange(len(keep))
    w = np.where(faded, 0.0, counts)  # a faded copy does not pull its part's colour toward white
    merged = np.stack([(centres[roots == r] * w[roots == r, None]).sum(0) / max(w[roots == r].sum(), 1)
                       for r in keep])
    lut = np.r_[0, new_index[roots] + 1].astype(np.uint16)
    if merges:
        for i, roi in enumerate(rois):
            labels[i][roi] = lut[labels[i][roi]]
    return merged, labels, merges
