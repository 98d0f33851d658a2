"""Which job folder belongs to which Blender object: a stable id kept on the object.

The id is a custom property (``sp4d_id``) made the first time an object is rigged: a readable
part (the object's name then, any script: "Кот", "Cat 1") and 12 random hex digits. Job folders are
named by it, so objects whose names differ only in characters a file name cannot hold, objects of
same-named .blend files and renamed objects never share a folder, and re-runs after a rename still
find their finished stages. A duplicated object carries its original's id: the copy whose name
is not the one the folder's job.json records gets a new id the next time it is rigged. Library
objects, which cannot be written, get an id derived from their library and name.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from pathlib import Path

import bpy

ID_PROP = "sp4d_id"


def readable(name: str, limit: int = 40) -> str:
    """A file-name-safe version of ``name`` that keeps letters of every script."""
    safe = re.sub(r"[^\w.-]+", "_", name).strip("._")
    return safe[:limit] or "object"


def _new_id(obj: bpy.types.Object) -> str:
    return f"{readable(obj.name)}-{uuid.uuid4().hex[:12]}"


def _recorded_object(job_dir: Path) -> str | None:
    """The object name the folder's job.json records (None when there is none)."""
    try:
        spec = json.loads((job_dir / "job.json").read_text())
        return spec.get("source", {}).get("object")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None


def object_id(obj: bpy.types.Object, jobs_root: Path | None = None) -> str:
    """The object's stable id, made (and stored on it) when it has none or shares its original's."""
    if obj.library is not None:  # linked: read-only here
        key = f"{obj.library.filepath}|{obj.name}".encode()
        return f"{readable(obj.name)}-{hashlib.sha1(key).hexdigest()[:12]}"
    oid = obj.get(ID_PROP)
    if isinstance(oid, str) and oid:
        twins = [o for o in bpy.data.objects if o != obj and o.get(ID_PROP) == oid]
        owner = _recorded_object(jobs_root / oid) if jobs_root is not None and twins else None
        if not twins or owner == obj.name:
            return oid
    oid = _new_id(obj)
    obj[ID_PROP] = oid
    return oid


def find_object(oid: str | None) -> bpy.types.Object | None:
    """The object with id ``oid`` (renamed or not), None when it was deleted (or ``oid`` is None)."""
    if not oid:
        return None
    for o in bpy.data.objects:
        if o.get(ID_PROP) == oid:
            return o
    return None
