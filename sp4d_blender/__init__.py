"""sp4d-blender: Generate Rig with Stable Part Diffusion 4D, inside Blender.

The Blender layer is thin: it exports the mesh into a job folder, runs the backend as a
subprocess (never importing torch) and builds the result. Imports bpy and numpy only.
"""

from __future__ import annotations

import bpy

from . import operators, prefs, session

_CLASSES = prefs.CLASSES + operators.CLASSES


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    prefs.register_props()


def unregister() -> None:
    session.shutdown()
    prefs.unregister_props()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
