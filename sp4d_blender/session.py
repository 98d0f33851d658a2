"""The one backend process of a Blender session (the model stays loaded between jobs)."""

from __future__ import annotations

import atexit

from .client import BackendProcess

_backend: BackendProcess | None = None


def _environment() -> dict:
    """What the backend inherits from Blender's settings: no network when Blender's online access
    is off (HF_HUB_OFFLINE: the hub is not asked, a missing download is the error ``offline``)."""
    import bpy

    online = getattr(bpy.app, "online_access", True)
    return {} if online else {"HF_HUB_OFFLINE": "1"}


def _log_dir():
    from .prefs import cache_dir

    try:
        return cache_dir() / "logs"
    except (AttributeError, RuntimeError):  # no context (Blender shutting down)
        return None


def get_backend(python: str | None = None) -> BackendProcess:
    """The running backend, restarted when it died, the interpreter or the online setting changed."""
    global _backend
    env = _environment()
    if _backend is not None and ((python and python != _backend.python) or env != _backend.env):
        _backend.stop()
        _backend = None
    if _backend is None:
        _backend = BackendProcess(python, env=env, log_dir=_log_dir())
    return _backend


def shutdown() -> None:
    global _backend
    if _backend is not None:
        _backend.stop()
        _backend = None


atexit.register(shutdown)
