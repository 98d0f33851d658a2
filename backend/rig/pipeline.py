"""The rigging stages over a job folder: parts (decode) and rig (lift, skeleton, weights)."""

from __future__ import annotations

import json

import numpy as np

from ..context import StageContext
from ..errors import BackendError
from ..generate import STAGES, world_vertices
from ..jobdir import JobDir, digest, read_png, write_json_atomic, write_npz_atomic
from ..parts.decode import decode_parts
from .lift import lift_labels
from .mesh import adjacency
from .motion import centroid_tracks, solve_motion, stable_joints
from .skeleton import part_tree, skeleton_from
from .weights import harmonic_weights


def read_cameras(job: JobDir) -> dict:
    try:
        cams = json.loads(job.cameras_json.read_text())
        cams["views"], cams["frames"]  # noqa: B018 - presence check
        return cams
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackendError("bad_input", f"views/cameras.json is missing or invalid ({exc}); "
                           "run the generate stage first") from exc


def run_parts(job: JobDir, ctx: StageContext) -> dict:
    """Decode views/parts into parts/labels.npz (skipped when already done for these views)."""
    gen = job.stage_info("generate")
    cams = read_cameras(job)
    n_t, n_v = int(cams["frames"]), len(cams["views"])
    key = digest("parts", gen.get("key"), n_t, n_v)
    if job.stage_done("parts", key):
        return job.stage_info("parts")
    job.invalidate_from("parts", STAGES)
    present = np.zeros((n_t, n_v), bool)
    parts, rgbs = [], []
    shape = None
    for t in range(n_t):
        for v in range(n_v):
            p = job.view_image("parts", v, t)
            if not p.exists():
                continue
            img = read_png(p)
            shape = shape or img.shape
            if img.shape != shape:
                raise BackendError("bad_input", f"{p.name} is {img.shape[:2]}, other part images are {shape[:2]}")
            rp = job.view_image("rgb", v, t)
            rgbs.append(read_png(rp) if rp.exists() else np.full_like(img, 255))
            parts.append(img)
            present[t, v] = True
        ctx.progress("parts", t + 1, n_t + 1, f"read frame {t}")
    if not parts:
        raise BackendError("bad_input", "the job has no part images (views/parts/*.png)")
    labels, colours = decode_parts(np.stack(parts), np.stack(rgbs))
    full = np.zeros((n_t, n_v) + shape[:2], np.uint16)
    full[present] = labels
    write_npz_atomic(job.labels_npz, labels=full, colours=colours, present=present)
    ctx.progress("parts", n_t + 1, n_t + 1, f"{len(colours)} parts found")
    job.mark_stage("parts", key, parts=len(colours))
    return job.stage_info("parts")


def _load_labels(job: JobDir) -> dict:
    try:
        with np.load(job.labels_npz, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise BackendError("bad_input", f"parts/labels.npz is unreadable: {exc}") from exc


def _hull_mesh(job: JobDir, ctx: StageContext) -> dict:
    """Visual hull of the frame-0 silhouettes, written as mesh.npz (world = normalised space)."""
    from ..parts.decode import foreground_mask
    from .hull import visual_hull

    cams = read_cameras(job)
    masks = {}
    for v in range(len(cams["views"])):
        rgb_p, part_p = job.view_image("rgb", v, 0), job.view_image("parts", v, 0)
        if rgb_p.exists():
            part = read_png(part_p) if part_p.exists() else None
            rgb = read_png(rgb_p)
            masks[v] = foreground_mask(rgb, part if part is not None else np.full_like(rgb, 255))
    ctx.progress("rig", 0, 4, f"visual hull from {len(masks)} silhouettes")
    verts, faces = visual_hull(masks, cams["views"])
    norm = cams["normalisation"]
    world = verts / float(norm["scale"]) + np.asarray(norm["centre"])
    job.write_mesh(world, faces, from_hull=np.array(True))
    return job.read_mesh()


def run_rig(job: JobDir, ctx: StageContext) -> dict:
    """Lift labels onto the mesh, build the skeleton and the weights into rig/."""
    spec = job.read_job()
    mesh = job.read_mesh()
    if mesh is None:  # a clip without a mesh: build one from the silhouettes
        mesh = _hull_mesh(job, ctx)
    top_k = int(spec["settings"].get("max_influences", 4) or 0)
    key = digest("rig", job.stage_info("parts").get("key"), job.mesh_npz, top_k)
    if job.stage_done("rig", key):
        return job.stage_info("rig")
    job.invalidate_from("rig", STAGES)
    cams = read_cameras(job)
    lab = _load_labels(job)
    labels, present, colours = lab["labels"], lab["present"], lab["colours"]
    k = len(colours)
    norm = cams["normalisation"]
    centre, scale = np.asarray(norm["centre"]), float(norm["scale"])
    verts = world_vertices(mesh)
    vn = (verts - centre) * scale
    faces = mesh["faces"]
    ctx.progress("rig", 1, 4, "lifting parts onto the mesh")
    views = {v: labels[0, v] for v in range(labels.shape[1]) if present[0, v]}
    vlab, conf, fits = lift_labels(vn, faces, cams["views"], views, k)
    used = np.unique(vlab)
    remap = np.full(k, -1)
    remap[used] = np.arange(len(used))
    vlab = remap[vlab]
    ctx.progress("rig", 2, 4, "building the skeleton")
    tree = part_tree(vn, faces, vlab, len(used))
    world = None
    if labels.shape[0] > 1:  # the clip moves: refine joints by pivots, per-frame transforms
        ids = [int(u) + 1 for u in used]
        tracks = centroid_tracks(labels, present, cams["views"], fits, ids, tree["centroids"])
        moved = np.nanmax(np.linalg.norm(tracks - tracks[:1], axis=2), axis=0) > 0.02
        coo = adjacency(len(vn), faces).tocoo()
        boundary = {c: np.unique(coo.row[(vlab[coo.row] == c) & (vlab[coo.col] == tree["parent"][c])])
                    for c in range(len(used)) if tree["parent"][c] >= 0}
        joints = stable_joints(vn, vlab, tree["parent"], tree["joints"], boundary, labels, present,
                               cams["views"], fits, ids, moved)
        joints, world = solve_motion(tree["parent"], joints, tracks, tree["extents"], refine=False)
        skel = skeleton_from(vn, vlab, tree, joints)
    else:
        skel = skeleton_from(vn, vlab, tree)
    # back to object space: normalised -> world -> object
    mw = np.asarray(mesh["matrix_world"], np.float64)
    inv = np.linalg.inv(mw)
    norm = np.diag([scale, scale, scale, 1.0]) @ np.block([[np.eye(3), -centre[:, None]], [np.zeros((1, 3)), 1]]) @ mw

    def to_object(p):
        w = np.asarray(p) / scale + centre
        return (inv[:3, :3] @ w + inv[:3, 3]).tolist()

    if world is not None:  # per-frame deformation of each deform bone, object space (rest -> frame)
        ninv = np.linalg.inv(norm)
        skel["frames"] = [{"frame": t, "bones": {b["name"]: (ninv @ world[t, b["part"]] @ norm).tolist()
                                                 for b in skel["bones"] if b["deform"]}}
                          for t in range(world.shape[0])]

    for b in skel["bones"]:
        b["head"], b["tail"] = to_object(b["head"]), to_object(b["tail"])
    for j in skel["joints"]:
        j["position"] = to_object(j["position"])
    for p in skel["parts"]:
        p["centroid"] = to_object(p["centroid"])
        p["colour"] = colours[used[p["part"]]].tolist()
    ctx.progress("rig", 3, 4, "harmonic skinning weights")
    deform = [b for b in skel["bones"] if b["deform"]]
    part_to_col = {b["part"]: i for i, b in enumerate(deform)}
    w = harmonic_weights(vn, faces, np.array([part_to_col[p] for p in vlab]), len(deform), top_k=top_k)
    skel.update(space="object", part_source=cams.get("part_source"))
    write_npz_atomic(job.weights_npz, weights=w, bone_names=np.array([b["name"] for b in deform]),
                     vertex_part=vlab.astype(np.int32), confidence=conf.astype(np.float32))
    write_json_atomic(job.skeleton_json, skel)
    ctx.progress("rig", 4, 4, f"{len(deform)} bones")
    job.mark_stage("rig", key, bones=len(deform), parts=len(used))
    return job.stage_info("rig")
