"""Import the generated views for inspection: an orbit of cameras around the object, each with
its generated view (RGB, and the part image at half opacity) as background images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import bpy
from mathutils import Matrix

from .jobfolder import layout

COLLECTION = "SP4D Views"


def import_views(job_dir: str | Path, frame: int = 0) -> bpy.types.Collection:
    """Cameras 'SP4D View VV' in the collection 'SP4D Views' (replaced if it exists)."""
    job = Path(job_dir)
    cams = json.loads((job / layout.CAMERAS_JSON).read_text())
    old = bpy.data.collections.get(COLLECTION)
    if old is not None:
        for o in list(old.objects):
            data = o.data
            bpy.data.objects.remove(o)
            if data is not None and data.users == 0:
                bpy.data.cameras.remove(data)
        bpy.data.collections.remove(old)
    coll = bpy.data.collections.new(COLLECTION)
    bpy.context.scene.collection.children.link(coll)
    for view in cams["views"]:
        v = view["view"]
        data = bpy.data.cameras.new(f"SP4D View {v:02d}")
        data.angle = math.radians(view["fov_deg"])
        data.show_background_images = True
        for kind, alpha in (("rgb", 1.0), ("parts", 0.5)):
            path = job / layout.view_image(kind, v, frame)
            if path.exists():
                bg = data.background_images.new()
                bg.image = bpy.data.images.load(str(path), check_existing=True)
                bg.alpha = alpha
        obj = bpy.data.objects.new(data.name, data)
        obj.matrix_world = Matrix(view["matrix_world"])
        coll.objects.link(obj)
    return coll
