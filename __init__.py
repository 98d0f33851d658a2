"""Blender extension entry point. The extension root is the repository root, so the extension
bundles the backend package next to the add-on; the add-on itself lives in sp4d_blender/.
Outside Blender (the backend, pytest collecting this folder, possibly as a plain module when
the checkout's folder name is not an identifier) there is nothing to register."""

import importlib.util

if __package__ and importlib.util.find_spec("bpy") is not None:
    from .sp4d_blender import register, unregister  # noqa: F401
