"""The one backend process of a Blender session (the model stays loaded between jobs)."""

from __future__ import annotations

import atexit

from .client import BackendProcess

_backend: BackendProcess | None = None


def get_backend(python: str | None = None) -> BackendProcess:
    """The running backend, restarted when it died or the interpreter changed."""
    global _backend
    if _backend is not None and (python and python != _backend.python):
        _backend.stop()
        _backend = None
    if _backend is None:
        _backend = BackendProcess(python)
    return _backend


def shutdown() -> None:
    global _backend
    if _backend is not None:
        _backend.stop()
        _backend = None


atexit.register(shutdown)
