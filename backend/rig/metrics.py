"""Rig quality against ground truth: parts, joints against true pivots, tree, deformation.

A predicted rig is its per-vertex part labels, a parent per part, a joint per non-root part and
weights over its bones (one bone per part). Each ground-truth part is matched to the predicted
part that overlaps it best (IoU on vertices). Deformation poses the *predicted* skeleton the way
an animator would pose the true one: every bone takes its matched true part's local rotation
about the predicted joint, composed down the predicted tree, so misplaced joints, wrong parents
and poor weights all show; the reference is the true rig (rigid parts, or the artist's own
skinning).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from ..sample.oracle import depth_order
from .structure import subtree


def iou_matrix(pred: np.ndarray, gt: np.ndarray, n_pred: int, n_gt: int) -> np.ndarray:
    """(n_gt, n_pred) IoU of every true part with every predicted part (vertex sets)."""
    inter = np.zeros((n_gt, n_pred))
    np.add.at(inter, (gt, pred), 1)
    union = np.bincount(gt, minlength=n_gt)[:, None] + np.bincount(pred, minlength=n_pred)[None] - inter
    return inter / np.maximum(union, 1)


def part_miou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean over true parts of the IoU with the predicted part that overlaps it best."""
    m = iou_matrix(pred, gt, int(pred.max()) + 1, int(gt.max()) + 1)
    present = np.bincount(gt, minlength=m.shape[0]) > 0
    return float(m.max(1)[present].mean())


def matching(pred: np.ndarray, gt: np.ndarray, n_pred: int, n_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """(best predicted part of each true part (n_gt,), true part of each predicted part (n_pred,),
    the one it overlaps most in vertices)."""
    m = iou_matrix(pred, gt, n_pred, n_gt)
    inter = np.zeros((n_pred, n_gt))
    np.add.at(inter, (pred, gt), 1)
    return m.argmax(1), inter.argmax(1)


def joint_errors(pred_joints: dict[int, np.ndarray], best: np.ndarray, gt_parents: np.ndarray,
                 gt_joints: np.ndarray, diag: float) -> np.ndarray:
    """Per true non-root part, the distance (% of ``diag``) from its true pivot to the joint of
    its best-matching predicted part, or to the nearest predicted joint when that part has none."""
    allj = np.array(list(pred_joints.values())).reshape(-1, 3)
    out = []
    for g in np.nonzero(gt_parents >= 0)[0]:
        q = int(best[g])
        if q in pred_joints:
            d = np.linalg.norm(pred_joints[q] - gt_joints[g])
        elif len(allj):
            d = np.linalg.norm(allj - gt_joints[g], axis=1).min()
        else:
            d = np.nan
        out.append(100.0 * d / diag)
    return np.array(out)


def tree_correctness(pred_parents: np.ndarray, best: np.ndarray, owner: np.ndarray,
                     gt_parents: np.ndarray) -> tuple[bool, int, int]:
    """(root right, true non-root parts whose parent is right, their count). The root is right
    when the true root's best predicted part is the predicted root; a true part's parent is
    right when its best predicted part hangs from a predicted part owned by its true parent."""
    gt_root = int(np.nonzero(gt_parents < 0)[0][0])
    root_ok = bool(pred_parents[best[gt_root]] < 0)
    ok = n = 0
    for g in np.nonzero(gt_parents >= 0)[0]:
        n += 1
        p = pred_parents[best[g]]
        ok += int(p >= 0 and owner[p] == gt_parents[g])
    return root_ok, ok, n


def random_poses(parents: np.ndarray, n: int, max_angle: float = 0.6, seed: int = 0) -> list[np.ndarray]:
    """n sets of local rotations (P, 3, 3): every non-root part turned by up to ``max_angle`` rad
    about a random axis (the root: identity)."""
    rng = np.random.default_rng(seed)
    poses = []
    for _ in range(n):
        axes = rng.normal(size=(len(parents), 3))
        angles = rng.uniform(-max_angle, max_angle, len(parents))
        rots = Rotation.from_rotvec(axes / np.linalg.norm(axes, axis=1, keepdims=True) * angles[:, None]).as_matrix()
        rots[np.asarray(parents) < 0] = np.eye(3)
        poses.append(rots)
    return poses


def forward_kinematics(parents: np.ndarray, joints: np.ndarray, local: np.ndarray) -> np.ndarray:
    """World transforms (P, 4, 4) of local rotations (P, 3, 3) about ``joints`` (P, 3)."""
    world = np.tile(np.eye(4), (len(parents), 1, 1))
    for p in depth_order(parents):
        m = np.eye(4)
        m[:3, :3] = local[p]
        m[:3, 3] = joints[p] - local[p] @ joints[p]
        world[p] = m if parents[p] < 0 else world[parents[p]] @ m
    return world


def skin(vertices: np.ndarray, weights: np.ndarray, world: np.ndarray) -> np.ndarray:
    """Linear blend skinning: (N, 3) from weights (N, B) and bone transforms (B, 4, 4)."""
    per = np.einsum("bij,nj->bni", world[:, :3, :3], vertices) + world[:, None, :3, 3]
    return np.einsum("nb,bni->ni", weights, per)


def deformation_error(vertices: np.ndarray, truth_weights: np.ndarray, gt_parents: np.ndarray,
                      gt_joints: np.ndarray, weights: np.ndarray, parents: np.ndarray, joints: np.ndarray,
                      owner: np.ndarray, poses: list[np.ndarray], diag: float) -> float:
    """Mean distance (% of ``diag``) between the true rig posed by each local-rotation pose and
    a predicted rig (weights (N, B), parents (B,), joints (B, 3), owner: true part of each bone)
    posed the same way: a bone turns by its true part's local rotation unless its parent has the
    same true part. ``truth_weights`` (N, P): the true rig's skinning (one-hot for rigid parts)."""
    errs = []
    for rots in poses:
        truth = skin(vertices, truth_weights, forward_kinematics(gt_parents, gt_joints, rots))
        local = np.array([np.eye(3) if (parents[b] >= 0 and owner[parents[b]] == owner[b]) else rots[owner[b]]
                          for b in range(len(parents))])
        root = np.nonzero(parents < 0)[0]
        world = forward_kinematics(parents, joints, local)
        gt_world = forward_kinematics(gt_parents, gt_joints, rots)
        for r in root:  # a predicted root carries its true part's whole motion
            world_r = gt_world[owner[r]]
            fix = world_r @ np.linalg.inv(world[r])
            for b in np.nonzero(subtree(parents, r))[0]:
                world[b] = fix @ world[b]
        errs.append(np.linalg.norm(skin(vertices, weights, world) - truth, axis=1).mean())
    return float(100.0 * np.mean(errs) / diag)


def clip_error(vertices: np.ndarray, truth_posed: np.ndarray, weights: np.ndarray, frames: np.ndarray,
               diag: float) -> float:
    """How far the rig's own keyframes are from the clip: mean distance (% of ``diag``) between
    the rest ``vertices`` (N, 3) skinned by ``weights`` (N, B) with each frame's bone transforms
    ``frames`` (F, B, 4, 4) and the clip's posed vertices ``truth_posed`` (F, N, 3). Unlike
    deformation_error it reads the tracked motion itself: the animation an artist is handed."""
    errs = [np.linalg.norm(skin(vertices, weights, f) - p, axis=1).mean() for f, p in zip(frames, truth_posed,
                                                                                           strict=True)]
    return float(100.0 * np.mean(errs) / diag) if errs else 0.0


def one_hot(labels: np.ndarray, n: int) -> np.ndarray:
    w = np.zeros((len(labels), n))
    w[np.arange(len(labels)), labels] = 1
    return w
