"""Blender's automatic weights (bone heat) for a mesh and a skeleton, for the rig benchmark.

Runs with bpy (the Blender environment): python scripts/blender_bone_heat.py MESH.npz SKELETON.json OUT.npz
Writes weights (N, B) in the skeleton's deform-bone order and the seconds bone heat took.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bpy  # noqa: E402

from sp4d_blender.build import create_bones  # noqa: E402


def main(mesh_path: str, skel_path: str, out_path: str) -> None:
    bpy.ops.wm.read_homefile(use_empty=True)
    with np.load(mesh_path) as z:
        v, f = z["vertices"].astype(np.float32), z["faces"].astype(np.int32)
    skel = json.loads(Path(skel_path).read_text())
    me = bpy.data.meshes.new("m")
    me.from_pydata(v.tolist(), [], f.tolist())
    obj = bpy.data.objects.new("m", me)
    arm = bpy.data.objects.new("a", bpy.data.armatures.new("a"))
    for o in (obj, arm):
        bpy.context.scene.collection.objects.link(o)
    create_bones(arm, skel["bones"])
    for o in bpy.context.view_layer.objects:
        o.select_set(False)
    obj.select_set(True)
    arm.select_set(True)
    bpy.context.view_layer.objects.active = arm
    t0 = time.perf_counter()
    bpy.ops.object.parent_set(type="ARMATURE_AUTO")
    seconds = time.perf_counter() - t0
    names = [b["name"] for b in skel["bones"] if b["deform"]]
    col = {g.index: names.index(g.name) for g in obj.vertex_groups if g.name in names}
    w = np.zeros((len(v), len(names)), np.float32)
    for vert in obj.data.vertices:
        for g in vert.groups:
            if g.group in col:
                w[vert.index, col[g.group]] = g.weight
    np.savez(out_path, weights=w, seconds=seconds)


if __name__ == "__main__":
    main(*sys.argv[1:4])
