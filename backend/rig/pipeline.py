"""The rigging stages over a job folder: parts (decode) and rig (lift, structure, motion, joints,
bones, weights).

The rig stage works on the mesh welded by distance (a mesh split at UV seams is one surface) in
the cameras' normalised space, and writes its results in the user's own vertex order and object
space: rig/skeleton.json (bones, joints with the method that placed each, parts, per-frame bone
transforms when the clip moves) and rig/weights.npz.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from sp4d_job.arrays import world_vertices
from sp4d_job.layout import LABELS_NPZ, SKELETON_JSON, WEIGHTS_NPZ

from ..context import StageContext
from ..errors import BackendError
from ..jobdir import JobDir, digest, read_png, write_json_atomic, write_npz_atomic
from ..parts.decode import decode_parts
from ..settings import settings_of
from .joints import broad_joints, fit_pivot, flat_contact, hinge_axis, hinge_on_contact, mirror_joints
from .lift import frame_votes, labels_from_votes, lift_labels
from .naming import bone_names
from .reparent import in_doubt, motion_parents
from .rigid import free_motion
from .skeleton import build_bones, roll_for_x_axis
from .structure import build_structure, detach_strays
from .tracking import fields_of, mask_fields, track
from .views import ViewSet
from .weights import harmonic_weights
from .weld import weld


def read_cameras(job: JobDir) -> dict:
    try:
        cams = json.loads(job.cameras_json.read_text())
        cams["views"], cams["frames"]  # noqa: B018 - presence check
        return cams
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise BackendError("bad_input", f"views/cameras.json is missing or invalid ({exc}); "
                           "run the generate stage first") from exc


def _in_background(fn, *args) -> Future:
    """fn(*args) started on a thread of its own (OpenCV's distance transforms and large numpy
    operations release the GIL, so on a second core they overlap the rig's own work)."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)  # the submitted call still runs to its end


def _threads():
    """One BLAS thread: the rig's many small solves are slower with a pool (13 ms instead of
    0.3 ms for a 210² system on two busy cores)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def run_parts(job: JobDir, ctx: StageContext) -> dict:
    """Decode views/parts into parts/labels.npz (skipped when already done for these views)."""
    cams = read_cameras(job)
    n_t, n_v = int(cams["frames"]), len(cams["views"])
    # the key is the images it reads, by content: new views (or a re-run generate) re-decode
    key = digest("parts", n_t, n_v, *(job.view_image(kind, v, t) for t in range(n_t) for v in range(n_v)
                                      for kind in ("parts", "rgb")))
    if job.stage_done("parts", key):
        return job.stage_info("parts")
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
            rgbs.append(read_png(rp) if rp.exists() else None)
            parts.append(img)
            present[t, v] = True
        ctx.progress("parts", t + 1, n_t + 1, f"read frame {t}")
    if not parts:
        raise BackendError("bad_input", "the job has no part images (views/parts/*.png)")
    with _threads():
        result = decode_parts(np.stack(parts), None if any(r is None for r in rgbs) else np.stack(rgbs))
    full = np.zeros((n_t, n_v) + shape[:2], np.uint16)
    full[present] = result.labels
    write_npz_atomic(job.labels_npz, labels=full, colours=result.colours, present=present)
    ctx.progress("parts", n_t + 1, n_t + 1, f"{len(result.colours)} parts found")
    job.mark_stage("parts", key, outputs=[LABELS_NPZ], parts=len(result.colours), merged=result.merges,
                   background=result.background)
    return job.stage_info("parts")


def _load_labels(job: JobDir) -> dict:
    try:
        with np.load(job.labels_npz, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise BackendError("bad_input", f"parts/labels.npz is unreadable: {exc}") from exc


def _hull_mesh(job: JobDir, ctx: StageContext) -> dict:
    """Visual hull of the frame-0 silhouettes, written as mesh.npz (world = normalised space)."""
    from .hull import visual_hull

    cams = read_cameras(job)
    lab = _load_labels(job)
    masks = {v: lab["labels"][0, v] > 0 for v in range(len(cams["views"])) if lab["present"][0, v]}
    ctx.progress("rig", 0, 5, f"visual hull from {len(masks)} silhouettes")
    verts, faces = visual_hull(masks, cams["views"])
    norm = cams["normalisation"]
    world = verts / float(norm["scale"]) + np.asarray(norm["centre"])
    job.write_mesh(world, faces, from_hull=np.array(True))
    return job.read_mesh()


MIN_ANGLE = 4.0  # degrees: a joint the clip turns less than this keeps its contact centre
FAR_HINGE = 0.06  # of the diagonal: a broad contact's staying point this far from its centre is the joint
FREE_GAIN = 0.5  # a broad contact's child whose free rigid fit costs at most this share of the tracked one...
FREE_RESIDUAL = 0.006  # ...and turns about one point within this share of the diagonal takes that point
TRUSTED_PX = 4.0  # px: a part whose tracked points miss their masks by this much on average votes e⁻¹ as much
SURE = 0.7  # share of frame 0's votes above which a vertex keeps frame 0's part (the later frames settle the rest)
MIN_VOTES = 0.2  # trusted later-frame votes a vertex needs before they count (one squarely seen view is ~1)


def place_joints(structure, motion, vertices: np.ndarray, labels: np.ndarray,
                 hinges: dict[int, tuple[np.ndarray, str]] | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(joints (P, 3), hinge axes (P, 3), per-part joint records): the tracked pivot where the clip
    moves the joint and the pivot lies within the child's reach of the contact, the contact
    centre where it does not. ``hinges``: for broad contacts, the hinge on the contact patch and
    what placed it (_broad_hinges); it wins where it lies far from the contact's centre (a lid's
    hinge at its back edge), which the tracker, pulled towards the centre, does not reach."""
    n = len(structure.parent)
    joints = structure.contact_centre.copy()
    axes = np.zeros((n, 3))
    info: list[dict] = [{} for _ in range(n)]
    size = float(np.linalg.norm(np.ptp(vertices, axis=0)))
    for k in range(n):
        q = structure.parent[k]
        if q < 0:
            continue
        info[k] = {"method": "contact", "confidence": 0.0}
        if motion is None:
            continue
        rel = np.einsum("tij,tjk->tik", np.linalg.inv(motion.world[:, q]), motion.world[:, k])
        pts = vertices[labels == k]
        reach = 1.1 * float(np.linalg.norm(pts - structure.contact_centre[k], axis=1).max()) if len(pts) else 0.0
        fit = fit_pivot(rel, structure.contact_centre[k], reach, min_angle=MIN_ANGLE)
        if fit.axis is not None:
            axes[k] = fit.axis
        info[k]["angle_deg"] = round(fit.angle_deg, 2)
        hinge, side = (hinges or {}).get(k, (None, ""))
        if fit.angle_deg >= MIN_ANGLE and hinge is not None and \
                np.linalg.norm(hinge - structure.contact_centre[k]) >= FAR_HINGE * size:
            joints[k] = hinge
            info[k] = {"method": "motion", "confidence": round(fit.confidence, 3), "angle_deg": round(fit.angle_deg, 2),
                       "from": f"edge of the contact patch ({side})"}
        elif fit.method == "motion" and np.linalg.norm(motion.pivots[k] - structure.contact_centre[k]) <= reach:
            joints[k] = motion.pivots[k]
            info[k] = {"method": "motion", "confidence": round(fit.confidence, 3), "angle_deg": round(fit.angle_deg, 2),
                       "residual_px": round(float(motion.residual[k]), 3)}
    if structure.mirror_axis is not None:
        a = structure.mirror_axis
        plane = 0.5 * float(vertices[:, a].min() + vertices[:, a].max())
        joints = mirror_joints(joints, structure.parent, structure.mirror_of, structure.side, a, plane)
    return joints, axes, info


def _broad_hinges(vertices, labels, structure, motion, tracker, label_images, present, views,
                  part_ids, patches: dict[int, np.ndarray], broad: np.ndarray) -> dict[int, tuple[np.ndarray, str]]:
    """Hinges of the children with broad contacts (``broad`` (P,), ``patches`` their contact
    patches: joints.broad_joints): their pivot may lie far
    from the contact's centre, where the tracker's pull holds it. Where the contact is also flat
    (joints.flat_contact: a lid), the hinge is on the edge of the contact patch
    (joints.hinge_on_contact); its side is the one the child's free rigid motion
    (rigid.free_motion) turns about, where that motion explains the masks far better than the
    tracked one (cost ratio ≤ FREE_GAIN) and turns about one point (residual ≤ FREE_RESIDUAL of
    the diagonal: a separate lid), else the side whose rest positions stay the child's in the
    later frames."""
    size = float(np.linalg.norm(np.ptp(vertices, axis=0)))
    children = [c for c in patches if broad[c]]
    if not children:
        return {}
    flat = [c for c in children if flat_contact(vertices, patches[c])]  # lids: the free fit may name the side
    world, cost_tracked, cost_free = free_motion(tracker, flat)
    out = {}
    for c in children:
        q = structure.parent[c]
        rel = np.einsum("tij,tjk->tik", np.linalg.inv(motion.world[:, q]), world[:, c])
        pts = vertices[labels == c]
        reach = 1.1 * float(np.linalg.norm(pts - structure.contact_centre[c], axis=1).max())
        alone = fit_pivot(rel, structure.contact_centre[c], reach, min_angle=MIN_ANGLE)
        freer = c in flat and cost_free[c] <= FREE_GAIN * cost_tracked[c] and alone.method == "motion" and \
            alone.residual <= FREE_RESIDUAL * size
        h = hinge_on_contact(vertices, labels, c, patches[c], label_images, present, views, part_ids[c],
                             towards=alone.position if freer else None)
        if h is not None:
            out[c] = (h, "the child's free rigid motion" if freer else
                      "the side that stays put" if c in flat else "where it stays put")
    return out


def frames_from(structure, motion, joints: np.ndarray) -> np.ndarray:
    """(T, P, 4, 4) per-frame world transforms of the parts about the final joints: the root as
    tracked, every other part by its tracked rotation relative to its parent."""
    from .tracking import Skeleton

    sk = Skeleton(structure.parent, joints)
    return np.stack([sk.forward(motion.world[t, structure.root], motion.local[t]) for t in range(len(motion.world))])


def run_rig(job: JobDir, ctx: StageContext) -> dict:
    """Lift labels onto the mesh, find the structure, track the motion, place joints and bones,
    and solve the weights, into rig/."""
    spec = job.read_job()
    mesh = job.read_mesh()
    if mesh is None:  # a clip without a mesh: build one from the silhouettes
        mesh = _hull_mesh(job, ctx)
    top_k = int(settings_of(spec)["max_influences"] or 0)
    key = digest("rig", job.outputs_key("parts"), job.labels_npz, job.cameras_json, job.mesh_npz, top_k)
    if job.stage_done("rig", key):
        return job.stage_info("rig")
    with _threads():
        record = _rig(job, ctx, mesh, top_k)
    job.mark_stage("rig", key, outputs=[SKELETON_JSON, WEIGHTS_NPZ], **record)
    return job.stage_info("rig")


def _rig(job: JobDir, ctx: StageContext, mesh: dict, top_k: int) -> dict:
    cams = read_cameras(job)
    lab = _load_labels(job)
    labels, present, colours = lab["labels"], lab["present"], lab["colours"]
    k = len(colours)
    norm = cams["normalisation"]
    centre, scale = np.asarray(norm["centre"]), float(norm["scale"])
    wv, faces, back = weld((world_vertices(mesh) - centre) * scale, mesh["faces"])
    # the masks' distance fields of every decoded part, on the second core while the lift runs
    all_fields = _in_background(mask_fields, labels, present, list(range(1, k + 1))) \
        if labels.shape[0] > 1 else None
    ctx.progress("rig", 1, 5, "lifting parts onto the mesh")
    views0 = {v: labels[0, v] for v in range(labels.shape[1]) if present[0, v]}
    vlab, conf, fits, votes0, agreed0 = lift_labels(wv, faces, cams["views"], views0, k)
    used = np.unique(vlab)
    remap = np.full(k, -1)
    remap[used] = np.arange(len(used))
    vlab = remap[vlab]
    n = len(used)
    ctx.progress("rig", 2, 5, "finding the structure and tracking the motion")
    vlab = detach_strays(wv, faces, vlab, n)
    s = build_structure(wv, faces, vlab, n)
    motion = tracker = part_weights = None
    if labels.shape[0] > 1 and n > 1:
        ctx.check()
        part_ids = [int(u) + 1 for u in used]
        views = ViewSet.from_cameras(cams["views"], fits)
        fields = fields_of(all_fields.result(), list(used))
        first = track(wv, faces, vlab, s.parent, s.contact_centre, labels, present, part_ids, views, fields=fields,
                      broad=broad_joints(wv, vlab, s.parent)[1])
        ctx.progress("rig", 3, 5, "lifting the parts again with every frame, tracking them")
        trust = np.exp(-(first.residual / TRUSTED_PX) ** 2)  # parts tracked badly vote little in the later frames
        v0 = votes0[:, used]
        sure = v0.max(1) >= SURE * np.maximum(v0.sum(1), 1e-12)  # frame 0 (the rest pose itself) is clear there
        later = frame_votes(wv, faces, vlab, first.world, labels, present, views, part_ids, weight=trust)
        later[sure | (later.sum(1) < MIN_VOTES)] = 0.0  # too little trusted evidence: frame 0 and the mesh decide
        votes = v0 + later
        agreed = agreed0 & (votes.argmax(1) == v0.argmax(1))  # frame 0's views agreed on the part now on top
        relabelled, conf_all = labels_from_votes(wv, faces, votes, n, agreed)
        if (np.bincount(relabelled, minlength=n) > 0).all():
            vlab, conf = detach_strays(wv, faces, relabelled, n), conf_all
        s = build_structure(wv, faces, vlab, n)
        # the labels are final: each part's weights (columns in part order) on the second core
        part_weights = _in_background(harmonic_weights, wv, faces, vlab, n, top_k)
        ctx.check()
        patches, broad = broad_joints(wv, vlab, s.parent)
        motion, tracker = track(wv, faces, vlab, s.parent, s.contact_centre, labels, present, part_ids, views,
                                start=first.world, fields=fields, rounds=1, keep=True, broad=broad)
        doubt = in_doubt(s)
        moves = motion_parents(s, motion.world, free_motion(tracker, doubt)[0]) if doubt else {}
        if moves:  # a child its contacts hung from the wrong one of two parts: tracked again on the new tree
            ctx.check()
            s = s.rehung(moves)
            patches, broad = broad_joints(wv, vlab, s.parent)
            motion, tracker = track(wv, faces, vlab, s.parent, s.contact_centre, labels, present, part_ids, views,
                                    start=motion.world, fields=fields, rounds=1, keep=True, broad=broad)
    hinges = _broad_hinges(wv, vlab, s, motion, tracker, labels, present, views, part_ids, patches, broad) \
        if motion is not None else {}
    joints, axes, info = place_joints(s, motion, wv, vlab, hinges)
    hinged = [k for k in range(n) if "from" in info[k]]  # placed on a broad contact's edge (a lid's hinge)
    if hinged:  # tracked about its contact's centre, the lid turned short and its box tilted instead
        ctx.check()
        about = s.contact_centre.copy()
        about[hinged] = joints[hinged]
        motion = track(wv, faces, vlab, s.parent, about, labels, present, part_ids, views, fields=fields, rounds=1,
                       broad=broad, turns={k: hinge_axis(wv, patches[k], joints[k]) for k in hinged})
        joints, axes, info = place_joints(s, motion, wv, vlab, hinges)
    names = bone_names(s, wv, vlab)
    skel = build_bones(wv, vlab, s, joints, names, axes, info)
    # normalised space -> world -> the mesh's object space
    mw = np.asarray(mesh["matrix_world"], np.float64)
    inv = np.linalg.inv(mw)
    to_norm = np.diag([scale, scale, scale, 1.0]) @ np.block([[np.eye(3), -centre[:, None]],
                                                              [np.zeros((1, 3)), 1]]) @ mw

    def to_object(p):
        w = np.asarray(p) / scale + centre
        return (inv[:3, :3] @ w + inv[:3, 3]).tolist()

    if motion is not None:  # per-frame deformation of each deform bone, object space (rest -> frame)
        world = frames_from(s, motion, joints)
        back_to = np.linalg.inv(to_norm)
        skel["frames"] = [{"frame": t, "bones": {b["name"]: (back_to @ world[t, b["part"]] @ to_norm).tolist()
                                                 for b in skel["bones"] if b["deform"]}}
                          for t in range(world.shape[0])]
    for b in skel["bones"]:
        b["head"], b["tail"] = to_object(b["head"]), to_object(b["tail"])
    bone_of = {b["part"]: b for b in skel["bones"] if b["deform"]}
    for j in skel["joints"]:
        j["position"] = to_object(j["position"])
        if "bend_axis" in j:  # a direction: the inverse rotation only; the roll follows it in object space
            a = inv[:3, :3] @ np.asarray(j["bend_axis"])
            j["bend_axis"] = (a / np.linalg.norm(a)).tolist()
            b = bone_of[j["part"]]
            b["roll"] = roll_for_x_axis(np.array(b["head"]), np.array(b["tail"]), a)
    for p in skel["parts"]:
        p["centroid"] = to_object(p["centroid"])
        p["colour"] = colours[used[p["part"]]].tolist()
    ctx.progress("rig", 4, 5, "harmonic skinning weights")
    deform = [b for b in skel["bones"] if b["deform"]]  # one per part, in the tree's order
    w = (part_weights.result() if part_weights else harmonic_weights(wv, faces, vlab, n, top_k))
    w = w[:, [b["part"] for b in deform]]
    skel.update(space="object", part_source=cams.get("part_source"))
    write_npz_atomic(job.weights_npz, weights=w[back], bone_names=np.array([b["name"] for b in deform]),
                     vertex_part=vlab[back].astype(np.int32), confidence=conf[back].astype(np.float32))
    write_json_atomic(job.skeleton_json, skel)
    methods = [j.get("method") for j in skel["joints"]]
    ctx.progress("rig", 5, 5, f"{len(deform)} bones, {methods.count('motion')} joints placed by motion")
    return {"bones": len(deform), "parts": n, "welded_vertices": int(len(wv)),
            "joints_by_motion": methods.count("motion"), "joints_by_contact": methods.count("contact")}
