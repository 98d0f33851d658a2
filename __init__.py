"""Blender extension entry point. The extension root is the repository root, so the extension
bundles the backend package next to the add-on; the add-on itself lives in sp4d_blender/.
Outside Blender (the backend, pytest collecting this folder) there is nothing to register."""

import importlib.util

if importlib.util.find_spec("bpy") is not None:
    from .sp4d_blender import register, unregister  # noqa: F401
