"""The npz files of a job folder: keys, dtypes and shapes, and their one writer and checker.

A shape is a tuple of ints and letters: a letter is a size that must agree wherever it appears
in one file (N vertices, M faces, P ground-truth parts, T frames, V views, H×W pixels, K decoded
parts, B bones).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import VIEWS


@dataclass(frozen=True)
class Array:
    dtype: str
    shape: tuple
    required: bool = True
    meaning: str = ""


MESH = {  # mesh.npz: the mesh to rig, object space (Blender writes it; the backend writes a visual hull)
    "vertices": Array("float32", ("N", 3), meaning="object-space positions"),
    "faces": Array("int32", ("M", 3), meaning="triangles"),
    "matrix_world": Array("float32", (4, 4), meaning="object to world (Blender's matrix_world)"),
    "gt_labels": Array("int32", ("N",), False, "ground-truth part per vertex (the parts oracle)"),
    "gt_parents": Array("int32", ("P",), False, "ground-truth parent part (-1: root)"),
    "gt_joints": Array("float32", ("P", 3), False, "ground-truth joint per part, object space"),
    "gt_axes": Array("float32", ("P", 3), False, "ground-truth hinge axis per part (zero: a ball joint)"),
    "gt_weights": Array("float32", ("N", "P"), False, "an artist's skinning over the parts (the oracle poses by it)"),
    "from_hull": Array("bool", (), False, "the backend made this mesh: the visual hull of a clip"),
}
LABELS = {  # parts/labels.npz: decoded part labels
    "labels": Array("uint16", ("T", VIEWS, "H", "W"), meaning="0 = background, k = part k (1..K)"),
    "colours": Array("uint8", ("K", 3), meaning="decoded colour of each part"),
    "present": Array("bool", ("T", VIEWS), meaning="which (frame, view) had a part image"),
}
WEIGHTS = {  # rig/weights.npz: skinning weights
    "weights": Array("float32", ("N", "B"), meaning="rows sum to 1, at most max_influences non-zero"),
    "bone_names": Array("str", ("B",), meaning="deform bone of each column"),
    "vertex_part": Array("int32", ("N",), False, "part of each vertex after lifting"),
    "confidence": Array("float32", ("N",), False, "share of the winning label among the view votes"),
}


def mesh_arrays(vertices, faces, matrix_world=None, **extra) -> dict[str, np.ndarray]:
    """mesh.npz's arrays: vertices, faces and matrix_world (identity when None) in their dtypes,
    ``extra`` arrays (ground truth, from_hull) as given."""
    out = {"vertices": np.asarray(vertices, np.float32),
           "faces": np.asarray(faces, np.int32),
           "matrix_world": np.eye(4, dtype=np.float32) if matrix_world is None
           else np.asarray(matrix_world, np.float32)}
    out.update({k: np.asarray(v) for k, v in extra.items()})
    return out


def check(arrays: dict[str, np.ndarray], schema: dict[str, Array], name: str) -> dict[str, int]:
    """The sizes of the schema's letters in ``arrays``; ValueError naming the file, key and shape
    when a required key is missing or a shape or dtype kind disagrees. Extra keys are allowed."""
    sizes: dict[str, int] = {}
    for key, spec in schema.items():
        if key not in arrays:
            if spec.required:
                raise ValueError(f"{name} has no '{key}' ({spec.meaning})")
            continue
        a = np.asarray(arrays[key])
        kind = "U" if spec.dtype == "str" else np.dtype(spec.dtype).kind
        if a.dtype.kind != kind and not (kind in "iu" and a.dtype.kind in "iu"):
            raise ValueError(f"{name} '{key}' must be {spec.dtype}, got {a.dtype}")
        if a.ndim != len(spec.shape):
            raise ValueError(f"{name} '{key}' must have shape {spec.shape}, got {a.shape}")
        for want, got in zip(spec.shape, a.shape, strict=True):
            if isinstance(want, str):
                want = sizes.setdefault(want, got)
            if want != got:
                raise ValueError(f"{name} '{key}' must have shape {spec.shape} ({sizes}), got {a.shape}")
    return sizes


def world_vertices(mesh: dict[str, np.ndarray]) -> np.ndarray:
    """mesh.npz's vertices (N, 3) in world space (float64): matrix_world applied."""
    m = np.asarray(mesh["matrix_world"], np.float64)
    return mesh["vertices"] @ m[:3, :3].T + m[:3, 3]
