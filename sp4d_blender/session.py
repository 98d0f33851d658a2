"""The one backend process of a Blender session (the model stays loaded between jobs), and which
interpreter and environment it runs with."""

from __future__ import annotations

import atexit
import os

from .client import BackendProcess, default_backend_python

_backend: BackendProcess | None = None


def backend_python(context=None) -> str | None:
    """The interpreter the backend runs with: the Backend Python preference, else
    SP4D_BACKEND_PYTHON, else the environment Set Up made in the add-on's user folder, else a
    development checkout's .venv; None when there is none (the UI then asks to set up — Blender's
    own Python, which has no torch, is never used instead)."""
    from .paths import managed_python
    from .prefs import get_prefs

    try:
        chosen = get_prefs(context).backend_python
    except AttributeError:  # no context (Blender shutting down)
        chosen = ""
    if chosen:
        import bpy

        return bpy.path.abspath(chosen)
    if os.environ.get("SP4D_BACKEND_PYTHON"):
        return os.environ["SP4D_BACKEND_PYTHON"]
    managed = managed_python()
    return str(managed) if managed else default_backend_python()


def _environment() -> dict:
    """What the backend inherits from Blender's settings: no network when Blender's online access
    is off (HF_HUB_OFFLINE: the hub is not asked, a missing download is the error ``offline``). (The
    licence's acceptance goes with each request: the job setting and the weights request's field.)"""
    import bpy

    return {} if getattr(bpy.app, "online_access", True) else {"HF_HUB_OFFLINE": "1"}


def _log_dir():
    from .paths import logs_dir

    try:
        return logs_dir()
    except (AttributeError, RuntimeError, OSError):  # no context (Blender shutting down), no user folder
        return None


def get_backend(python: str | None = None) -> BackendProcess:
    """The running backend, restarted when it died, the interpreter or the environment (online
    access) changed. ``python`` None: backend_python()."""
    global _backend
    python = python or backend_python()
    env = _environment()
    if _backend is not None and (python != _backend.python or env != _backend.env):
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
