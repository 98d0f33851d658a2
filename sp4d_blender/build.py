"""Build the rig in the scene from a finished job folder: armature, vertex groups, modifier.

Everything is created by plain functions usable headless. On any failure everything created so
far is removed again, so the scene is never left half-built; the user's own vertex groups,
modifiers and armatures are never changed (name clashes get a numbered name, and the bone and its
keyframes follow the group's name). Re-running replaces the SP4D rig the object already has (its
armature, action, modifier — at the same place in the stack — and the groups it made) in the same
step: the old rig is set aside while the new one is built and removed only when that succeeded.
A job folder whose results are missing or unreadable is a ValueError that says so, never a crash.
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


RIG_PROP = "sp4d_job"  # on an armature SP4D built: its job folder
RIG_REL_PROP = "sp4d_job_rel"  # and that folder relative to the .blend when it lies beside it (relative_job_path)
OWNER_PROP = "sp4d_owner"  # on that armature: the id of the mesh object it rigs (identity.object_id)
USER_GROUPS_PROP = "sp4d_user_groups"  # on that armature: the mesh's groups before it was built (JSON)


def read_weights(job_dir: str | Path, name: str = layout.WEIGHTS_NPZ) -> tuple[np.ndarray, list[str]]:
    """rig/weights.npz (or ``name``): the weights (N, B) and the deform bone of each column;
    ValueError when the file is missing, unreadable or does not follow sp4d_job.arrays.WEIGHTS."""
    path = Path(job_dir) / name
    try:
        z = layout.read_npz(path)
    except FileNotFoundError:
        raise ValueError(f"the job folder {job_dir} has no {name} (deleted?): run Generate Rig again") from None
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path} is unreadable ({exc}): run Generate Rig again") from None
    arrays.check(z, arrays.WEIGHTS, name)
    return z["weights"], [str(n) for n in z["bone_names"]]


def read_skeleton(job_dir: str | Path) -> dict:
    """rig/skeleton.json, checked for what building needs; ValueError when missing or broken."""
    path = Path(job_dir) / layout.SKELETON_JSON
    try:
        skel = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"the job folder {job_dir} has no {layout.SKELETON_JSON} (deleted?): "
                         "run Generate Rig again") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path} is unreadable ({str(exc)[:200]}): run Generate Rig again") from None
    bones = skel.get("bones") if isinstance(skel, dict) else None
    if not isinstance(bones, list) or not all(isinstance(b, dict) and isinstance(b.get("name"), str)
                                              and len(b.get("head", ())) == 3 and len(b.get("tail", ())) == 3
                                              for b in bones):
        raise ValueError(f"{path} has no valid bones (name, head, tail): run Generate Rig again")
    return skel


def read_rig(job_dir: str | Path) -> tuple[dict, np.ndarray, list[str]]:
    """rig/skeleton.json, and rig/weights.npz as read_weights gives it."""
    skel = read_skeleton(job_dir)
    w, names = read_weights(job_dir)
    missing = sorted(set(names) - {b["name"] for b in skel["bones"]})
    if missing:
        raise ValueError(f"the weights name bones the skeleton lacks ({', '.join(missing[:5])}): "
                         "run Generate Rig again")
    return skel, w, names


def previous_rig(obj: bpy.types.Object) -> bpy.types.Object | None:
    """The SP4D armature ``obj`` is already rigged with (its Armature modifier's, built by SP4D)."""
    for mod in obj.modifiers:
        if mod.type == "ARMATURE" and mod.object is not None and mod.object.get(RIG_PROP) is not None:
            return mod.object
    return None


class _SetAside:
    """The previous SP4D rig of an object, set aside while a new one is built: its groups renamed
    out of the way, the mesh unparented from it (world transform kept); ``restore`` undoes that,
    ``remove`` deletes the old rig for good."""

    def __init__(self, obj: bpy.types.Object):
        self.obj = obj
        self.arm = previous_rig(obj)
        self.renamed: dict[str, str] = {}
        self.parent = None
        if self.arm is None:
            return
        user = set(json.loads(self.arm.get(USER_GROUPS_PROP) or "[]"))
        for b in self.arm.data.bones:
            g = obj.vertex_groups.get(b.name)
            if b.use_deform and g is not None and b.name not in user:
                self.renamed[b.name] = g.name = f"~sp4d-old~{b.name}"[:63]
        self.mods = [m.name for m in obj.modifiers if m.type == "ARMATURE" and m.object == self.arm]
        self.index = [m.name for m in obj.modifiers].index(self.mods[0])
        if obj.parent == self.arm:
            world = obj.matrix_world.copy()
            self.parent = (obj.parent, obj.parent_type, obj.parent_bone, obj.matrix_parent_inverse.copy())
            obj.parent = None
            obj.matrix_world = world

    def restore(self) -> None:
        for name, tmp in self.renamed.items():
            g = self.obj.vertex_groups.get(tmp)
            if g is not None:
                g.name = name
        if self.parent is not None:
            world = self.obj.matrix_world.copy()
            self.obj.parent, self.obj.parent_type, self.obj.parent_bone, inv = self.parent
            self.obj.matrix_parent_inverse = inv
            self.obj.matrix_world = world

    def remove(self, new_mod: bpy.types.Modifier | None) -> None:
        if self.arm is None:
            return
        for tmp in self.renamed.values():
            g = self.obj.vertex_groups.get(tmp)
            if g is not None:
                self.obj.vertex_groups.remove(g)
        for name in self.mods:
            self.obj.modifiers.remove(self.obj.modifiers[name])
        if new_mod is not None:  # where the old one was in the stack, under its name
            _move_modifier(self.obj, new_mod, min(self.index, len(self.obj.modifiers) - 1))
            new_mod.name = self.mods[0]
        name, data_name = self.arm.name, self.arm.data.name
        _delete_armature(self.arm)
        if new_mod is not None and new_mod.object is not None:  # the new rig takes the old one's names
            new_mod.object.name, new_mod.object.data.name = name, data_name


def _move_modifier(obj: bpy.types.Object, mod: bpy.types.Modifier, index: int) -> None:
    names = [m.name for m in obj.modifiers]
    if names.index(mod.name) != index:
        obj.modifiers.move(names.index(mod.name), index)


def _delete_armature(arm: bpy.types.Object) -> None:
    """Remove an armature object with its data and action (when nothing else uses them)."""
    data = arm.data
    action = arm.animation_data.action if arm.animation_data else None
    for child in list(arm.children):  # children keep their place in the world
        world = child.matrix_world.copy()
        child.parent = None
        child.matrix_world = world
    bpy.data.objects.remove(arm)
    if data is not None and data.users == 0:
        bpy.data.armatures.remove(data)
    if action is not None and action.users == 0:
        bpy.data.actions.remove(action)


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
    if obj is None or obj.type != "MESH":
        raise ValueError("the object to rig is gone (deleted or no longer a mesh)")
    skel, w, names = read_rig(job_dir)
    n = len(obj.data.vertices)
    if w.shape != (n, len(names)):
        raise ValueError(f"the rig's weights are for {w.shape[0]} vertices and {len(names)} bones but "
                         f"'{obj.name}' has {n} vertices: the mesh changed since the job ran")
    check_owner(obj, job_dir)
    if bpy.context.object is not None and bpy.context.object.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    created_groups, arm_obj, arm_data, mod = [], None, None, None
    aside = _SetAside(obj)
    old_parent, old_parent_inv = obj.parent, obj.matrix_parent_inverse.copy()
    old_world = obj.matrix_world.copy()
    try:
        user_groups = [g.name for g in obj.vertex_groups if g.name not in aside.renamed.values()]
        arm_data = bpy.data.armatures.new(name or f"{obj.name}_rig")
        arm_obj = bpy.data.objects.new(name or f"{obj.name}_rig", arm_data)
        for coll in obj.users_collection:
            coll.objects.link(arm_obj)
        if not arm_obj.users_collection:
            bpy.context.scene.collection.objects.link(arm_obj)
        arm_obj.matrix_world = obj.matrix_world.copy()
        arm_obj.show_in_front = True
        arm_obj[RIG_PROP] = str(Path(job_dir).resolve())
        rel = relative_job_path(job_dir)
        if rel:
            arm_obj[RIG_REL_PROP] = rel
        if obj.get("sp4d_id"):
            arm_obj[OWNER_PROP] = obj["sp4d_id"]
        arm_obj[USER_GROUPS_PROP] = json.dumps(user_groups)
        made = create_bones(arm_obj, skel["bones"])
        for j, bone in enumerate(names):
            vg = obj.vertex_groups.new(name=_unique_group_name(obj, made[bone]))
            created_groups.append(vg)
            mesh_data.set_group_weights(vg, w[:, j])
            if vg.name != made[bone]:  # group must match the bone: rename the bone to the group
                arm_obj.data.bones[made[bone]].name = vg.name
                made[bone] = vg.name
        mod = obj.modifiers.new(MODIFIER_NAME, "ARMATURE")
        mod.object = arm_obj
        if obj.parent is None:
            obj.parent = arm_obj
            obj.matrix_parent_inverse = arm_obj.matrix_world.inverted()
            obj.matrix_world = old_world
        if animate:
            apply_motion(arm_obj, skel, names=made)
        aside.remove(mod)
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
        aside.restore()
        if arm_obj is not None:
            _delete_armature(arm_obj)
        elif arm_data is not None:
            bpy.data.armatures.remove(arm_data)
        raise


def check_owner(obj: bpy.types.Object, job_dir: str | Path) -> None:
    """ValueError when job.json names another object (by id) than ``obj``: its results are not
    for this mesh."""
    try:
        source = json.loads((Path(job_dir) / layout.JOB_JSON).read_text()).get("source") or {}
    except (OSError, ValueError, AttributeError, RecursionError):
        return
    owner = source.get("id") if isinstance(source, dict) else None
    if owner and obj.get("sp4d_id") and owner != obj["sp4d_id"]:
        raise ValueError(f"the job folder {job_dir} belongs to another object ('{source.get('object')}'), "
                         f"not to '{obj.name}': run Generate Rig on '{obj.name}'")


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


def apply_motion(arm_obj: bpy.types.Object, skel: dict, frame_start: int | None = None,
                 names: dict[str, str] | None = None) -> int:
    """Keyframe the pose bones from skeleton.json's per-frame transforms; returns frames keyed.

    A frame's transform W (object space, rest -> posed) of a bone becomes its local pose
    matrix_basis = rest⁻¹ · W_parent⁻¹ · W · rest. ``names`` maps skeleton names to the bones'
    names in Blender where they differ (a bone renamed for a clashing group keeps its keyframes).
    keyframe_insert writes legacy actions on
    Blender 4.2 and layered actions (slots, channel bags) on 4.4+ and 5.0.
    """
    from mathutils import Matrix

    frames = skel.get("frames") or []
    if not frames:
        return 0
    scene = bpy.context.scene
    start = scene.frame_start if frame_start is None else frame_start
    names = names or {}  # skeleton name -> the bone's name in Blender (renamed for a clashing group)
    parent_of = {names.get(b["name"], b["name"]): names.get(b["parent"], b["parent"]) for b in skel["bones"]}
    for fr in frames:
        mats = {names.get(n, n): Matrix(m) for n, m in fr["bones"].items()}
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


def relative_job_path(job_dir: str | Path) -> str | None:
    """The job folder relative to the saved .blend ("//sp4d_jobs/…") when it lies beside it, else
    None: kept on the armature beside the absolute path, so that a project folder moved as a whole
    still finds its job folders (and a file saved elsewhere still has the absolute one)."""
    job = Path(job_dir).resolve()
    if bpy.data.filepath:
        blend_dir = Path(bpy.path.abspath("//")).resolve()
        if blend_dir in job.parents:
            return "//" + job.relative_to(blend_dir).as_posix()
    return None


def job_path(arm: bpy.types.Object) -> Path | None:
    """The job folder of an armature SP4D built: the absolute path it recorded when that folder is
    there, else its path relative to the .blend when that one is (the folder moved with the file);
    None without a record."""
    job = arm.get(RIG_PROP)
    rel = arm.get(RIG_REL_PROP)
    if job and Path(job).is_dir():
        return Path(job)
    if rel and Path(bpy.path.abspath(rel)).is_dir():
        return Path(bpy.path.abspath(rel))
    return Path(job) if job else None
