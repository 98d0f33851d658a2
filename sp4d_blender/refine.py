"""Refining a generated rig: parts list, merging two parts, limiting influences, recomputing
weights after the animator edited the bones (through the backend's ``reweight``)."""

from __future__ import annotations

import json
from pathlib import Path

import bpy
import numpy as np

from .build import (
    MODIFIER_NAME,
    OWNER_PROP,
    USER_GROUPS_PROP,
    check_owner,
    edit_mode,
    job_path,
    previous_rig,
    read_weights,
)
from .client import BackendProcess, RigJob
from .jobfolder import layout
from .mesh_data import group_weights, set_group_weights

SUMMARY_PROP = "sp4d_parts"  # the armature's parts summary (JSON), what the panel lists


def rig_of(obj: bpy.types.Object) -> bpy.types.Object | None:
    """The SP4D armature deforming ``obj`` (via its SP4D Armature modifier, renamed or not)."""
    if obj is None or obj.type != "MESH":
        return None
    mod = obj.modifiers.get(MODIFIER_NAME)
    if mod is not None and mod.type == "ARMATURE" and mod.object is not None:
        return mod.object
    return previous_rig(obj)


def deform_weights(obj: bpy.types.Object, arm: bpy.types.Object) -> tuple[np.ndarray, list[str]]:
    """Weights (N, B) of the armature's deform bones that have a group on ``obj``."""
    names = [b.name for b in arm.data.bones if b.use_deform and obj.vertex_groups.get(b.name)]
    return group_weights(obj, names), names


def parts_summary(obj: bpy.types.Object, arm: bpy.types.Object) -> list[dict]:
    """Per deform bone: name, vertices it dominates, colour of its part (from the job); kept on the
    armature (SUMMARY_PROP) for the panel, which may not read the weights while it draws."""
    w, names = deform_weights(obj, arm)
    counts = np.bincount(w.argmax(1), minlength=len(names)) if len(names) else []
    colours = {}
    job = job_path(arm)
    skel = job / layout.SKELETON_JSON if job else None
    try:
        parts = json.loads(skel.read_text()).get("parts", []) if skel is not None else []
        colours = {p["bone"]: p.get("colour") for p in parts if isinstance(p, dict) and "bone" in p}
    except (OSError, ValueError, AttributeError, TypeError, RecursionError):
        colours = {}  # the colours are a nicety: a missing or broken file leaves them out
    summary = [{"bone": n, "vertices": int(c), "colour": colours.get(n)} for n, c in zip(names, counts, strict=True)]
    arm[SUMMARY_PROP] = json.dumps(summary)
    return summary


def stored_summary(arm: bpy.types.Object) -> list[dict]:
    """The parts summary the last rig change left on the armature (empty when none)."""
    return json.loads(arm.get(SUMMARY_PROP) or "[]")


def merge_parts(obj: bpy.types.Object, arm: bpy.types.Object, keep: str, remove: str) -> None:
    """Fold part ``remove`` into ``keep``: weights added, its bone deleted, children re-parented."""
    if keep == remove:
        raise ValueError("pick two different parts to merge")
    for n in (keep, remove):
        if n not in arm.data.bones or obj.vertex_groups.get(n) is None:
            raise ValueError(f"'{n}' is not a part of this rig")
    w, names = deform_weights(obj, arm)
    merged = w[:, names.index(keep)] + w[:, names.index(remove)]
    g_keep = obj.vertex_groups[keep]
    g_keep.remove(list(range(len(obj.data.vertices))))
    set_group_weights(g_keep, merged)
    obj.vertex_groups.remove(obj.vertex_groups[remove])
    with edit_mode(arm) as eb:
        for child in [b for b in eb if b.parent is not None and b.parent.name == remove]:
            child.parent = eb[keep]
        eb.remove(eb[remove])
    parts_summary(obj, arm)


def limit_influences(obj: bpy.types.Object, arm: bpy.types.Object, limit: int = 4) -> None:
    """Keep the ``limit`` largest deform weights per vertex and renormalise."""
    w, names = deform_weights(obj, arm)
    if limit <= 0 or limit >= len(names):
        return
    idx = np.argpartition(-w, limit - 1, axis=1)[:, :limit]
    keep = np.zeros_like(w)
    rows = np.arange(len(w))[:, None]
    keep[rows, idx] = w[rows, idx]
    keep /= np.maximum(keep.sum(1, keepdims=True), 1e-12)
    everyone = list(range(len(obj.data.vertices)))
    for j, n in enumerate(names):
        g = obj.vertex_groups[n]
        g.remove(everyone)
        set_group_weights(g, keep[:, j])
    parts_summary(obj, arm)


def edited_skeleton(obj: bpy.types.Object, arm: bpy.types.Object) -> dict:
    """The armature's bones in the mesh's object space, in rig/skeleton.json's format."""
    to_obj = obj.matrix_world.inverted() @ arm.matrix_world
    bones = []
    for b in arm.data.bones:
        bones.append({"name": b.name, "parent": b.parent.name if b.parent else None,
                      "head": list(to_obj @ b.head_local), "tail": list(to_obj @ b.tail_local),
                      "roll": 0.0, "deform": b.use_deform})
    return {"bones": bones, "space": "object"}


def recompute_weights(obj: bpy.types.Object, arm: bpy.types.Object, backend: BackendProcess | None = None,
                      timeout: float | None = None) -> int:
    """Send the edited bones and this object's own mesh (as it is now) to the backend, replace the
    rig's vertex groups; returns the bone count. The mesh keeps the user's groups; on failure
    nothing changes. ValueError when the rig's job folder is gone or belongs to another object,
    RuntimeError ``[code] message`` when the backend fails (``[busy]``: a job runs on the folder)."""
    from . import session
    from .capture import mesh_arrays
    from .identity import object_id
    from .jobfolder import lock

    job = job_path(arm)
    if not job or not Path(job, layout.JOB_JSON).exists():
        raise ValueError("this armature has no SP4D job folder to recompute from (deleted?): run Generate Rig again")
    owner = arm.get(OWNER_PROP)
    if owner and obj.get("sp4d_id") and owner != obj["sp4d_id"]:
        raise ValueError(f"'{arm.name}' was built for another object, not '{obj.name}': run Generate Rig on it")
    if obj.get("sp4d_id"):
        object_id(obj, Path(job).parent)  # a duplicate of the rigged object gets an id of its own here
    check_owner(obj, job)
    user = set(json.loads(arm.get(USER_GROUPS_PROP) or "[]"))
    skeleton = edited_skeleton(obj, arm)
    clash = [b["name"] for b in skeleton["bones"] if b["deform"] and b["name"] in user]
    if clash:
        raise ValueError(f"vertex groups of yours are named like bones ({', '.join(clash[:5])}): rename them first")
    try:
        with lock.JobLock(job, "Blender writing the edited bones"):
            layout.write_npz_atomic(Path(job) / layout.MESH_NPZ, **mesh_arrays(obj))  # never another object's
            layout.write_json_atomic(Path(job) / layout.SKELETON_EDITED_JSON, skeleton)
    except lock.Busy as exc:
        raise RuntimeError(f"[busy] {exc}") from None
    except OSError as exc:
        raise RuntimeError(f"[io_error] cannot write the job folder {job}: {exc.strerror or exc}") from None
    rj = RigJob(backend or session.get_backend(), job, cmd="reweight")
    rj.start()
    rj.wait(timeout)
    if rj.state != "done":
        raise RuntimeError(f"[{rj.error['code']}] {rj.error['message']}")
    w, names = read_weights(job, layout.WEIGHTS_EDITED_NPZ)
    if w.shape[0] != len(obj.data.vertices):
        raise ValueError("the mesh changed while the weights were computed: recompute them again")
    old = [b.name for b in arm.data.bones if b.use_deform]
    for n in old:
        g = obj.vertex_groups.get(n)
        if g is not None and n not in user:
            obj.vertex_groups.remove(g)
    for j, n in enumerate(names):
        g = obj.vertex_groups.get(n) or obj.vertex_groups.new(name=n)
        g.remove(list(range(len(obj.data.vertices))))
        set_group_weights(g, w[:, j])
    parts_summary(obj, arm)
    return len(names)
