"""Write a Blender mesh object into a job folder (job.json + mesh.npz; names in sp4d_job.layout)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import bpy
import numpy as np

from . import mesh_data
from .jobfolder import arrays, layout
from .jobfolder import settings as jobsettings

GT_PART_ATTR = "sp4d_gt_part"  # optional int point attribute: ground-truth part per vertex
GT_RIG_PROP = "sp4d_gt_rig"  # optional JSON custom property: {"parents": [...], "joints": [[x,y,z]...]}


def mesh_arrays(obj: bpy.types.Object) -> dict[str, np.ndarray]:
    """mesh.npz's arrays (sp4d_job.arrays.MESH): object-space vertices (N,3), triangles (M,3),
    matrix_world and, when the object carries them, the ground-truth parts and joints."""
    me = obj.data
    extra = {}
    labels, gt = mesh_data.point_ints(me, GT_PART_ATTR), obj.get(GT_RIG_PROP)
    if labels is not None and gt:
        rig = json.loads(gt)
        extra = {"gt_labels": labels, "gt_parents": np.asarray(rig["parents"], np.int32),
                 "gt_joints": np.asarray(rig["joints"], np.float32)}
    return arrays.mesh_arrays(mesh_data.vertices(me), mesh_data.triangles(me), np.array(obj.matrix_world), **extra)


def _versions() -> dict:
    return {"blender": bpy.app.version_string}


def write_job(obj: bpy.types.Object, job_dir: str | os.PathLike, settings: dict, object_id: str | None = None) -> Path:
    """Create or refresh the job folder for ``obj``; finished stages stay reusable when the
    mesh and settings are unchanged (the backend compares digests). The settings are checked
    against the schema first (sp4d_job.settings.SettingError names the setting and its allowed
    values); ``object_id`` (identity.object_id) is recorded as the folder's owner."""
    if obj is None or obj.type != "MESH":
        raise ValueError("select a mesh object to rig")
    if len(obj.data.vertices) == 0 or len(obj.data.polygons) == 0:
        raise ValueError(f"'{obj.name}' has no faces to rig")
    job = Path(job_dir).resolve()
    settings = dict(settings)
    clip = settings.pop("clip", None)
    checked = jobsettings.validate(settings)
    mesh = mesh_arrays(obj)
    source = {"kind": "mesh", "object": obj.name, "blend": bpy.data.filepath or None}
    if object_id:
        source["id"] = object_id
    wants_sp4d = settings.get("part_source") == "sp4d" or (
        settings.get("part_source", "auto") == "auto" and "gt_labels" not in mesh)
    if clip:  # the artist's own clip of the object
        source["clip"] = str(Path(clip).resolve())
    elif wants_sp4d:  # SP4D conditions on a clip of the object: render it
        render_input_frames(obj, job / layout.CAPTURE_DIR, checked["frames"])
        source["clip"] = layout.CAPTURE_DIR
    layout.write_npz_atomic(job / layout.MESH_NPZ, **mesh)
    layout.write_json_atomic(job / layout.JOB_JSON, layout.job_spec(source, settings, _versions()))
    return job


def write_clip_job(clip: str | os.PathLike, job_dir: str | os.PathLike, settings: dict) -> Path:
    """Create or refresh the job folder for a clip without a mesh: the backend generates the
    views, rigs the visual hull of their silhouettes and writes it as mesh.npz."""
    path = Path(bpy.path.abspath(str(clip))).resolve()
    if not path.exists():
        raise ValueError(f"the clip {path} does not exist")
    job = Path(job_dir).resolve()
    settings = {k: v for k, v in settings.items() if k != "clip"}
    jobsettings.validate(settings)
    layout.write_json_atomic(job / layout.JOB_JSON, layout.job_spec({"kind": "clip", "path": str(path)}, settings,
                                                                      _versions()))
    return job


IMAGE_FILE = "picture.png"  # a Blender image saved into its job folder


def save_image(image: bpy.types.Image, path: Path) -> Path:
    """A Blender image (loaded, packed, generated or rendered) as a PNG at ``path``, written from a
    copy so that the artist's image keeps its own file path and format."""
    copy = image.copy()
    try:
        copy.filepath_raw = str(path)
        copy.file_format = "PNG"
        copy.save()
    finally:
        bpy.data.images.remove(copy)
    if not path.is_file():
        raise ValueError(f"the image '{image.name}' could not be saved (has it any pixels?)")
    return path


def write_image_job(image, job_dir: str | os.PathLike, settings: dict) -> Path:
    """Create or refresh the job folder for one picture (a file path or a Blender image): the
    backend animates it with SVD, generates the views of the chosen frames, and rigs the visual
    hull of their silhouettes (source kind 'image', backend/generate_svd.py)."""
    job = Path(job_dir).resolve()
    if isinstance(image, bpy.types.Image):
        job.mkdir(parents=True, exist_ok=True)
        path = save_image(image, job / IMAGE_FILE)
    else:
        path = Path(bpy.path.abspath(str(image))).resolve()
        if not path.is_file():
            raise ValueError(f"the image {path} does not exist")
    settings = {k: v for k, v in settings.items() if k != "clip"}
    jobsettings.validate(settings)
    layout.write_json_atomic(job / layout.JOB_JSON, layout.job_spec({"kind": "image", "path": str(path)}, settings,
                                                                      _versions()))
    return job


def is_animated(obj: bpy.types.Object) -> bool:
    """True when the object, a parent, or its shape keys carry animation."""
    o = obj
    while o is not None:
        if o.animation_data and (o.animation_data.action or o.animation_data.drivers):
            return True
        o = o.parent
    keys = obj.data.shape_keys if obj.type == "MESH" else None
    return bool(keys and keys.animation_data and keys.animation_data.action)


def render_input_frames(obj: bpy.types.Object, out_dir: str | os.PathLike, n_frames: int = 4,
                        size: int = 576) -> list[Path]:
    """Render ``obj`` alone from its front (-Y) on a transparent background into
    out_dir/frame_TTT.png: its timeline animation sampled evenly, or one still frame repeated.
    The backend crops, centres and whitens these frames (alpha is the mask)."""
    import math
    import shutil

    from mathutils import Vector

    scene = bpy.context.scene
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
    centre = sum(corners, Vector()) / 8
    radius = max((c - centre).length for c in corners) or 1.0
    cam_data = bpy.data.cameras.new("sp4d_capture")
    cam_data.angle = math.radians(33.8)
    cam = bpy.data.objects.new("sp4d_capture", cam_data)
    scene.collection.objects.link(cam)
    cam.location = centre + Vector((0, -radius / math.sin(cam_data.angle / 2) / 0.95, 0))
    cam.rotation_euler = (math.pi / 2, 0, 0)
    r, shading = scene.render, scene.display.shading
    saved = (scene.camera, r.engine, r.resolution_x, r.resolution_y, r.resolution_percentage, r.film_transparent,
             r.filepath, r.image_settings.color_mode, shading.light, shading.color_type, scene.frame_current)
    hidden = {o.name: o.hide_render for o in scene.objects}
    frames = ([round(scene.frame_start + k * (scene.frame_end - scene.frame_start) / max(n_frames - 1, 1))
               for k in range(n_frames)] if is_animated(obj) else [scene.frame_current])
    paths = []
    try:
        for o in scene.objects:
            o.hide_render = o is not obj and o is not cam
        scene.camera = cam
        r.engine = "BLENDER_WORKBENCH"
        r.resolution_x = r.resolution_y = size
        r.resolution_percentage = 100
        r.film_transparent = True
        r.image_settings.file_format = "PNG"
        r.image_settings.color_mode = "RGBA"
        shading.light, shading.color_type = "STUDIO", "MATERIAL"
        for k, f in enumerate(frames):
            scene.frame_set(f)
            r.filepath = str(out / layout.capture_frame(k))
            bpy.ops.render.render(write_still=True)
            paths.append(Path(r.filepath))
        while len(paths) < n_frames:  # a still object: four equal frames
            p = out / layout.capture_frame(len(paths))
            shutil.copyfile(paths[0], p)
            paths.append(p)
    finally:
        (scene.camera, r.engine, r.resolution_x, r.resolution_y, r.resolution_percentage, r.film_transparent,
         r.filepath, r.image_settings.color_mode, shading.light, shading.color_type, f0) = saved
        scene.frame_set(f0)
        for o in scene.objects:
            if o.name in hidden:
                o.hide_render = hidden[o.name]
        bpy.data.objects.remove(cam)
        bpy.data.cameras.remove(cam_data)
    return paths
