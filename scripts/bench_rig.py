"""Rig benchmark: hard articulated assets with true pivots (and, given a folder, artists' rigged
models), oracle part images clean and degraded to a calibrated 2D part mIoU, our rigging stages,
and Blender's bone heat on our skeleton and on the true one. Prints one table.

    .venv/bin/python scripts/bench_rig.py [--cases a,b] [--levels clean,0.85,0.70] [--real DIR]
                                          [--no-bone-heat] [--out docs/measurements/bench_rig.json]
                                          [--keep DIR | --again DIR]

--keep DIR keeps every job folder (DIR/ASSET/LEVEL); --again DIR runs the parts and rig stages
again on such folders with the current code, on the same images and noise, so that a change's
rows can be compared with the code before it without the noise drawn again.

--real DIR takes every NAME.npz made by scripts/rigged_asset_from_gltf.py in DIR (artists' glTF
models through Blender's importer; docs/rig.md says which were used and where they come from).

Columns: 2D mIoU of the part images the rig saw (the degraded label maps against the clean ones)
and of our decoder's labels; part mIoU on the mesh; joint error against the true pivots (mean and
worst, % of the bounding-box diagonal); root right; parents right / true non-root parts;
|bones − parts|; deformation (% of the diagonal, mean over 5 random poses of ±0.6 rad about the
joints, the predicted skeleton posed with the true local rotations, metrics.py) of our rig, of
bone heat on our skeleton, of our weights on the true skeleton and of bone heat on the true
skeleton; how far the rig's own keyframes (its tracked motion) are from the clip (`clip`, % of the
diagonal: the rest mesh skinned by our weights and per-frame bone transforms against the oracle's
posed mesh, metrics.clip_error); and the seconds of the parts stage (decode) and of the rig stage. Bone heat runs in
.venv-blender-4.5 (scripts/setup_env.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.context import StageContext  # noqa: E402
from backend.generate import STAGES, run_generate  # noqa: E402
from backend.jobdir import JobDir, read_png, write_json_atomic, write_png_atomic  # noqa: E402
from backend.parts.encoding import part_colours  # noqa: E402
from backend.rig import metrics  # noqa: E402
from backend.rig.pipeline import run_parts, run_rig  # noqa: E402
from backend.rig.weights import harmonic_weights  # noqa: E402
from backend.sample.catalogue import ASSETS, TWINS  # noqa: E402
from backend.sample.degrade import calibrate, degrade_image, label_image, miou_2d, wrong_view_plan  # noqa: E402
from backend.sample.rigged import asset_from_rig  # noqa: E402

BLENDER_PY = ROOT / ".venv-blender-4.5" / "bin" / "python"
LEVELS = {"clean": (None, 0), "0.85": (0.85, 1), "0.70": (0.70, 2)}  # target 2D mIoU, badly wrong views
HEAT_MAX_VERTICES = 130_000


def bone_heat(mesh_npz: Path, skeleton: dict, tmp: Path) -> np.ndarray | None:
    """Blender's automatic weights for ``skeleton`` on the mesh (None without the Blender venv)."""
    if not BLENDER_PY.exists():
        return None
    skel_path, out = tmp / "heat_skeleton.json", tmp / "heat.npz"
    write_json_atomic(skel_path, skeleton)
    r = subprocess.run([str(BLENDER_PY), str(ROOT / "scripts" / "blender_bone_heat.py"), str(mesh_npz),
                        str(skel_path), str(out)], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        print(r.stderr[-2000:], file=sys.stderr)
        return None
    with np.load(out) as z:
        w = z["weights"].astype(np.float64)
    return w / np.maximum(w.sum(1, keepdims=True), 1e-12)  # bone heat leaves some rows unweighted: count them as such


def true_skeleton(asset) -> dict:
    """The true rig as a skeleton.json (object space): one deform bone per part from its pivot to
    its single child's pivot, or towards the far end of its vertices."""
    v = asset.vertices.astype(np.float64)
    bones = []
    for k in range(len(asset.names)):
        kids = np.nonzero(asset.parents == k)[0]
        head = asset.joints[k].astype(np.float64)
        pts = v[asset.labels == k]
        if len(kids) == 1:
            tail = asset.joints[kids[0]].astype(np.float64)
        elif len(pts):
            far = pts[np.argmax(np.linalg.norm(pts - head, axis=1))]
            tail = head + 0.8 * (far - head)
        else:
            tail = head + [0, 0, 0.05]
        if np.linalg.norm(tail - head) < 1e-4:
            tail = head + [0, 0, 0.05]
        bones.append({"name": f"b{k:02d}", "parent": f"b{asset.parents[k]:02d}" if asset.parents[k] >= 0 else None,
                      "head": head.tolist(), "tail": tail.tolist(), "roll": 0.0, "deform": True})
    return {"bones": bones}


def degrade_job(job: JobDir, colours: np.ndarray, target: float, n_wrong: int, seed: int = 0) -> dict:
    """Degrade the job's part images in place to ``target`` 2D mIoU with ``n_wrong`` badly wrong
    views; returns the level and the measured 2D mIoU of all images (label maps)."""
    cams = json.loads(job.cameras_json.read_text())
    n_t, n_v = cams["frames"], len(cams["views"])
    sample = [read_png(job.view_image("parts", v, t)) for t in (0, n_t - 1) for v in range(0, n_v, 2)]
    level, _ = calibrate(sample, colours, target, seed)
    rng = np.random.default_rng(seed + 1)
    wrong = {(t, v): kind for t, v, kind in wrong_view_plan(n_v, n_t, n_wrong, rng)}
    scores = []
    for t in range(n_t):
        for v in range(n_v):
            p = job.view_image("parts", v, t)
            img, truth, lab = degrade_image(read_png(p), colours, rng, level, wrong.get((t, v)))
            scores.append(miou_2d(truth, lab))
            write_png_atomic(p, img)
    return {"level": level, "miou_2d": float(np.mean(scores))}


def decoded_miou_2d(job: JobDir, clean: dict, colours: np.ndarray) -> float:
    """2D mIoU of the decoder's label images against the clean ones (each decoded part taken as
    the true part it overlaps most over all images)."""
    with np.load(job.labels_npz) as z:
        labels, present = z["labels"], z["present"]
    keys = [k for k in clean if present[k]]
    truth = np.stack([clean[k] for k in keys])
    dec = np.stack([labels[k] for k in keys]).astype(np.int64)
    inter = np.zeros((int(dec.max()) + 1, len(colours) + 1))
    np.add.at(inter, (dec.ravel(), truth.ravel()), 1)
    owner = inter.argmax(1)
    owner[0] = 0
    return float(np.mean([miou_2d(t, owner[d]) for t, d in zip(truth, dec, strict=True)]))


def prepare(name: str, asset, tmp: Path, twin: tuple[JobDir, np.ndarray] | None = None
            ) -> tuple[JobDir, dict, np.ndarray]:
    """A job with the asset's mesh and ground truth and its clean oracle views. A seam-split
    asset takes its welded ``twin``'s (job, colours) views instead: the same surface seen by the
    same cameras, whose own render would colour its parts from vertex centroids that the seams'
    duplicated vertices shift (by a level here and there, and the noisy levels then draw other
    noise), so that the two rows differ by the mesh alone."""
    job = JobDir(tmp / name / "clean")
    shutil.rmtree(job.root.parent, ignore_errors=True)
    job.create({"kind": "mesh"}, {"part_source": "oracle", "max_influences": 4})
    extra = dict(gt_labels=asset.labels, gt_parents=asset.parents, gt_joints=asset.joints, gt_axes=asset.axes)
    if asset.weights is not None:
        extra["gt_weights"] = asset.weights
    job.write_mesh(asset.vertices, asset.faces, **extra)
    run_generate(job, StageContext())
    cams = json.loads(job.cameras_json.read_text())
    colours = part_colours(asset.vertices, asset.labels, len(asset.names))
    if twin is not None:
        twin_job, colours = twin
        for kind in ("parts", "rgb"):
            for t in range(cams["frames"]):
                for v in range(len(cams["views"])):
                    shutil.copyfile(twin_job.view_image(kind, v, t), job.view_image(kind, v, t))
        job.invalidate_from("parts", STAGES)
    clean = {(t, v): label_image(read_png(job.view_image("parts", v, t)), colours)
             for t in range(cams["frames"]) for v in range(len(cams["views"]))}
    return job, clean, colours


def truth_rows(asset, job: JobDir, heat: bool, tmp: Path) -> dict:
    """Deformation of the true skeleton with our harmonic weights (on the true parts) and with
    bone heat: the weights alone, apart from our skeleton."""
    v = asset.vertices.astype(np.float64)
    diag = float(np.linalg.norm(np.ptp(v, 0)))
    truth_w = asset.weights if asset.weights is not None else metrics.one_hot(asset.labels, len(asset.names))
    poses = metrics.random_poses(asset.parents, 5)
    owner = np.arange(len(asset.names))
    joints = asset.joints.astype(np.float64)
    from backend.rig.weld import weld

    wv, wf, back = weld(v, asset.faces)
    ours = harmonic_weights(wv, wf, _welded_labels(asset.labels, back, len(wv)), len(asset.names), top_k=4)[back]
    row = {"deform_true_ours": metrics.deformation_error(v, truth_w, asset.parents, joints, ours, asset.parents,
                                                         joints, owner, poses, diag)}
    if heat and len(v) <= HEAT_MAX_VERTICES:
        hw = bone_heat(job.mesh_npz, true_skeleton(asset), tmp)
        if hw is not None:
            row["deform_true_heat"] = metrics.deformation_error(v, truth_w, asset.parents, joints, hw, asset.parents,
                                                                joints, owner, poses, diag)
    return row


def _welded_labels(labels: np.ndarray, back: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, np.int64)
    out[back] = labels
    return out


def rig_and_score(row: dict, asset, job: JobDir, clean: dict, colours: np.ndarray, heat: bool, tmp: Path) -> dict:
    """``row`` with the parts and rig stages' seconds on ``job`` and the scores of its rig."""
    t0 = time.perf_counter()
    run_parts(job, StageContext())
    row["t_parts"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_rig(job, StageContext())
    row["t_rig"] = time.perf_counter() - t0
    row["decoded_miou_2d"] = decoded_miou_2d(job, clean, colours)
    row.update(score(asset, job, heat, tmp))
    return row


def run_level(name: str, asset, job0: JobDir, clean: dict, colours: np.ndarray, level: str, heat: bool,
              tmp: Path) -> dict:
    target, n_wrong = LEVELS[level]
    job = JobDir(job0.root.parent / level)
    if level != "clean":
        shutil.rmtree(job.root, ignore_errors=True)
        shutil.copytree(job0.root, job.root)
    row = {"asset": name, "vertices": len(asset.vertices), "parts": len(asset.names), "images": level}
    if target is not None:
        row.update(degrade_job(job, colours, target, n_wrong))
        job.invalidate_from("parts", STAGES)  # new part images: decode and rig again
    else:
        row.update(level=0.0, miou_2d=1.0)
    return rig_and_score(row, asset, job, clean, colours, heat, tmp)


def run_again(name: str, asset, colours: np.ndarray, kept: Path, level: str, heat: bool, tmp: Path) -> dict:
    """The parts and rig stages run again, with this checkout's code, on the job folder
    ``kept/level`` of an earlier ``--keep`` run: the same images, so that two runs' rows differ by
    the code alone (the images' own 2D mIoU is not kept: nan)."""
    clean = {}
    with np.load(kept / "clean" / "parts" / "labels.npz") as z:
        n_t, n_v = z["present"].shape
    src = JobDir(kept / "clean")
    for t in range(n_t):
        for v in range(n_v):
            if src.view_image("parts", v, t).exists():
                clean[(t, v)] = label_image(read_png(src.view_image("parts", v, t)), colours)
    job = JobDir(tmp / kept.name / level)
    shutil.rmtree(job.root, ignore_errors=True)
    shutil.copytree(kept / level, job.root)
    job.invalidate_from("parts", STAGES)
    row = {"asset": name, "vertices": len(asset.vertices), "parts": len(asset.names), "images": level,
           "level": float("nan"), "miou_2d": float("nan"), "again": str(kept / level)}
    return rig_and_score(row, asset, job, clean, colours, heat, tmp)


def score(asset, job: JobDir, heat: bool, tmp: Path) -> dict:
    skel = json.loads(job.skeleton_json.read_text())
    with np.load(job.weights_npz) as z:
        w, vpart = z["weights"].astype(np.float64), z["vertex_part"]
    v = asset.vertices.astype(np.float64)
    diag = float(np.linalg.norm(np.ptp(v, 0)))
    gt, n_gt = asset.labels, len(asset.names)
    deform = [b for b in skel["bones"] if b["deform"]]
    name_index = {b["name"]: i for i, b in enumerate(deform)}
    n_pred = len(deform)
    bone_part = np.array([b["part"] for b in deform])
    part_bone = {int(p): i for i, p in enumerate(bone_part)}
    pred = np.array([part_bone[int(p)] for p in vpart])
    parents = np.array([name_index.get(b["parent"], -1) for b in deform])
    joints_by_bone = {part_bone[j["part"]]: np.array(j["position"]) for j in skel["joints"]}
    heads = np.array([b["head"] for b in deform], np.float64)
    joints = np.array([joints_by_bone.get(i, heads[i]) for i in range(n_pred)])
    best, owner = metrics.matching(pred, gt, n_pred, n_gt)
    errs = metrics.joint_errors(joints_by_bone, best, asset.parents, asset.joints.astype(np.float64), diag)
    root_ok, par_ok, n_par = metrics.tree_correctness(parents, best, owner, asset.parents)
    truth_w = asset.weights if asset.weights is not None else metrics.one_hot(gt, n_gt)
    poses = metrics.random_poses(asset.parents, 5)
    gtj = asset.joints.astype(np.float64)
    row = {"miou": metrics.part_miou(pred, gt), "joint_mean_pct": float(np.nanmean(errs)) if len(errs) else 0.0,
           "joint_max_pct": float(np.nanmax(errs)) if len(errs) else 0.0, "root_ok": root_ok,
           "parents_ok": par_ok, "parents_n": n_par, "bone_count_err": abs(n_pred - n_gt),
           "deform_ours": metrics.deformation_error(v, truth_w, asset.parents, gtj, w, parents, joints, owner, poses,
                                                    diag),
           "methods": {m: sum(1 for j in skel["joints"] if j.get("method") == m)
                       for m in {j.get("method") for j in skel["joints"]}}}
    if "frames" in skel:
        row["clip_pct"] = clip_pct(asset, skel, w, [b["name"] for b in deform], diag)
    if heat and len(v) <= HEAT_MAX_VERTICES:
        hw = bone_heat(job.mesh_npz, skel, tmp)
        if hw is not None:
            row["deform_heat"] = metrics.deformation_error(v, truth_w, asset.parents, gtj, hw, parents, joints, owner,
                                                           poses, diag)
    return row


def clip_pct(asset, skel: dict, weights: np.ndarray, bones: list[str], diag: float) -> float:
    """metrics.clip_error of the rig's keyframes (skeleton.json ``frames``, object space) against
    the oracle's clip, frames 1.. (its motion about the true pivots commutes with the cameras'
    normalisation, a scale and a shift, so it is posed here in the asset's own space)."""
    from backend.sample.oracle import part_motion, pose_vertices

    v = asset.vertices.astype(np.float64)
    n_frames = len(skel["frames"])
    truth = [pose_vertices(v, asset.labels, part_motion(asset.parents, asset.joints.astype(np.float64), t, n_frames,
                                                        asset.axes), asset.weights) for t in range(1, n_frames)]
    frames = [np.array([f["bones"][b] for b in bones], np.float64) for f in skel["frames"][1:]]
    return metrics.clip_error(v, np.array(truth), weights, np.array(frames), diag)


def print_table(rows: list[dict]) -> None:
    head = (f"{'asset':18s} {'verts':>6s} {'parts':>5s} {'images':6s} {'2D':>4s} {'dec2D':>5s} {'mIoU':>5s} "
            f"{'joint%':>6s} {'max%':>5s} {'root':>4s} {'parents':>7s} {'bone±':>5s} {'def':>5s} {'heat':>5s} "
            f"{'T-def':>5s} {'T-heat':>6s} {'clip':>5s} {'parts s':>7s} {'rig s':>5s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        g = lambda k, f="{:.2f}", r=r: f.format(r[k]) if k in r else "-"  # noqa: E731
        print(f"{r['asset']:18s} {r['vertices']:6d} {r['parts']:5d} {r['images']:6s} {r['miou_2d']:4.2f} "
              f"{r['decoded_miou_2d']:5.2f} {r['miou']:5.3f} {r['joint_mean_pct']:6.2f} {r['joint_max_pct']:5.1f} "
              f"{'yes' if r['root_ok'] else 'NO':>4s} {r['parents_ok']:3d}/{r['parents_n']:<3d} "
              f"{r['bone_count_err']:5d} {r['deform_ours']:5.2f} {g('deform_heat'):>5s} "
              f"{g('deform_true_ours'):>5s} {g('deform_true_heat'):>6s} {g('clip_pct'):>5s} {r['t_parts']:7.1f} "
              f"{r['t_rig']:5.1f}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", help="comma-separated case names (default: all); " + ", ".join(ASSETS))
    ap.add_argument("--levels", default="clean,0.85,0.70", help="image levels: clean, 0.85, 0.70")
    ap.add_argument("--real", type=Path, help="folder of rigged models converted by rigged_asset_from_gltf.py")
    ap.add_argument("--no-bone-heat", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep", type=Path, help="keep the job folders here (default: a temporary folder)")
    ap.add_argument("--again", type=Path, help="a folder an earlier --keep filled: run the parts and rig "
                    "stages again on its images (the same noise) with this checkout's code")
    args = ap.parse_args()
    builders = {k: v[0] for k, v in ASSETS.items()}
    if args.cases:
        wanted = args.cases.split(",")
        wanted = [w for c in wanted for w in ((TWINS[c], c) if c in TWINS else (c,))]  # a twin runs first
        builders = {k: builders[k] for k in dict.fromkeys(wanted) if k in builders}
    if args.real:
        for p in sorted(args.real.glob("*.npz")):
            builders[f"real:{p.stem}"] = lambda p=p: asset_from_rig(p)
        if args.cases:
            builders = {k: b for k, b in builders.items() if k in args.cases.split(",") or k[5:] in args.cases}
    levels = args.levels.split(",")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    rows = []
    heat = not args.no_bone_heat
    with tempfile.TemporaryDirectory(prefix="bench-rig-") as d:
        tmp = Path(args.keep or d)
        tmp.mkdir(parents=True, exist_ok=True)
        prepared = {}
        for name, build in builders.items():
            if args.again:
                kept = args.again / name.replace(":", "_")
                if not kept.is_dir():
                    continue
                asset = build()
                twin = ASSETS[TWINS[name]][0]() if name in TWINS else asset  # a seam-split asset shows its twin's views
                colours = part_colours(twin.vertices, twin.labels, len(twin.names))
                for level in levels:
                    if (kept / level).is_dir():
                        rows.append(run_again(name, asset, colours, kept, level, heat, tmp))
                        print(f"done {name} {level}", file=sys.stderr, flush=True)
                continue
            asset = build()
            job, clean, colours = prepare(name.replace(":", "_"), asset, tmp,
                                          prepared.get(TWINS.get(name)))
            prepared[name] = (job, colours)
            truth = truth_rows(asset, job, heat, tmp)
            for level in levels:
                row = run_level(name, asset, job, clean, colours, level, heat, tmp)
                row.update(truth)
                rows.append(row)
                print(f"done {name} {level}: joint {row['joint_mean_pct']:.2f} % mIoU {row['miou']:.3f} "
                      f"rig {row['t_rig']:.1f} s", file=sys.stderr, flush=True)
    print_table(rows)
    for seams, twin in TWINS.items():
        for level in levels:
            a = [r for r in rows if r["asset"] == seams and r["images"] == level]
            b = [r for r in rows if r["asset"] == twin and r["images"] == level]
            if a and b:
                print(f"{seams} vs {twin} ({level}): mIoU {a[0]['miou']:.3f}/{b[0]['miou']:.3f}, joint "
                      f"{a[0]['joint_mean_pct']:.2f}/{b[0]['joint_mean_pct']:.2f} %, deformation "
                      f"{a[0]['deform_ours']:.2f}/{b[0]['deform_ours']:.2f} %")
    if args.out:
        args.out.write_text(json.dumps({"commit": commit, "cpu_count": os.cpu_count(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
