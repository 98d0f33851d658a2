"""Time the parts and rig stages on kept job folders (``scripts/bench_rig.py --keep DIR``): each
job is copied, its two stages forgotten and run again ``--repeat`` times; prints the wall and CPU
(process) seconds of each stage, the median over the repeats, the load average and the first 16
hex digits of the sha256 of the ``parts/labels.npz`` written (to check that two commits decode
the same labels). ``--stages parts`` times the parts stage alone.

    .venv/bin/python scripts/time_rig_stages.py DIR/quadruped/clean DIR/spider/clean [--repeat 3]

Run it from two worktrees in turn on the same folders to compare two commits on a shared machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.context import StageContext  # noqa: E402
from backend.generate import STAGES  # noqa: E402
from backend.jobdir import JobDir  # noqa: E402
from backend.rig.pipeline import run_parts, run_rig  # noqa: E402


def time_job(folder: Path, repeat: int, stages: tuple[str, ...] = ("parts", "rig")) -> tuple[dict, str]:
    """(median (wall, CPU) seconds of each of ``stages`` run on a copy of ``folder``, sha256 of
    the labels.npz written)."""
    runs = {"parts": run_parts, "rig": run_rig}
    times: dict[str, list[tuple[float, float]]] = {s: [] for s in stages}
    with tempfile.TemporaryDirectory(prefix="time-rig-") as d:
        job = JobDir(Path(d) / "job")
        shutil.copytree(folder, job.root)
        for _ in range(repeat):
            for stage in stages:
                job.invalidate_from(stage, STAGES)
                w0, c0 = time.perf_counter(), time.process_time()
                runs[stage](job, StageContext())
                times[stage].append((time.perf_counter() - w0, time.process_time() - c0))
        labels = hashlib.sha256(job.labels_npz.read_bytes()).hexdigest()[:16]
    med = {}
    for stage, ts in times.items():
        walls, cpus = sorted(t[0] for t in ts), sorted(t[1] for t in ts)
        med[stage] = (walls[len(walls) // 2], cpus[len(cpus) // 2])
    return med, labels


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("jobs", nargs="+", type=Path, help="job folders with views, mesh.npz and cameras.json")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stages", default="parts,rig", choices=["parts,rig", "parts"])
    args = ap.parse_args()
    for folder in args.jobs:
        med, labels = time_job(folder, args.repeat, tuple(args.stages.split(",")))
        cols = " ".join(f"{s} wall {w:.2f} cpu {c:.2f}" for s, (w, c) in med.items())
        print(f"{folder.parent.name}/{folder.name} {cols} load {os.getloadavg()[0]:.1f} labels {labels}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
