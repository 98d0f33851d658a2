"""Build the rig in the scene from a finished job folder: armature, vertex groups, modifier.

Everything is created by plain functions usable headless. On any failure everything created so
far is removed again, so the scene is never left half-built; existing vertex groups, modifiers
and armatures are never changed (name clashes get a numbered name).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import bpy
import numpy as np
from mathutils import Vector

from . import mesh_data
from .jobfolder import arrays, layout

MODIFIER_NAME = "SP4D Armature"


def read_weights(job_dir: str | Path) -> tuple[np.ndarray, list[str]]:
    """rig/weights.npz: the weights (N, B) and the deform bone of each column; ValueError when the
    file does not follow sp4d_job.arrays.WEIGHTS."""
    z = layout.read_npz(Path(job_dir) / layout.WEIGHTS_NPZ)
    arrays.check(z, arrays.WEIGHTS, layout.WEIGHTS_NPZ)
    return z["weights"], [str(n) for n in z["bone_names"]]


def read_rig(job_dir: str | Path) -> tuple[dict, np.ndarray, list[str]]:
    """rig/skeleton.json, and rig/weights.npz as read_weights gives it."""
    skel = json.loads((Path(job_dir) / layout.SKELETON_JSON).read_text())
    return (skel, *read_weights(job_dir))


def _unique_group_name(obj, name: str) -> str:
    if obj.vertex_groups.get(name) is None:
        return name
    i = 1
    while obj.vertex_groups.get(f"{name}.{i:03d}") is not None:
        i += 1
    return f"{name}.{i:03d}"


@contextmanager
def edit_mode(arm_obj: bpy.types.Object):
    """Armature edit mode on ``arm_obj`` for the block (headless: the active object must be set)."""
    view_layer = bpy.context.view_layer
    prev_active = view_layer.objects.active
    view_layer.objects.active = arm_obj
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        yield arm_obj.data.edit_bones
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = prev_active


def create_bones(arm_obj, bones: list[dict]) -> dict[str, str]:
    """Create the bones in edit mode; returns skeleton name -> Blender bone name."""
    with edit_mode(arm_obj) as eb:
        made = {}
        for b in bones:
            e = eb.new(b["name"])
            e.head, e.tail = Vector(b["head"]), Vector(b["tail"])
            if (e.tail - e.head).length < 1e-6:
                e.tail = e.head + Vector((0, 0, 1e-3))
            e.roll = float(b.get("roll", 0.0))
            e.use_deform = bool(b.get("deform", True))
            made[b["name"]] = e.name
        for b in bones:
            if b.get("parent"):
                eb[made[b["name"]]].parent = eb[made[b["parent"]]]
    return made


def build_rig(obj: bpy.types.Object, job_dir: str | Path, name: str | None = None,
              animate: bool = True) -> bpy.types.Object:
    """Create the armature for ``obj`` from ``job_dir``/rig and bind the mesh to it; with
    ``animate`` the clip's motion becomes keyframes (when the skeleton has frames)."""
    skel, w, names = read_rig(job_dir)
    n = len(obj.data.vertices)
    if w.shape != (n, len(names)):
        raise ValueError(f"the rig's weights are for {w.shape[0]} vertices and {len(names)} bones but "
                         f"'{obj.name}' has {n} vertices: the mesh changed since the job ran")
    if bpy.context.object is not None and bpy.context.object.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    created_groups, arm_obj, arm_data, mod = [], None, None, None
    old_parent, old_parent_inv = obj.parent, obj.matrix_parent_inverse.copy()
    old_world = obj.matrix_world.copy()
    try:
        arm_data = bpy.data.armatures.new(name or f"{obj.name}_rig")
        arm_obj = bpy.data.objects.new(name or f"{obj.name}_rig", arm_data)
        for coll in obj.users_collection:
            coll.objects.link(arm_obj)
        if not arm_obj.users_collection:
            bpy.context.scene.collection.objects.link(arm_obj)
        arm_obj.matrix_world = obj.matrix_world.copy()
        arm_obj.show_in_front = True
        arm_obj["sp4d_job"] = str(Path(job_dir).resolve())
        made = create_bones(arm_obj, skel["bones"])
        for j, bone in enumerate(names):
            vg = obj.vertex_groups.new(name=_unique_group_name(obj, made[bone]))
            created_groups.append(vg)
            mesh_data.set_group_weights(vg, w[:, j])
            if vg.name != made[bone]:  # group must match the bone: rename the bone to the group
                arm_obj.data.bones[made[bone]].name = vg.name
        mod = obj.modifiers.new(MODIFIER_NAME, "ARMATURE")
        mod.object = arm_obj
        if obj.parent is None:
            obj.parent = arm_obj
            obj.matrix_parent_inverse = arm_obj.matrix_world.inverted()
            obj.matrix_world = old_world
        if animate:
            apply_motion(arm_obj, skel)
        from .refine import parts_summary

        parts_summary(obj, arm_obj)  # kept on the armature for the panel
        return arm_obj
    except BaseException:
        if mod is not None:
            obj.modifiers.remove(mod)
        for vg in created_groups:
            obj.vertex_groups.remove(vg)
        obj.parent, obj.matrix_parent_inverse = old_parent, old_parent_inv
        obj.matrix_world = old_world
        action = arm_obj.animation_data.action if arm_obj is not None and arm_obj.animation_data else None
        if arm_obj is not None:
            bpy.data.objects.remove(arm_obj)
        if arm_data is not None:
            bpy.data.armatures.remove(arm_data)
        if action is not None:
            bpy.data.actions.remove(action)
        raise


def import_hull(job_dir: str | Path, name: str) -> bpy.types.Object:
    """The mesh the backend made for a clip-only job (mesh.npz, world coordinates) as a new object
    in the active collection, vertex order kept (the rig's weights index it)."""
    try:
        z = layout.read_npz(Path(job_dir) / layout.MESH_NPZ)
        arrays.check(z, {k: arrays.MESH[k] for k in ("vertices", "faces")}, layout.MESH_NPZ)
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"the job has no readable mesh.npz ({exc})") from exc
    verts = z["vertices"]
    matrix = np.asarray(z["matrix_world"], np.float64) if "matrix_world" in z else np.eye(4)
    me = mesh_data.new_mesh(name, verts, z["faces"])
    if len(me.vertices) != len(verts):
        bpy.data.meshes.remove(me)
        raise ValueError("the hull mesh lost vertices on import")
    obj = bpy.data.objects.new(name, me)
    obj.matrix_world = [list(r) for r in matrix]
    bpy.context.collection.objects.link(obj)
    return obj


def pose_bones(arm_obj: bpy.types.Object, rotations: dict[str, tuple[float, float, float]]) -> None:
    """Rotate pose bones (Euler XYZ, radians): used for previews and tests."""
    for bname, rot in rotations.items():
        pb = arm_obj.pose.bones[bname]
        pb.rotation_mode = "XYZ"
        pb.rotation_euler = rot


def apply_motion(arm_obj: bpy.types.Object, skel: dict, frame_start: int | None = None) -> int:
    """Keyframe the pose bones from skeleton.json's per-frame transforms; returns frames keyed.

    A frame's transform W (object space, rest -> posed) of a bone becomes its local pose
    matrix_basis = rest⁻¹ · W_parent⁻¹ · W · rest. keyframe_insert writes legacy actions on
    Blender 4.2 and layered actions (slots, channel bags) on 4.4+ and 5.0.
    """
    from mathutils import Matrix

    frames = skel.get("frames") or []
    if not frames:
        return 0
    scene = bpy.context.scene
    start = scene.frame_start if frame_start is None else frame_start
    parent_of = {b["name"]: b["parent"] for b in skel["bones"]}
    for fr in frames:
        mats = {n: Matrix(m) for n, m in fr["bones"].items()}
        for pb in arm_obj.pose.bones:
            if pb.name not in mats:
                continue
            rest = pb.bone.matrix_local
            w_par = mats.get(parent_of.get(pb.name), Matrix.Identity(4))
            basis = rest.inverted() @ w_par.inverted() @ mats[pb.name] @ rest
            loc, rot, _ = basis.decompose()
            pb.rotation_mode = "QUATERNION"
            pb.location, pb.rotation_quaternion = loc, rot
            f = start + int(fr["frame"])
            pb.keyframe_insert("location", frame=f, group=pb.name)
            pb.keyframe_insert("rotation_quaternion", frame=f, group=pb.name)
    scene.frame_end = max(scene.frame_end, start + len(frames) - 1)
    return len(frames)
