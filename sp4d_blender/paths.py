"""Where the add-on keeps what must outlive a Blender session: the backend's environment, job
folders, logs. Never Blender's per-session temp folder (``bpy.app.tempdir``), which Blender
deletes on exit: torch and every job folder would vanish, and Recompute Weights or Import
Generated Views would fail on a reopened file.

- The user folder: the extension's own (``bpy.utils.extension_path_user``, Blender 4.2+) when
  installed as an extension; run as a legacy add-on or from the repository (tests, scripts), a
  folder ``sp4d_blender`` in Blender's user data files folder (``user_resource('DATAFILES')``,
  under the user's Blender configuration; ``BLENDER_USER_RESOURCES`` moves it).
- Job folders: the Cache Folder preference when set (``<folder>/jobs``); else ``sp4d_jobs``
  beside the saved .blend (``//sp4d_jobs``), so a file and its rigs' job folders travel
  together; else, for a file never saved, ``jobs`` in the user folder.
"""

from __future__ import annotations

from pathlib import Path

import bpy

from .setup_backend import venv_python

EXTENSION_PREFIX = "bl_ext."


def _package() -> str:
    from .prefs import ADDON_ID

    return ADDON_ID


def user_folder(name: str) -> Path:
    """The add-on's persistent folder ``name``, created (see the module's docstring)."""
    pkg = _package()
    if pkg.startswith(EXTENSION_PREFIX) and hasattr(bpy.utils, "extension_path_user"):
        return Path(bpy.utils.extension_path_user(pkg, path=name, create=True))
    base = bpy.utils.user_resource("DATAFILES", path="sp4d_blender", create=True)
    if not base:  # Blender could not make its user folder (read-only home?): a folder in the home, not cwd
        base = Path.home() / ".sp4d_blender"
    folder = Path(base) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def backend_env() -> Path:
    """The managed backend environment's folder (Set Up Backend makes it)."""
    return user_folder("backend-env")


def managed_python() -> Path | None:
    """The managed environment's interpreter when Set Up made one, else None."""
    py = venv_python(backend_env())
    return py if py.exists() else None


def jobs_root(context=None) -> Path:
    """The folder of the job folders (see the module's docstring)."""
    from .prefs import get_prefs

    p = get_prefs(context).cache_dir
    if p:
        return Path(bpy.path.abspath(p)) / "jobs"
    if bpy.data.filepath:
        return Path(bpy.path.abspath("//sp4d_jobs"))
    return user_folder("jobs")


def logs_dir() -> Path:
    """The backend's logs (the last few kept: client.KEEP_LOGS)."""
    return user_folder("logs")
