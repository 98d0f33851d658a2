"""A fresh install's first job against a warm compiled job, on one GPU (docs/perf.md).

With an empty inductor cache (a fresh install), in order:
1. Set Up's last step, ``python -m backend prepare`` (load, compile at the job's settings);
2. what Blender does with Warm Up on: ``python -m backend serve`` started, its ``warm`` request
   sent at once (the panel's first draw), timed from the start to its result, then a job sent
   and timed from the request to its result (``warm_serve``; skipped with ``--no-warm-serve``);
3. the first job: a new ``python -m backend generate JOB`` process, timed from its start to its
   exit (imports, CUDA start, the weights load, the compiled graphs loaded from the cache, the
   generation, the files written);
4. a warm job: one process runs two jobs, the second is timed (model loaded, graphs compiled);
   after each, what ``--diagnose``'s probe prints (counters, compile times, events) goes into the
   row as ``twice_first_probe`` and ``twice_warm_probe``.
The probe and two-job processes set up the CUDA allocator first, as ``python -m backend`` does.
The jobs are 4-frame clips of the sample creature at the recipe's settings with compile on, on
random weights of the real size read from a checkpoint on local disk (what a user's run reads).
Prints a table and writes JSON. With ``--work DIR`` the checkpoint, the compile cache and the
results so far stay in DIR and a later run skips the phases already measured there, so the bench
can span several device calls (a cold ``prepare`` of saved graphs may take most of one).

    python scripts/bench_first_job.py [--steps 50] [--precision fp16] [--out rows.json] [--work DIR]
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
sys.path.insert(0, str(ROOT / "scripts"))

from backend.allocator import allocator_config  # noqa: E402  (torch-free: before torch starts CUDA)


def timed(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return dt, r


def start_backend() -> float:
    """A job process's start as ``python -m backend`` makes it: the CUDA allocator set up before
    torch starts CUDA (backend/allocator.py), then torch and the backend imported; their seconds."""
    allocator_config()
    t0 = time.perf_counter()
    import torch  # noqa: F401

    import backend.context  # noqa: F401
    import backend.jobdir  # noqa: F401
    import backend.stages  # noqa: F401

    return time.perf_counter() - t0


def twice(first: str, second: str) -> None:
    """Two generate jobs in this process; prints the seconds of each (``TIME``) and, after each, what
    ``probe`` prints (``TWICE_PROBE name {json}``), dynamo/inductor's counters and compile times
    cleared between the two jobs so that the second's are its own."""
    imports_s = start_backend()
    for name, job in (("in_process_first", first), ("warm", second)):
        if name == "warm":
            clear_diagnosis()
        out = probed_job(job)
        print(f"TIME {name} {out['job_s']:.3f}", flush=True)
        if name == "in_process_first":
            out = {"imports_s": imports_s, **out}
        print(f"TWICE_PROBE {name} " + json.dumps(out), flush=True)


def resume_clash(row: dict, setup: dict) -> dict:
    """What a ``--work`` folder's results (``row``) measured differently from this run's ``setup``
    (the card, the settings): {name: (theirs, ours)}; empty when the bench may resume there."""
    return {k: (row[k], v) for k, v in setup.items() if k in row and row[k] != v}


def warm_serve(job: str, settings: dict, env: dict) -> dict:
    """Blender's Warm Up (sp4d_blender/warmup.py) as its client speaks it: a new ``serve`` process,
    ``warm`` at the job's settings sent at once, then the job (``generate``) once it is warm.
    Seconds from the process's start to the warm-up's result, and from the job's request to its
    result."""
    proc = subprocess.Popen([sys.executable, "-u", "-m", "backend", "serve"], cwd=str(ROOT), env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def ask(rid: str, cmd: str, **fields) -> dict:
        proc.stdin.write(json.dumps({"id": rid, "cmd": cmd, **fields}) + "\n")
        proc.stdin.flush()
        for line in proc.stdout:
            ev = json.loads(line)
            if ev.get("id") == rid and ev.get("event") in ("result", "error"):
                if ev["event"] == "error":
                    raise SystemExit(f"{cmd} failed: {ev}")
                return ev["data"]
        raise SystemExit(f"the backend exited during {cmd} ({proc.wait()})")

    t0 = time.perf_counter()
    try:
        warm = ask("w", "warm", settings=settings)
        if not warm.get("warmed"):
            raise SystemExit(f"the warm-up did not warm: {warm}")
        warm_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        ask("j", "generate", job=job)
        return {"warm_up_s": warm_s, "warm_up": warm, "job_after_warm_up_s": time.perf_counter() - t1}
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def probed_job(job: str) -> dict:
    """One generate job in this process, as ``python -m backend generate`` runs it, and where its
    time went: the seconds of each progress event from the job's start (the model load ends at the
    first step's start; the first step carries the graphs' loading), and dynamo/inductor's counters
    (cache hits and misses, graphs, recompiles) and compile times so far in this process."""
    from backend.context import StageContext
    from backend.jobdir import JobDir
    from backend.stages import run_command

    events = []
    t1 = time.perf_counter()
    ctx = StageContext(lambda e: events.append((round(time.perf_counter() - t1, 2), e.get("message", ""))))
    run_command("generate", JobDir(job), ctx)
    job_s = time.perf_counter() - t1
    import torch
    from torch._dynamo.utils import compile_times, counters

    from backend.sp4d.precompiled import STORES

    steps = [t for t, m in events if m.startswith("denoising step")]
    return {"job_s": job_s, "first_step_at_s": steps[0] if steps else None,
            "step_times_s": [round(b - a, 3) for a, b in zip(steps, steps[1:], strict=False)],
            "events": [e for e in events if not e[1].startswith("denoising step")],
            "counters": {k: dict(v) for k, v in counters.items() if v},
            "saved_graphs": [st.stats for st in STORES],
            "compile_times": compile_times(repr="str", aggregate=True),
            "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
            "max_reserved_gib": round(torch.cuda.max_memory_reserved() / 2 ** 30, 2)
            if torch.cuda.is_available() else None}


def clear_diagnosis() -> None:
    """Dynamo/inductor's counters, compile times and the peak of reserved memory back to none, so
    that the next job's are its own."""
    import torch
    from torch._dynamo import utils

    utils.counters.clear()
    utils.compilation_time_metrics.clear()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def probe(job: str) -> None:
    """One generate job in this (new) process, as ``python -m backend generate`` runs it (the
    allocator set up first), printing where its time went (``probed_job``) and the imports' time."""
    imports_s = start_backend()
    print("PROBE " + json.dumps({"imports_s": imports_s, **probed_job(job)}), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--size", type=int, default=576)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--twice", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    ap.add_argument("--diagnose", action="store_true",
                    help="also run the first job and the next process's first job under a probe that "
                         "prints where the time goes (events, counters, compile times)")
    ap.add_argument("--probes", type=int, default=2, help="with --diagnose: 1 (the first job) or 2 (and the next "
                    "process's)")
    ap.add_argument("--compiled-graphs", default="traced", choices=("traced", "saved"))
    ap.add_argument("--no-warm-serve", action="store_true", help="skip the Warm Up phase (serve, warm, a job)")
    ap.add_argument("--work", type=Path, help="keep the checkpoint, the compile cache and the results so far "
                    "here; phases already measured there are skipped")
    args = ap.parse_args()
    if args.probe:
        probe(args.probe)
        return 0
    if args.twice:
        twice(*args.twice)
        return 0
    import torch

    if not torch.cuda.is_available():
        print("bench_first_job.py needs a CUDA GPU", file=sys.stderr)
        return 2
    from bench_batch_ray import clip_jobs, random_checkpoint

    work = args.work or Path(tempfile.mkdtemp(prefix="first-job-"))
    work.mkdir(parents=True, exist_ok=True)
    saved_row = work / "row.json"
    row = json.loads(saved_row.read_text()) if saved_row.exists() else {}

    def record(**kv) -> None:  # the results so far, kept after every phase
        row.update(kv)
        saved_row.write_text(json.dumps(row, indent=1))

    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(work / "inductor"))  # a fresh install's empty cache
    weights = work / "random.safetensors"
    if not weights.exists():
        t0 = time.perf_counter()
        shutil.move(random_checkpoint(None, "cuda"), weights)
        record(write_checkpoint_s=time.perf_counter() - t0)
    setup = dict(gpu=torch.cuda.get_device_name(0), compiled_graphs=args.compiled_graphs, steps=args.steps,
                 precision=args.precision, size=args.size, diagnose=args.diagnose)
    clash = resume_clash(row, setup)
    if clash:  # a resumed bench must measure the same thing on the same card
        print(f"{work} holds results of another set-up: {clash}", file=sys.stderr)
        return 2
    record(**setup, checkpoint_gib=weights.stat().st_size / 2 ** 30)
    settings = {"part_source": "sp4d", "weights": str(weights), "steps": args.steps, "image_size": args.size,
                "precision": args.precision, "compile": "layers", "compiled_graphs": args.compiled_graphs}
    py = sys.executable
    flags = ["--weights", str(weights), "--precision", args.precision, "--image-size", str(args.size),
             "--compile", "layers", "--compiled-graphs", args.compiled_graphs]

    def jobs(phase: str, n: int) -> list[str]:  # new job folders for each phase (a rerun starts clean)
        root = work / "jobs" / phase
        shutil.rmtree(root, ignore_errors=True)
        return clip_jobs(root, n, settings)

    def begin(phase: str) -> None:  # a phase cut short leaves the cache warmer: its rerun is marked as such
        if row.get(f"{phase}_started"):
            record(**{f"{phase}_rerun": True})
            print(f"{phase} was cut short before: this measurement starts from its leftovers", flush=True)
        record(**{f"{phase}_started": True})

    if "prepare_s" not in row:
        begin("prepare")
        dt, r = timed([py, "-m", "backend", "prepare", *flags], env)
        record(prepare_s=dt, prepare=json.loads(r.stdout[r.stdout.index("{"):]))
        print("prepare", round(dt, 1), flush=True)
    # Warm Up first: what an artist gets after Set Up, and the phase no earlier call measured
    if not args.no_warm_serve and "job_after_warm_up_s" not in row:
        begin("warm_serve")
        record(**warm_serve(jobs("warm_serve", 1)[0], settings, env))
    if args.diagnose:  # the first job and the next process's, each under the probe
        for name in ("probe_first", "probe_second")[:args.probes]:
            if name in row:
                continue
            begin(name)
            dt, r = timed([py, __file__, "--probe", jobs(name, 1)[0]], env)
            line = next(x for x in r.stdout.splitlines() if x.startswith("PROBE "))
            record(**{f"{name}_process_s": dt, name: json.loads(line[len("PROBE "):])})
            print(name, round(dt, 1), json.dumps(row[name])[:4000], flush=True)
        row["first_job_process_s"] = row["probe_first_process_s"]
    elif "first_job_process_s" not in row:
        begin("first_job")
        dt, _ = timed([py, "-m", "backend", "generate", jobs("first", 1)[0]], env)
        record(first_job_process_s=dt)
    if "warm_s" not in row:
        begin("warm")
        _, r = timed([py, __file__, "--twice", *jobs("twice", 2)], env)
        for line in r.stdout.splitlines():
            if line.startswith("TIME "):
                _, name, sec = line.split()
                row[f"{name}_s"] = float(sec)
            elif line.startswith("TWICE_PROBE "):  # each job's counters, compile times, events
                _, name, data = line.split(" ", 2)
                key = {"in_process_first": "twice_first_probe", "warm": "twice_warm_probe"}[name]
                row[key] = json.loads(data)
                print(key, json.dumps(row[key])[:4000], flush=True)
        record()
    record(first_over_warm=row["first_job_process_s"] / row["warm_s"])
    if "job_after_warm_up_s" in row:
        record(after_warm_up_over_warm=row["job_after_warm_up_s"] / row["warm_s"])
    print(json.dumps(row, indent=1))
    print("\nSet Up's compile | first job (new process) | warm compiled job | first / warm")
    print(f"{row['prepare_s']:.1f} s | {row['first_job_process_s']:.1f} s | {row['warm_s']:.1f} s | "
          f"{row['first_over_warm']:.2f}")
    if "job_after_warm_up_s" in row:
        print("\nWarm Up (serve, warm at its start) | first job after it | its / warm")
        print(f"{row['warm_up_s']:.1f} s | {row['job_after_warm_up_s']:.1f} s | {row['after_warm_up_over_warm']:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
