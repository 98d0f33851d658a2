"""Write a Blender mesh object into a job folder (job.json + mesh.npz)."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import bpy
import numpy as np

GT_PART_ATTR = "sp4d_gt_part"  # optional int point attribute: ground-truth part per vertex
GT_RIG_PROP = "sp4d_gt_rig"  # optional JSON custom property: {"parents": [...], "joints": [[x,y,z]...]}


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def mesh_arrays(obj: bpy.types.Object) -> dict[str, np.ndarray]:
    """Object-space vertices (N,3), triangles (M,3), matrix_world and optional ground truth."""
    me = obj.data
    n = len(me.vertices)
    co = np.empty(n * 3, np.float32)
    me.vertices.foreach_get("co", co)
    me.calc_loop_triangles()
    tri = np.empty(len(me.loop_triangles) * 3, np.int32)
    me.loop_triangles.foreach_get("vertices", tri)
    out = {"vertices": co.reshape(n, 3), "faces": tri.reshape(-1, 3),
           "matrix_world": np.array(obj.matrix_world, np.float32)}
    attr = me.attributes.get(GT_PART_ATTR)
    gt = obj.get(GT_RIG_PROP)
    if attr is not None and attr.domain == "POINT" and attr.data_type == "INT" and gt:
        lab = np.empty(n, np.int32)
        attr.data.foreach_get("value", lab)
        rig = json.loads(gt)
        out.update(gt_labels=lab, gt_parents=np.asarray(rig["parents"], np.int32),
                   gt_joints=np.asarray(rig["joints"], np.float32))
    return out


def write_job(obj: bpy.types.Object, job_dir: str | os.PathLike, settings: dict) -> Path:
    """Create or refresh the job folder for ``obj``; finished stages stay reusable when the
    mesh and settings are unchanged (the backend compares digests)."""
    if obj is None or obj.type != "MESH":
        raise ValueError("select a mesh object to rig")
    if len(obj.data.vertices) == 0 or len(obj.data.polygons) == 0:
        raise ValueError(f"'{obj.name}' has no faces to rig")
    job = Path(job_dir).resolve()
    arrays = mesh_arrays(obj)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _write_atomic(job / "mesh.npz", buf.getvalue())
    spec = {"format": 1,
            "source": {"kind": "mesh", "object": obj.name, "blend": bpy.data.filepath or None},
            "settings": settings,
            "versions": {"blender": bpy.app.version_string}}
    _write_atomic(job / "job.json", (json.dumps(spec, indent=1) + "\n").encode())
    return job
