"""The job-folder schema shared with the backend: the sp4d_job package beside this add-on.

Inside Blender the add-on is ``<extension>.sp4d_blender`` and the schema ``<extension>.sp4d_job``
(the extension zip carries both folders); in tests and scripts sp4d_blender is a top-level package
and so is sp4d_job. Standard library and numpy only: no torch, no backend import.
"""

from __future__ import annotations

import importlib

_EXTENSION = __package__.rpartition(".")[0]  # "" when sp4d_blender is a top-level package


def _schema(name: str):
    return importlib.import_module(f"{_EXTENSION}.sp4d_job.{name}" if _EXTENSION else f"sp4d_job.{name}")


layout = _schema("layout")
arrays = _schema("arrays")
settings = _schema("settings")
lock = _schema("lock")
hub = _schema("hub")
