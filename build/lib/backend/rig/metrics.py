"""Rig quality against ground truth: part IoU, joint distance, weights, deformation."""

from __future__ import annotations

import math

import numpy as np


def match_parts(pred: np.ndarray, gt: np.ndarray) -> dict[int, int]:
    """Each predicted part -> the ground-truth part it overlaps most."""
    return {int(k): int(np.bincount(gt[pred == k]).argmax()) for k in np.unique(pred)}


def part_miou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean over ground-truth parts of the IoU with the predicted part that overlaps it most."""
    ious = []
    for k in np.unique(gt):
        best = np.bincount(pred[gt == k]).argmax()
        a, b = pred == best, gt == k
        ious.append((a & b).sum() / (a | b).sum())
    return float(np.mean(ious))


def joint_chamfer(pred: np.ndarray, gt: np.ndarray, diag: float) -> float:
    """Symmetric mean nearest-joint distance, in % of the bounding-box diagonal."""
    if len(pred) == 0 or len(gt) == 0:
        return float("nan")
    d = np.linalg.norm(pred[:, None] - gt[None], axis=2)
    return float(50.0 * (d.min(1).mean() + d.min(0).mean()) / diag)


def weights_per_gt_part(w: np.ndarray, bone_parts: np.ndarray, vertex_part: np.ndarray, gt: np.ndarray,
                        n_gt: int) -> np.ndarray:
    """Predicted weights (N, B) summed into ground-truth part columns (N, P)."""
    mapping = match_parts(vertex_part, gt)
    out = np.zeros((len(w), n_gt))
    for b, p in enumerate(bone_parts):
        out[:, mapping.get(int(p), 0)] += w[:, b]
    return out


def weights_l1(w_gt_parts: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-vertex L1 distance to the rigid ground truth (one-hot parts), in [0, 2]."""
    onehot = np.zeros_like(w_gt_parts)
    onehot[np.arange(len(gt)), gt] = 1
    return float(np.abs(w_gt_parts - onehot).sum(1).mean())


def random_poses(parents: np.ndarray, joints: np.ndarray, n: int, max_angle: float = 0.6,
                 seed: int = 0) -> list[np.ndarray]:
    """n sets of world transforms (P, 4, 4): a random rotation of every non-root part about its
    joint, composed from the root down."""
    rng = np.random.default_rng(seed)
    order = sorted(range(len(parents)), key=lambda i: _depth(parents, i))
    poses = []
    for _ in range(n):
        world = np.tile(np.eye(4), (len(parents), 1, 1))
        for p in order:
            if parents[p] < 0:
                continue
            axis = rng.normal(size=3)
            r = _rotation(axis / np.linalg.norm(axis), rng.uniform(-max_angle, max_angle))
            local = np.eye(4)
            local[:3, :3], local[:3, 3] = r, joints[p] - r @ joints[p]
            world[p] = world[parents[p]] @ local
        poses.append(world)
    return poses


def deformation_error(vertices: np.ndarray, gt: np.ndarray, w_gt_parts: np.ndarray, poses: list[np.ndarray],
                      diag: float) -> float:
    """Mean distance between linear-blend skinning with the weights and the rigid ground truth,
    in % of the diagonal, averaged over poses."""
    errs = []
    vh = np.c_[vertices, np.ones(len(vertices))]
    for world in poses:
        per_part = np.einsum("pij,nj->pni", world[:, :3], vh)  # (P, N, 3)
        truth = per_part[gt, np.arange(len(vertices))]
        blended = np.einsum("np,pni->ni", w_gt_parts, per_part)
        errs.append(np.linalg.norm(blended - truth, axis=1).mean())
    return float(100.0 * np.mean(errs) / diag)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _depth(parents: np.ndarray, i: int) -> int:
    d = 0
    while parents[i] >= 0:
        i, d = parents[i], d + 1
    return d
