"""The bundled procedural sample: ask the backend to generate the creature, import it."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import bpy
import numpy as np

from . import mesh_data
from .capture import GT_PART_ATTR, GT_RIG_PROP
from .client import BACKEND_ROOT, NO_BACKEND


def generate_sample_npz(out: str | os.PathLike, python: str | None = None) -> Path:
    """Run ``python -m backend sample OUT`` (no shell) and return the npz path."""
    out = Path(out).resolve()
    if python is None:
        from .session import backend_python

        python = backend_python()
    if not python:
        raise RuntimeError(f"[no_backend] {NO_BACKEND}")
    env = dict(os.environ, PYTHONPATH=str(BACKEND_ROOT))
    res = subprocess.run([python, "-m", "backend", "sample", str(out)],
                         cwd=str(BACKEND_ROOT), env=env, capture_output=True, text=True, timeout=300)
    if res.returncode != 0 or not out.exists():
        raise RuntimeError(f"the backend could not make the sample: {res.stderr.strip()[-800:]}")
    return out


def import_sample(npz_path: str | os.PathLike | None = None, name: str = "SP4D Creature",
                  python: str | None = None) -> bpy.types.Object:
    """Add the sample creature (with its ground-truth parts and joints) to the scene."""
    if npz_path is None:
        npz_path = generate_sample_npz(Path(tempfile.mkdtemp(prefix="sp4d-sample-")) / "creature.npz", python)
    with np.load(npz_path, allow_pickle=False) as z:
        v, f, lab = z["vertices"], z["faces"], z["labels"]
        rig = {"parents": z["parents"].tolist(), "joints": z["joints"].tolist(),
               "names": [str(s) for s in z["names"]]}
    me = mesh_data.new_mesh(name, v, f)
    attr = me.attributes.new(GT_PART_ATTR, "INT", "POINT")
    attr.data.foreach_set("value", lab.astype(np.int32))
    me.polygons.foreach_set("use_smooth", np.ones(len(f), bool))
    obj = bpy.data.objects.new(name, me)
    obj[GT_RIG_PROP] = json.dumps(rig)
    bpy.context.scene.collection.objects.link(obj)
    return obj
