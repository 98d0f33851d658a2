"""The generation stage: 13 views × T frames of RGB and part images into the job folder.

Part sources: ``sp4d`` (the model, needs weights and a GPU) and ``oracle`` (renders a mesh
whose ground-truth parts are known, e.g. the bundled creature). ``auto`` takes SP4D when it can
run and the oracle otherwise; the chosen source is recorded in views/cameras.json and returned.
A job without a mesh (a clip or a picture) has no ground truth: with ``oracle_mesh`` the oracle
renders that mesh in place of SP4D's views (after a picture's real SVD front stage), so the whole
chain (parts decode, visual hull, rig, the scene) runs on a machine without SP4D's weights or GPU,
against a subject whose parts are known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# STAGES and world_vertices are defined with the job folder (sp4d_job); re-exported here for the
# rig stages (backend/rig/pipeline.py imports them from this module)
from sp4d_job.arrays import world_vertices
from sp4d_job.layout import PREVIEW_MP4, STAGES

from .cameras import cameras_record, normalisation, orbit_cameras
from .context import StageContext
from .errors import BackendError
from .generate_sp4d import run_sp4d
from .jobdir import JobDir, digest, write_json_atomic, write_png_atomic
from .settings import settings_of

STAGE = "generate"
__all__ = ["STAGES", "generate", "run_generate", "world_vertices"]


def sp4d_unavailable(settings: dict) -> BackendError | None:
    """Why SP4D cannot run for this job (``no_gpu`` or ``missing_weights``), or None when it can
    (hub weights are fetched when it runs)."""
    import torch

    device = str(settings.get("device") or "auto").lower()
    custom = settings.get("model_config")  # a small test configuration runs anywhere
    if not custom and device != "cpu" and not torch.cuda.is_available():
        return BackendError("no_gpu", "no CUDA GPU is available (SP4D needs one; set device 'cpu' to force a "
                            "very slow run)")
    w = settings.get("weights")
    if w not in (None, "", "hub") and not Path(str(w)).expanduser().is_file():
        return BackendError("missing_weights", f"the weights file {w} does not exist")
    return None


def generated_files(job: JobDir) -> list[str]:
    """What the generation stage wrote: the views, their cameras and the input frames (the preview
    video is a convenience, not an output later stages read)."""
    return job.files("views", "input", exclude=(PREVIEW_MP4,))


def run_generate(job: JobDir, ctx: StageContext) -> dict:
    """Run (or reuse) the generation stage; returns its record."""
    spec = job.read_job()
    s = settings_of(spec)
    mesh = job.read_mesh()
    if spec["source"].get("kind") in ("clip", "image") and s["part_source"] == "auto":
        s["part_source"] = "sp4d"  # a clip or picture has no ground truth: only SP4D can make its parts
    own_mesh = mesh is not None and "from_hull" not in mesh  # a visual hull built by a previous run is an output
    if s["oracle_mesh"] and own_mesh:
        raise BackendError("bad_input", "settings.oracle_mesh is for a job without a mesh (a clip or a picture); "
                           "this job has its own mesh: give it ground-truth parts instead")
    has_gt = mesh is not None and "gt_labels" in mesh and "gt_parents" in mesh and "gt_joints" in mesh
    source = s["part_source"]
    why_not = sp4d_unavailable(s)
    if source == "auto":
        source = "sp4d" if why_not is None else ("oracle" if has_gt else None)
        if source is None:
            raise BackendError(why_not.code, f"cannot generate parts: {why_not.message}")
    if source == "sp4d" and why_not:
        raise BackendError(why_not.code, f"cannot run SP4D: {why_not.message}")
    if source == "oracle" and not has_gt:
        if not s["oracle_mesh"]:
            raise BackendError("bad_input", "the parts oracle needs a mesh with ground-truth parts (mesh.npz "
                               "gt_labels, gt_parents, gt_joints), or for a clip or a picture settings.oracle_mesh")
        mesh = oracle_subject(s["oracle_mesh"])
    if source == "sp4d":
        return run_sp4d(job, ctx, spec, s, mesh)
    subject = s["oracle_mesh"] if s["oracle_mesh"] else (job.mesh_npz if mesh is not None else None)
    key = digest(STAGE, source, s["frames"], s["image_size"], Path(subject) if subject else None)
    if job.stage_done(STAGE, key):
        return job.stage_info(STAGE)
    if s["oracle_mesh"]:  # the front stage runs as it would for SP4D (a picture's SVD clip, its frame choice)
        from .generate_svd import svd_input

        svd_input(job, ctx, spec, s)
    return _run_oracle(job, ctx, mesh, s, key)


def oracle_subject(path: str) -> dict:
    """The oracle's subject for a job without a mesh (settings.oracle_mesh), as mesh.npz's arrays:
    a mesh.npz with ground-truth parts (gt_labels, gt_parents, gt_joints; gt_axes, gt_weights
    optional) or a sample asset (``python -m backend sample``: labels, parents, joints, axes,
    weights). BackendError 'bad_input' naming the file when it is neither."""
    from sp4d_job import layout

    from .rig.mesh import validate_mesh

    p = Path(path).expanduser()
    if not p.is_file():
        raise BackendError("bad_input", f"settings.oracle_mesh {p} does not exist")
    try:
        z = layout.read_npz(p)
    except Exception as exc:  # zip or format errors
        raise BackendError("bad_input", f"settings.oracle_mesh {p} is not a readable npz: {exc}") from exc
    for asset, gt in (("labels", "gt_labels"), ("parents", "gt_parents"), ("joints", "gt_joints"),
                      ("axes", "gt_axes"), ("weights", "gt_weights")):
        if gt not in z and asset in z:
            z[gt] = z[asset]
    if not all(k in z for k in ("gt_labels", "gt_parents", "gt_joints")):
        raise BackendError("bad_input", f"settings.oracle_mesh {p} has no ground-truth parts (gt_labels, gt_parents, "
                           "gt_joints, or a sample asset's labels, parents, joints)")
    z["vertices"], z["faces"] = validate_mesh(z.get("vertices"), z.get("faces"))
    z.setdefault("matrix_world", np.eye(4, dtype=np.float32))
    return z


def _run_oracle(job: JobDir, ctx: StageContext, mesh: dict, s: dict, key: str) -> dict:
    from .sample.oracle import render_oracle

    verts = world_vertices(mesh)
    m = np.asarray(mesh["matrix_world"], np.float64)
    joints = np.asarray(mesh["gt_joints"], np.float64) @ m[:3, :3].T + m[:3, 3]
    labels = np.asarray(mesh["gt_labels"], np.int64)
    parents = np.asarray(mesh["gt_parents"], np.int64)
    if labels.shape != (len(verts),) or labels.min() < 0 or labels.max() >= len(parents):
        raise BackendError("bad_input", "mesh.npz gt_labels do not match its vertices and parts")
    centre, scale = normalisation(verts)
    cams = orbit_cameras(size=s["image_size"])
    total = s["frames"] * len(cams)
    done = [0]

    def on_image(t, v, rgb, parts):
        write_png_atomic(job.view_image("rgb", v, t), rgb)
        write_png_atomic(job.view_image("parts", v, t), parts)
        if v == 0:
            write_png_atomic(job.input_frame(t), rgb)
        done[0] += 1
        ctx.progress(STAGE, done[0], total, f"oracle view {v} frame {t}")

    faces = mesh["faces"]
    axes = np.asarray(mesh["gt_axes"], np.float64) @ m[:3, :3].T if "gt_axes" in mesh else None
    weights = np.asarray(mesh["gt_weights"], np.float64) if "gt_weights" in mesh else None
    render_oracle((verts - centre) * scale, faces, labels, parents, (joints - centre) * scale, cams,
                  s["frames"], axes, on_image, ctx.check, weights=weights)
    write_json_atomic(job.cameras_json, cameras_record(cams, s["frames"], "oracle", centre, scale))
    job.mark_stage(STAGE, key, outputs=generated_files(job), source="oracle", frames=s["frames"], views=len(cams))
    return job.stage_info(STAGE)


def generate(clip: str | Path, job_dir: str | Path, settings: dict | None = None,
             on_event=None, cancel=None, kind: str = "clip") -> dict:
    """Generate the 13 views × T frames of RGB and part images for ``clip`` into ``job_dir``.

    ``settings`` as in job.json (docs/job-folder.md); returns the stage record. Re-running with
    the same clip and settings reuses the finished stage. ``kind`` 'image': ``clip`` is one
    picture, animated by SVD first (generate_svd.py).
    """
    if kind not in ("clip", "image"):
        raise BackendError("bad_input", f"a generation source is a 'clip' or an 'image', got {kind!r}")
    job = JobDir(job_dir)
    job.create({"kind": kind, "path": str(Path(clip).resolve())}, {"part_source": "sp4d", **(settings or {})})
    return run_generate(job, StageContext(on_event, cancel))
