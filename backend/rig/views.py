"""The generated views as arrays: cameras with their per-view 2D similarity, vectorised
projection with its Jacobian, and visibility from a splatted depth buffer.

Projection follows cameras.py (pinhole orbit cameras), then the 2D similarity fitted at lifting
(u_image = c_image + s · (u − c_model)) that absorbs framing differences of generated views.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..cameras import camera_pose, focal_px


@dataclass
class ViewSet:
    """V cameras: rotations (V, 3, 3) world→camera, centres (V, 3), focal (V,), image centre
    (V, 2), similarity scale (V,) and centres (V, 2) model / image, image size (H, W)."""
    R: np.ndarray
    C: np.ndarray
    f: np.ndarray
    pp: np.ndarray
    s: np.ndarray
    c0: np.ndarray
    c1: np.ndarray
    size: tuple[int, int]

    @classmethod
    def from_cameras(cls, cameras: list[dict], fits: dict | None = None) -> ViewSet:
        rc = [camera_pose(c) for c in cameras]
        fits = fits or {}
        s = np.array([float(fits.get(v, (1.0,))[0]) for v in range(len(cameras))])
        c0 = np.array([np.asarray(fits[v][1], float) if v in fits else np.zeros(2) for v in range(len(cameras))])
        c1 = np.array([np.asarray(fits[v][2], float) if v in fits else np.zeros(2) for v in range(len(cameras))])
        return cls(np.stack([r for r, _ in rc]), np.stack([c for _, c in rc]),
                   np.array([focal_px(c) for c in cameras]),
                   np.array([[c["width"] / 2, c["height"] / 2] for c in cameras], float), s, c0, c1,
                   (int(cameras[0]["height"]), int(cameras[0]["width"])))

    def project(self, x: np.ndarray, view, jacobian: bool = False):
        """Image coordinates (R, 2) and depth (R,) of points x (R, 3) in one view (an int) or in
        views ``view`` (R,); with ``jacobian`` also d(image)/d(x) (R, 2, 3)."""
        if np.ndim(view) == 0 and not jacobian:  # the common case, column by column (no broadcasting)
            v = int(view)
            p = (x - self.C[v]) @ self.R[v].T
            return self._image(p, self.f[v], self.s[v], self.pp[v], self.c0[v], self.c1[v]), p[:, 2]
        if np.ndim(view) == 0:
            v = int(view)
            p = (x - self.C[v]) @ self.R[v].T
            f, s = self.f[v], self.s[v]
            pp, c0, c1, R = self.pp[v], self.c0[v], self.c1[v], self.R[v][None]
        else:
            R = self.R[view]
            p = np.einsum("rij,rj->ri", R, x - self.C[view])
            f, s = self.f[view][:, None], self.s[view][:, None]
            pp, c0, c1 = self.pp[view], self.c0[view], self.c1[view]
        z = np.where(np.abs(p[:, 2]) < 1e-9, 1e-9, p[:, 2])[:, None]
        u = (f * p[:, :2] / z + pp - c0) * s + c1
        if not jacobian:
            return u, p[:, 2]
        k = s * f / z  # (R, 1)
        dp = np.zeros((len(x), 2, 3))
        dp[:, 0, 0] = k[:, 0]
        dp[:, 1, 1] = k[:, 0]
        dp[:, :, 2] = -k * p[:, :2] / z
        return u, p[:, 2], dp @ R

    @staticmethod
    def _image(p: np.ndarray, f, s, pp, c0, c1) -> np.ndarray:
        """Image coordinates (R, 2) of camera-space points p (R, 3): (f p_xy / z + pp − c0) s + c1,
        the operations of ``project`` in its order, one column at a time; f, s scalars or (R,),
        pp, c0, c1 (2,) or (R, 2)."""
        z = np.where(np.abs(p[:, 2]) < 1e-9, 1e-9, p[:, 2])
        u = np.empty((len(p), 2))
        for i in range(2):
            a = f * p[:, i]
            a /= z
            a += pp[..., i]
            a -= c0[..., i]
            a *= s
            a += c1[..., i]
            u[:, i] = a
        return u

    def project_grouped(self, x: np.ndarray, view: np.ndarray, runs: list[tuple[int, slice]]):
        """As ``project(x[sl], v, jacobian=True)`` for every run (v, sl) of rows of one view, in
        one pass: image coordinates (R, 2), depth (R,) and d(image)/d(x) (R, 2, 3) of points x
        (R, 3) in views ``view`` (R,). Only the two 3×3 products run per view (as the per-view
        call does them, so the results are the same to the last bit); the rest is elementwise
        over all rows."""
        p = np.empty_like(x)
        for v, sl in runs:
            p[sl] = (x[sl] - self.C[v]) @ self.R[v].T
        u = self._image(p, self.f[view], self.s[view], self.pp[view], self.c0[view], self.c1[view])
        f, s = self.f[view][:, None], self.s[view][:, None]
        z = np.where(np.abs(p[:, 2]) < 1e-9, 1e-9, p[:, 2])[:, None]
        k = s * f / z
        dp = np.zeros((len(x), 2, 3))
        dp[:, 0, 0] = k[:, 0]
        dp[:, 1, 1] = k[:, 0]
        dp[:, :, 2] = -k * p[:, :2] / z
        jac = np.empty((len(x), 2, 3))
        for v, sl in runs:
            jac[sl] = (dp[sl].reshape(-1, 3) @ self.R[v]).reshape(-1, 2, 3)
        return u, p[:, 2], jac


def splat_depth(u: np.ndarray, depth: np.ndarray, size: tuple[int, int], cell: int = 2) -> np.ndarray:
    """Nearest depth per cell (H/cell, W/cell) of points at image coordinates u (S, 2), then the
    minimum over each 3×3 neighbourhood (closes the gaps between splatted points)."""
    h, w = (size[0] + cell - 1) // cell, (size[1] + cell - 1) // cell
    ij = np.floor(u / cell).astype(np.int64)
    ok = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h) & (depth > 0)
    z = np.full(h * w, 1e9, np.float32)  # 1e9: no point (background)
    np.minimum.at(z, ij[ok, 1] * w + ij[ok, 0], depth[ok].astype(np.float32))  # the nearest point per cell
    return cv2.erode(z.reshape(h, w), np.ones((3, 3), np.uint8))


def visible(u: np.ndarray, depth: np.ndarray, zbuf: np.ndarray, cell: int = 2, tol: float = 0.025,
            cells: np.ndarray | None = None) -> np.ndarray:
    """Which points (u (R, 2), depth (R,)) are no farther than ``tol`` behind the depth buffer;
    ``cells``: their cells floor(u / cell) (R, 2) int64 when the caller has them."""
    h, w = zbuf.shape
    ij = np.floor(u / cell).astype(np.int64) if cells is None else cells
    ok = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
    out = np.zeros(len(u), bool)
    out[ok] = depth[ok] <= zbuf[ij[ok, 1], ij[ok, 0]] + tol
    return out


def visible_among(u: np.ndarray, depth: np.ndarray, size: tuple[int, int], cell: int = 2,
                  tol: float = 0.025) -> np.ndarray:
    """Which points (u (R, 2), depth (R,)) the same points' own depth buffer shows:
    ``visible(u, depth, splat_depth(u, depth, size, cell), cell, tol)`` with the cells computed once."""
    h, w = (size[0] + cell - 1) // cell, (size[1] + cell - 1) // cell
    ij = np.floor(u / cell).astype(np.int64)
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
    ok = inside & (depth > 0)
    z = np.full(h * w, 1e9, np.float32)
    np.minimum.at(z, ij[ok, 1] * w + ij[ok, 0], depth[ok].astype(np.float32))
    zbuf = cv2.erode(z.reshape(h, w), np.ones((3, 3), np.uint8))
    out = np.zeros(len(u), bool)
    out[inside] = depth[inside] <= zbuf[ij[inside, 1], ij[inside, 0]] + tol
    return out


@dataclass
class SurfaceSamples:
    """Points on a mesh's surface kept as (face, barycentric) so they follow any posing of the
    vertices: occluders for the depth buffers."""
    faces: np.ndarray  # (S, 3) vertex indices
    bary: np.ndarray  # (S, 3)

    @classmethod
    def of(cls, vertices: np.ndarray, faces: np.ndarray, count: int = 30000, seed: int = 0) -> SurfaceSamples:
        fa = 0.5 * np.linalg.norm(np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]],
                                           vertices[faces[:, 2]] - vertices[faces[:, 0]]), axis=1)
        rng = np.random.default_rng(seed)
        fi = rng.choice(len(faces), count, p=fa / fa.sum()) if fa.sum() > 0 else np.zeros(0, int)
        r = rng.random((len(fi), 2))
        flip = r.sum(1) > 1
        r[flip] = 1 - r[flip]
        bary = np.c_[1 - r.sum(1), r]
        return cls(faces[fi], bary)

    def points(self, posed_vertices: np.ndarray) -> np.ndarray:
        return np.einsum("sk,skj->sj", self.bary, posed_vertices[self.faces])
