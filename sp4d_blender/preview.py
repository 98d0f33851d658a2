"""A quick Workbench picture of a rigged mesh: weights as colours, bones as dark octahedra.

Headless Blender draws no armatures in renders, so the bones are stand-in meshes made for the
render and removed afterwards; the scene is otherwise left as it was.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import bpy
import numpy as np
from mathutils import Vector

from .mesh_data import group_weights

WEIGHT_ATTR = "sp4d_weight_colour"


def _bone_mesh(arm: bpy.types.Object) -> bpy.types.Object:
    verts, faces = [], []
    for pb in arm.pose.bones:
        if not pb.bone.use_deform:
            continue
        m = arm.matrix_world @ pb.matrix
        length = pb.length
        w = 0.1 * length
        local = [Vector((0, 0, 0)), Vector((w, 0.2 * length, w)), Vector((-w, 0.2 * length, w)),
                 Vector((-w, 0.2 * length, -w)), Vector((w, 0.2 * length, -w)), Vector((0, length, 0))]
        b = len(verts)
        verts += [m @ p for p in local]
        faces += [(b, b + 1, b + 2), (b, b + 2, b + 3), (b, b + 3, b + 4), (b, b + 4, b + 1),
                  (b + 5, b + 2, b + 1), (b + 5, b + 3, b + 2), (b + 5, b + 4, b + 3), (b + 5, b + 1, b + 4)]
    me = bpy.data.meshes.new("sp4d_preview_bones")
    me.from_pydata([tuple(v) for v in verts], [], faces)
    obj = bpy.data.objects.new("sp4d_preview_bones", me)
    bpy.context.scene.collection.objects.link(obj)
    col = me.color_attributes.new(WEIGHT_ATTR, "FLOAT_COLOR", "POINT")
    col.data.foreach_set("color", np.tile([0.05, 0.05, 0.08, 1.0], len(verts)).astype(np.float32))
    return obj


def _weight_colours(obj: bpy.types.Object) -> bpy.types.Attribute:
    n, g = len(obj.data.vertices), len(obj.vertex_groups)
    palette = np.array([colorsys.hsv_to_rgb((0.618 * k) % 1, 0.55, 0.95) for k in range(max(g, 1))])
    rgb = group_weights(obj, [vg.name for vg in obj.vertex_groups]) @ palette[:g]
    col = obj.data.color_attributes.new(WEIGHT_ATTR, "FLOAT_COLOR", "POINT")
    col.data.foreach_set("color", np.c_[rgb, np.ones(n)].astype(np.float32).ravel())
    return col


def render_rig_preview(obj: bpy.types.Object, arm: bpy.types.Object, path: str | Path,
                       size: tuple[int, int] = (960, 640)) -> Path:
    """Render ``obj`` posed by ``arm`` to ``path`` (PNG) with Workbench; returns the path."""
    scene = bpy.context.scene
    path = Path(path).resolve()
    bpy.context.view_layer.update()  # evaluate the pose before reading bone matrices
    bones = _bone_mesh(arm)
    col = _weight_colours(obj)
    cam_data = bpy.data.cameras.new("sp4d_preview_cam")
    cam = bpy.data.objects.new("sp4d_preview_cam", cam_data)
    scene.collection.objects.link(cam)
    saved = (scene.camera, scene.render.engine, scene.render.resolution_x, scene.render.resolution_y,
             scene.render.filepath, scene.render.film_transparent)
    try:
        corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
        centre = sum(corners, Vector()) / 8
        radius = max((c - centre).length for c in corners)
        direction = Vector((0.55, -1.0, 0.35)).normalized()
        cam.location = centre + direction * radius * 3.2
        cam.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()
        cam_data.lens = 40
        scene.camera = cam
        scene.render.engine = "BLENDER_WORKBENCH"
        shading = scene.display.shading
        shading.light = "STUDIO"
        shading.color_type = "VERTEX"
        shading.show_xray = True
        shading.xray_alpha = 0.75
        obj.data.color_attributes.active_color = col
        scene.render.resolution_x, scene.render.resolution_y = size
        scene.render.resolution_percentage = 100
        scene.render.film_transparent = False
        scene.render.image_settings.file_format = "PNG"
        scene.render.filepath = str(path)
        bpy.ops.render.render(write_still=True)
    finally:
        (scene.camera, scene.render.engine, scene.render.resolution_x, scene.render.resolution_y,
         scene.render.filepath, scene.render.film_transparent) = saved
        obj.data.color_attributes.remove(col)
        bone_mesh = bones.data
        bpy.data.objects.remove(bones)
        bpy.data.meshes.remove(bone_mesh)
        bpy.data.objects.remove(cam)
        bpy.data.cameras.remove(cam_data)
    return path
