"""Throughput of a batch on Ray (backend/batch); prints a table (docs/perf.md, docs/batch.md).

  python scripts/bench_batch_ray.py cpu [--items 6] [--rounds 2] [--workers 1 2]
      the oracle path of .blend files with the sample creature (capture, generate, parts, rig,
      build: the whole batch) on a local cluster of 1 and 2 CPUs, interleaved round by round
  python scripts/bench_batch_ray.py gpu [--items 3] [--steps 10] [--weights random|PATH] [--config YAML]
      generation with SP4D: the sequential CLI (`python -m backend generate JOB`, a process and a
      model load per item) against one model worker that keeps the model loaded (a Ray actor; the
      same class in this process where Ray is not installed). `random`: a checkpoint of the model's
      size with random weights, written once to a temporary file.

`cpu` needs the Blender venv (SP4D_BLENDER_PYTHON, default .venv-blender-4.5); `gpu` needs CUDA
unless --device cpu (the tiny config, for a smoke test).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.batch.plan import Request  # noqa: E402


def table(rows: list[dict], cols: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    line = lambda vals: "| " + " | ".join(str(v).ljust(w) for v, w in zip(vals, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line([r.get(c, "") for c in cols]) for r in rows])


def run_batch(req: Request, workers: int) -> float:
    """One batch on a fresh local cluster of ``workers`` CPUs; seconds from the cluster's start
    to the last item's end (the cluster's own start not counted)."""
    import ray

    from backend.batch.driver import Batch

    ray.init(num_cpus=workers, log_to_driver=False)
    try:
        t0 = time.monotonic()
        code = Batch(ray, req).run()
        seconds = time.monotonic() - t0
    finally:
        ray.shutdown()
    if code != 0:
        raise SystemExit(f"the batch failed: {req.out / 'report.json'}")
    return seconds


def bench_cpu(args) -> list[dict]:
    blender = os.environ.get("SP4D_BLENDER_PYTHON", str(ROOT / ".venv-blender-4.5" / "bin" / "python"))
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    env = dict(os.environ, SP4D_BACKEND_PYTHON=sys.executable)
    r = subprocess.run([blender, str(ROOT / "scripts" / "batch_bpy.py"), "sample", str(work / "in"),
                        "--files", str(args.items)], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(r.stdout + r.stderr)
    files = sorted(str(p) for p in (work / "in").glob("asset*.blend"))
    rows = []
    for rnd in range(args.rounds):
        order = args.workers if rnd % 2 == 0 else args.workers[::-1]  # interleaved: the load drifts
        for w in order:
            out = work / f"out-{rnd}-{w}"
            req = Request.from_dict({"out": str(out), "files": files, "settings": {"part_source": "oracle"},
                                     "blender": {"python": blender}})
            load = os.getloadavg()[0]
            s = run_batch(req, w)
            rows.append({"round": rnd + 1, "CPU workers": w, "items": len(files), "seconds": round(s, 1),
                         "items/min": round(len(files) / s * 60, 2), "load before": round(load, 2)})
            print(json.dumps(rows[-1]), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    base = {r["round"]: r["items/min"] for r in rows if r["CPU workers"] == min(args.workers)}
    for r in rows:
        r["× 1 worker"] = round(r["items/min"] / base[r["round"]], 2)
    return rows


def random_checkpoint(config: str | None, device: str) -> Path:
    """A safetensors file of the model's size with random weights in bf16 (every key the loader
    checks, the conditioner's unused decoders too)."""
    import torch
    from safetensors.torch import save_file

    from backend.sp4d.checkpoint import build_model, load_config
    from backend.sp4d.testing import random_init_

    model = build_model(load_config(config) if config else load_config(), "meta")
    model.to_empty(device=device)
    random_init_(model)
    dtype = torch.bfloat16 if device != "cpu" else torch.float32
    path = Path(tempfile.mkdtemp(prefix="bench-weights-")) / "random.safetensors"
    save_file({k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}, str(path))
    del model
    return path


def clip_jobs(root: Path, n: int, settings: dict) -> list[str]:
    """n clip jobs of the sample creature's oracle frames (its input view, 4 frames)."""
    from backend.context import StageContext
    from backend.generate import run_generate
    from backend.jobdir import JobDir
    from backend.sample.assets import make_creature

    c = make_creature()
    src = JobDir(root / "oracle")
    src.create({"kind": "mesh", "object": "creature"}, {"part_source": "oracle", "image_size": settings["image_size"]})
    src.write_mesh(c.vertices, c.faces, gt_labels=c.labels, gt_parents=c.parents, gt_joints=c.joints)
    run_generate(src, StageContext())
    frames = root / "frames"
    frames.mkdir()
    for t in range(4):
        shutil.copy(src.input_frame(t), frames / f"frame_{t}.png")
    jobs = []
    for k in range(n):
        job = JobDir(root / f"clip{k}")
        job.create({"kind": "clip", "path": str(frames)}, {**settings, "seed": k})
        jobs.append(str(job.root))
    return jobs


def worker_times(jobs: list[str], out: Path) -> tuple[str, list[float], list, float]:
    """The jobs' generation on one model worker: a Ray actor, else (no Ray, or a Ray that does not
    start here) the same class in this process. (how, seconds per item, model per item, total)."""
    try:
        import ray

        from backend.batch.driver import Batch

        ray.init(num_cpus=2, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - measured without Ray then, and said so
        print(f"no Ray here ({type(exc).__name__}: {exc}); the model worker runs in this process", flush=True)
    else:
        try:
            t0 = time.monotonic()
            code = Batch(ray, Request.from_dict({"out": str(out), "jobs": jobs, "command": "generate",
                                                 "model_workers": 1})).run()
            total = time.monotonic() - t0
        finally:
            ray.shutdown()
        rep = sorted(json.loads((out / "report.json").read_text()), key=lambda e: e["key"])
        if code:
            raise SystemExit(json.dumps(rep)[-3000:])
        return "one model worker (Ray actor)", [e["seconds"] for e in rep], [e["stages"].get("model") for e in rep], \
            total
    from backend.batch.work import ModelWorker

    t0 = time.monotonic()
    w, per, models = ModelWorker(), [], []
    for job in jobs:
        res = w.run(job, ["generate"])
        if not res["ok"]:
            raise SystemExit(json.dumps(res["error"]))
        per.append(res["seconds"])
        models.append(res["model"])
    return "one model worker (in process: no Ray)", per, models, time.monotonic() - t0


def bench_gpu(args) -> list[dict]:
    t = time.monotonic()
    weights = random_checkpoint(args.config, args.device) if args.weights == "random" else Path(args.weights)
    made = time.monotonic() - t
    print(f"weights {weights} ({weights.stat().st_size / 2**30:.2f} GiB, made in {made:.1f} s)", flush=True)
    settings = {"part_source": "sp4d", "weights": str(weights), "model_config": args.config, "device": args.device,
                "steps": args.steps, "image_size": args.size, "precision": args.precision}
    work = Path(tempfile.mkdtemp(prefix="bench-batch-gpu-"))
    rows = []
    jobs = clip_jobs(work / "cli", args.items, settings)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    per = []
    for job in jobs:
        t = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "backend", "generate", job], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        per.append(time.monotonic() - t)
        print(f"cli {job}: {per[-1]:.1f} s", flush=True)
    cli = time.monotonic() - t0
    rows.append({"mode": "sequential CLI (a process per item)", "items": len(jobs), "seconds": round(cli, 1),
                 "first item s": round(per[0], 1), "later items s": round(sum(per[1:]) / max(len(per) - 1, 1), 1)})
    jobs = clip_jobs(work / "worker", args.items, settings)
    how, per, models, total = worker_times(jobs, work / "worker-out")
    print(f"worker: {[round(p, 1) for p in per]} s, model {models}", flush=True)
    rows.append({"mode": how, "items": len(jobs), "seconds": round(total, 1), "first item s": round(per[0], 1),
                 "later items s": round(sum(per[1:]) / max(len(per) - 1, 1), 1)})
    for r in rows:
        r["items/min"] = round(r["items"] / r["seconds"] * 60, 2)
    shutil.rmtree(work, ignore_errors=True)
    if args.weights == "random":
        shutil.rmtree(weights.parent, ignore_errors=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["cpu", "gpu"])
    ap.add_argument("--items", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=576)
    ap.add_argument("--weights", default="random")
    ap.add_argument("--config", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--out", type=Path, help="the rows as JSON")
    args = ap.parse_args()
    if args.mode == "cpu":
        args.items = args.items or 6
        rows = bench_cpu(args)
        cols = ["round", "CPU workers", "items", "seconds", "items/min", "× 1 worker", "load before"]
    else:
        args.items = args.items or 3
        rows = bench_gpu(args)
        cols = ["mode", "items", "seconds", "first item s", "later items s", "items/min"]
    print(table(rows, cols))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
