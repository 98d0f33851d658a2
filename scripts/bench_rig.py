"""Rig benchmark: procedural assets with ground truth, oracle part images (clean and degraded),
our rigging stages and Blender's bone heat on the same skeleton. Prints one table.

    .venv/bin/python scripts/bench_rig.py [--quick] [--no-bone-heat] [--out docs/measurements/bench_rig.json]

Columns: part mIoU on the mesh; joint Chamfer distance (% of the bounding-box diagonal); bone-count
error; weights L1 against the rigid ground truth (one-hot parts); deformation error of linear
blend skinning under 5 random poses against the rigid ground truth (% of the diagonal), for our
weights and for bone heat; and the time of each stage (oracle rendering, part decoding, lifting +
skeleton, weights, bone heat). Bone heat runs in .venv-blender-4.5 (scripts/setup_env.sh).
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
from backend.generate import run_generate  # noqa: E402
from backend.jobdir import JobDir, read_png, write_png_atomic  # noqa: E402
from backend.parts.encoding import part_colours  # noqa: E402
from backend.rig import metrics  # noqa: E402
from backend.rig.pipeline import run_parts, run_rig  # noqa: E402
from backend.sample.assets import ASSETS, build_asset  # noqa: E402
from backend.sample.degrade import degrade_part_image, swap_part_colour  # noqa: E402

BLENDER_PY = ROOT / ".venv-blender-4.5" / "bin" / "python"
# (asset, marching-cubes resolution, subdivisions)
CASES = [("quadruped", 96, 0), ("biped", 96, 0), ("serpent", 140, 0), ("robot_arm", 90, 0), ("lidded_box", 60, 0),
         ("quadruped", 96, 1), ("quadruped", 96, 2), ("quadruped", 130, 2)]
QUICK = [("quadruped", 96, 0), ("lidded_box", 60, 0)]


def degrade_job(job: JobDir, asset, seed: int = 0) -> None:
    cams = json.loads(job.cameras_json.read_text())
    rng = np.random.default_rng(seed)
    cols = part_colours(asset.vertices, asset.labels, len(asset.names))
    bad_view, a, b = 5, 1 % len(cols), (2 % len(cols))
    for t in range(cams["frames"]):
        for v in range(len(cams["views"])):
            p = job.view_image("parts", v, t)
            img = read_png(p)
            if v == bad_view and len(cols) > 2:
                img = swap_part_colour(img, cols[a], cols[b])
            write_png_atomic(p, degrade_part_image(img, rng))


def timed_stages(fn, job: JobDir) -> dict[str, float]:
    marks: list[tuple[str, float]] = []
    ctx = StageContext(lambda e: marks.append((e["message"], time.perf_counter())))
    t0 = time.perf_counter()
    fn(job, ctx)
    marks.append(("end", time.perf_counter()))
    out, prev = {}, t0
    for msg, t in marks:
        out[msg] = t - prev
        prev = t
    return out


def bone_heat(job: JobDir, tmp: Path) -> tuple[np.ndarray, float] | None:
    if not BLENDER_PY.exists():
        return None
    out = tmp / "heat.npz"
    r = subprocess.run([str(BLENDER_PY), str(ROOT / "scripts" / "blender_bone_heat.py"), str(job.mesh_npz),
                        str(job.skeleton_json), str(out)], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        print(r.stderr[-2000:], file=sys.stderr)
        return None
    with np.load(out) as z:
        return z["weights"], float(z["seconds"])


HEAT_MAX_VERTICES = 130_000  # bone heat beyond this takes long and fails anyway (docs/rig.md)


def run_case(name: str, res: int, sub: int, noisy: bool, heat: bool, tmp: Path) -> dict:
    asset = build_asset(ASSETS[name], res, subdivisions=sub)
    heat = heat and len(asset.vertices) <= HEAT_MAX_VERTICES
    job = JobDir(tmp / f"{name}-{res}-{sub}-{'noisy' if noisy else 'clean'}")
    shutil.rmtree(job.root, ignore_errors=True)
    job.create({"kind": "mesh"}, {"part_source": "oracle", "max_influences": 4})
    job.write_mesh(asset.vertices, asset.faces, gt_labels=asset.labels, gt_parents=asset.parents,
                   gt_joints=asset.joints, gt_axes=asset.axes)
    t0 = time.perf_counter()
    run_generate(job, StageContext())
    t_render = time.perf_counter() - t0
    if noisy:
        degrade_job(job, asset)
    t0 = time.perf_counter()
    run_parts(job, StageContext())
    t_parts = time.perf_counter() - t0
    stage = timed_stages(run_rig, job)
    t_lift = sum(v for k, v in stage.items() if k in ("lifting parts onto the mesh", "building the skeleton",
                                                       "harmonic skinning weights"))
    t_weights = sum(v for k, v in stage.items() if k.endswith("bones") or k == "end")
    skel = json.loads(job.skeleton_json.read_text())
    with np.load(job.weights_npz) as z:
        w, vpart = z["weights"], z["vertex_part"]
    v = asset.vertices.astype(np.float64)
    diag = float(np.linalg.norm(np.ptp(v, 0)))
    gt, n_gt = asset.labels, len(asset.names)
    deform = [b for b in skel["bones"] if b["deform"]]
    bone_parts = np.array([b["part"] for b in deform])
    poses = metrics.random_poses(asset.parents, asset.joints.astype(np.float64), 5)
    w_ours = metrics.weights_per_gt_part(w, bone_parts, vpart, gt, n_gt)
    row = {"asset": name, "vertices": len(v), "parts": n_gt, "parts_images": "noisy" if noisy else "clean",
           "miou": metrics.part_miou(vpart, gt),
           "joint_err_pct": metrics.joint_chamfer(np.array([j["position"] for j in skel["joints"]]).reshape(-1, 3),
                                                  asset.joints[asset.parents >= 0], diag),
           "bone_count_err": abs(len(deform) - n_gt),
           "weights_l1": metrics.weights_l1(w_ours, gt),
           "deform_err_pct": metrics.deformation_error(v, gt, w_ours, poses, diag),
           "t_render": t_render, "t_parts": t_parts, "t_lift_skeleton": t_lift, "t_weights": t_weights}
    if heat:
        hb = bone_heat(job, tmp)
        if hb is not None:
            w_heat = metrics.weights_per_gt_part(hb[0], bone_parts, vpart, gt, n_gt)
            empty = int((hb[0].sum(1) == 0).sum())
            hn = w_heat / np.maximum(w_heat.sum(1, keepdims=True), 1e-12)
            row.update(heat_weights_l1=metrics.weights_l1(hn, gt),
                       heat_deform_err_pct=metrics.deformation_error(v, gt, w_heat, poses, diag),
                       heat_unweighted_vertices=empty, t_bone_heat=hb[1])
    return row


def print_table(rows: list[dict]) -> None:
    head = (f"{'asset':11s} {'verts':>7s} {'parts':>5s} {'images':6s} {'mIoU':>5s} {'joint%':>6s} {'bone±':>5s} "
            f"{'L1':>5s} {'L1heat':>6s} {'def%':>5s} {'defheat%':>8s} {'unw.heat':>8s} "
            f"{'render':>6s} {'parts':>6s} {'lift':>6s} {'weights':>7s} {'heat':>6s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        g = lambda k, f="{:.2f}", r=r: f.format(r[k]) if k in r else "-"  # noqa: E731
        print(f"{r['asset']:11s} {r['vertices']:7d} {r['parts']:5d} {r['parts_images']:6s} {r['miou']:5.3f} "
              f"{r['joint_err_pct']:6.2f} {r['bone_count_err']:5d} {r['weights_l1']:5.3f} "
              f"{g('heat_weights_l1', '{:.3f}'):>6s} "
              f"{r['deform_err_pct']:5.2f} {g('heat_deform_err_pct'):>8s} {g('heat_unweighted_vertices', '{:d}'):>8s} "
              f"{r['t_render']:6.1f} {r['t_parts']:6.1f} {r['t_lift_skeleton']:6.1f} {r['t_weights']:7.2f} "
              f"{g('t_bone_heat', '{:.1f}'):>6s}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="two small cases only")
    ap.add_argument("--no-bone-heat", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cases = QUICK if args.quick else CASES
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-rig-") as d:
        for name, res, sub in cases:
            for noisy in ((False, True) if sub == 0 else (False,)):
                rows.append(run_case(name, res, sub, noisy, not args.no_bone_heat, Path(d)))
                print(f"done {name} {rows[-1]['vertices']} {'noisy' if noisy else 'clean'}", file=sys.stderr,
                      flush=True)
    print_table(rows)
    if args.out:
        args.out.write_text(json.dumps({"commit": commit, "cpu_count": os.cpu_count(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
