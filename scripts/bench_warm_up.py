"""Blender's Warm Up again on a compile cache that ``bench_first_job.py --work DIR`` left, at any
step count (the compiled graphs do not depend on it), against a warm job (docs/perf.md row 57).

``--runs`` times a new ``serve`` process each: its ``warm`` request from the start, then a job sent
once it is warm; then one process runs two jobs and the second is timed warm. Prints a table and
writes JSON. Needs a CUDA GPU and DIR's ``random.safetensors`` and ``inductor`` cache.

    python scripts/bench_warm_up.py --work out/fj --steps 50 [--runs 2] [--out warm_up.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--size", type=int, default=576)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from bench_batch_ray import clip_jobs
    from bench_first_job import warm_serve

    weights = args.work / "random.safetensors"
    if not weights.exists() or not (args.work / "inductor").is_dir():
        print(f"{args.work} has no checkpoint or compile cache: run bench_first_job.py --work there first",
              file=sys.stderr)
        return 2
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(args.work / "inductor"))
    settings = {"part_source": "sp4d", "weights": str(weights), "steps": args.steps, "image_size": args.size,
                "precision": args.precision, "compile": "layers", "compiled_graphs": "traced"}
    runs = []
    for i in range(args.runs):
        job = clip_jobs(args.work / "jobs" / f"warm_up_{args.steps}_{i}", 1, settings)[0]
        runs.append(warm_serve(job, settings, env))
        print("warm up", i, json.dumps(runs[-1]), flush=True)
    jobs = clip_jobs(args.work / "jobs" / f"twice_{args.steps}", 2, settings)
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_first_job.py"), "--twice", *jobs], env=env,
                       capture_output=True, text=True, check=True)
    times = {ln.split()[1]: float(ln.split()[2]) for ln in r.stdout.splitlines() if ln.startswith("TIME ")}
    row = {"steps": args.steps, "warm_serve": runs, **{f"{k}_s": v for k, v in times.items()},
           "after_warm_up_over_warm": [x["job_after_warm_up_s"] / times["warm"] for x in runs]}
    print("\nWarm Up (serve, warm at its start) | job after it | warm job | its / warm")
    for x, q in zip(runs, row["after_warm_up_over_warm"], strict=True):
        print(f"{x['warm_up_s']:.1f} s | {x['job_after_warm_up_s']:.1f} s | {times['warm']:.1f} s | {q:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
