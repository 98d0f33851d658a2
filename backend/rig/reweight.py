"""Recompute skinning weights for an edited skeleton (bones moved, added, removed or renamed).

Each vertex goes to the deform bone whose segment is nearest, labels are cleaned on the mesh
graph (connected, smooth), then harmonic weights are solved as for a generated rig. The result
goes to rig/weights_edited.npz (its bone names are the edited skeleton's deform bones), beside the
rig stage's own rig/weights.npz and rig/skeleton.json, which stay as the stage wrote them (so its
record stays valid and a re-run of Generate Rig rebuilds the generated rig, not the edit).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sp4d_job.layout import SKELETON_EDITED_JSON, WEIGHTS_EDITED_NPZ

from ..errors import BackendError
from ..jobdir import JobDir, write_json_atomic, write_npz_atomic
from .lift import clean_labels
from .mesh import adjacency
from .weights import harmonic_weights


def nearest_bone(points: np.ndarray, heads: np.ndarray, tails: np.ndarray) -> np.ndarray:
    """Index of the nearest segment head→tail for every point."""
    ab = tails - heads
    t = np.einsum("nbk,bk->nb", points[:, None] - heads[None], ab) / np.maximum((ab * ab).sum(1), 1e-12)
    closest = heads[None] + np.clip(t, 0, 1)[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - closest, axis=2).argmin(1)


def reweight(job: JobDir, skeleton: dict, max_influences: int = 4) -> dict:
    """Weights for ``skeleton`` (same format as rig/skeleton.json, object space) on the job's mesh."""
    mesh = job.read_mesh()
    if mesh is None:
        raise BackendError("bad_input", "the job has no mesh.npz to weight")
    bones = [b for b in skeleton.get("bones", []) if b.get("deform", True)]
    if not bones:
        raise BackendError("bad_input", "the skeleton has no deform bones")
    names = [b.get("name") for b in bones]
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise BackendError("bad_input", "every deform bone needs a name of its own (a non-empty string)")
    try:
        heads = np.array([b["head"] for b in bones], float).reshape(len(bones), 3)
        tails = np.array([b["tail"] for b in bones], float).reshape(len(bones), 3)
    except (KeyError, ValueError, TypeError) as exc:
        raise BackendError("bad_input", f"every bone needs a head and a tail (x, y, z): {exc}") from exc
    if not (np.isfinite(heads).all() and np.isfinite(tails).all()):
        raise BackendError("bad_input", "the skeleton has bones with NaN or infinite coordinates")
    v, f = mesh["vertices"], mesh["faces"]
    labels = nearest_bone(v, heads, tails)
    labels = clean_labels(adjacency(len(v), f), labels, len(bones))
    w = harmonic_weights(v, f, labels, len(bones), top_k=max_influences)
    write_json_atomic(job.root / SKELETON_EDITED_JSON, skeleton)
    write_npz_atomic(job.root / WEIGHTS_EDITED_NPZ, weights=w, bone_names=np.array(names),
                     vertex_part=labels.astype(np.int32), confidence=np.ones(len(v), np.float32))
    return {"bones": len(bones), "vertices": len(v), "weights": WEIGHTS_EDITED_NPZ}


def reweight_from_file(job_dir: str | Path, skeleton_path: str | Path, max_influences: int = 4) -> dict:
    try:
        skel = json.loads(Path(skeleton_path).read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise BackendError("bad_input", f"cannot read the skeleton {skeleton_path}: {exc}") from exc
    if not isinstance(skel, dict) or not isinstance(skel.get("bones", []), list):
        raise BackendError("bad_input", f"the skeleton {skeleton_path} must be an object with a list of bones")
    if not all(isinstance(b, dict) for b in skel.get("bones", [])):
        raise BackendError("bad_input", f"every bone of the skeleton {skeleton_path} must be an object")
    return reweight(JobDir(job_dir), skel, max_influences)
