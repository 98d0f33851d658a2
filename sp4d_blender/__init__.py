"""sp4d-blender: Generate Rig with Stable Part Diffusion 4D, inside Blender.

The Blender layer is thin: it exports the mesh into a job folder, runs the backend as a
subprocess (never importing torch) and builds the result. Imports bpy and numpy only.
"""

from __future__ import annotations

import atexit

import bpy

from . import operators, prefs, session, warmup

_CLASSES = prefs.CLASSES + operators.CLASSES
_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    prefs.register_props()
    _registered = True


def unregister() -> None:
    global _registered
    warmup.stop()
    session.shutdown()
    if not _registered:
        return
    _registered = False
    prefs.unregister_props()
    for cls in reversed(_CLASSES):
        if getattr(cls, "is_registered", True):
            bpy.utils.unregister_class(cls)


@atexit.register
def _unregister_at_exit() -> None:
    """A script that registers the add-on and ends without unregistering it (the README's "use
    without the UI") must still exit: bpy 4.5 as a Python module hangs at exit while classes are
    registered. Runs before bpy's own exit handler (atexit is last in, first out)."""
    try:
        unregister()
    except Exception:  # noqa: BLE001 - Blender may have torn its types down already
        pass
