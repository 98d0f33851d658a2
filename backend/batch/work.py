"""What a batch's workers run: stages on job folders, the model worker, Blender worker processes.

Plain functions and a plain class (the driver wraps them as Ray tasks and actors), so each runs
and is tested without Ray. A stage's failure comes back as a result with the backend's error code
(``ok`` false), never as an exception: an exception out of here means the worker itself broke. An
item's log (OUT/logs/<item>.log) gets a line per try, stage and error, with the node and process,
from whichever node runs it: the logs live on the batch's shared storage.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from ..context import StageContext
from ..errors import BackendError, from_exception
from ..jobdir import JobDir
from ..stages import REGISTRY

BPY_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "batch_bpy.py"
RESULT_MARK = "batch-result: "  # the Blender worker's last stdout line: this, then its JSON result
RETRY_CODES = ("backend_died", "internal", "out_of_memory")  # worth another try; bad_input etc. are not


def here() -> dict:
    """Where this runs: host, Ray node (when in Ray) and process."""
    node = None
    if "ray" in sys.modules:
        try:
            node = sys.modules["ray"].get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - outside a Ray worker
            node = None
    return {"host": socket.gethostname(), "node": node, "pid": os.getpid()}


class ItemLog:
    """Appends timestamped lines to an item's log; stage progress at most every ``every`` s."""

    def __init__(self, path: str | os.PathLike | None, every: float = 10.0):
        self.path = Path(path) if path else None
        self.every = every
        self._last: dict[str, float] = {}

    def write(self, text: str) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def progress(self, e: dict) -> None:
        now = time.monotonic()
        if e["step"] < e["total"] and now - self._last.get(e["stage"], -1e9) < self.every:
            return
        self._last[e["stage"]] = now
        eta = f" (ETA {e['eta_s']:.0f} s)" if e.get("eta_s") else ""
        self.write(f"  [{e['stage']}] {e['step']}/{e['total']} {e['message']}{eta}")


def _finished(job: JobDir, stage: str) -> float | None:
    rec = job.read_status()["stages"].get(stage) or {}
    return rec.get("finished") if rec.get("done") else None


def run_stages(job_dir: str, stages: list[str], log_path: str | None = None, attempt: int = 1,
               timeout: float | None = None) -> dict:
    """Run ``stages`` (in order) on a job folder; finished stages are reused by their digests.

    Returns {"ok", "stages": {stage: "ran" | "reused"}, "seconds", "where"} and, on failure,
    "error": {"code", "message"}, "stage". ``timeout`` (seconds) cancels the running stage."""
    log, job, where = ItemLog(log_path), JobDir(job_dir), here()
    log.write(f"try {attempt}: {', '.join(stages)} on {where['host']} (node {where['node']}, pid {where['pid']})")
    ctx = StageContext(log.progress)
    timer = threading.Timer(timeout, ctx.cancel_event.set) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    t0, done, stage = time.monotonic(), {}, None
    try:
        for stage in stages:
            before = _finished(job, stage)
            log.write(f"{stage}: started")
            t = time.monotonic()
            REGISTRY[stage](job, ctx)
            after = _finished(job, stage)
            done[stage] = "reused" if after is not None and after == before else "ran"
            log.write(f"{stage}: {done[stage]} ({time.monotonic() - t:.1f} s)")
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the item's error
        err = from_exception(exc)
        if err.code == "cancelled" and timer is not None and not timer.is_alive():
            err = BackendError("cancelled", f"timed out after {timeout:g} s in the {stage} stage")
        if err.code == "internal":
            log.write(traceback.format_exc().rstrip())
        log.write(f"{stage}: failed [{err.code}] {err.message}")
        try:
            job.update_status(error=err.to_dict())
        except OSError:
            pass
        return {"ok": False, "stages": done, "stage": stage, "error": err.to_dict(),
                "seconds": time.monotonic() - t0, "where": where}
    finally:
        if timer:
            timer.cancel()
    return {"ok": True, "stages": done, "seconds": time.monotonic() - t0, "where": where}


def _loaded_model() -> object | None:
    """The model this process holds (backend.sp4d.runtime keeps one), without importing torch."""
    runtime = sys.modules.get("backend.sp4d.runtime")
    return runtime.loaded_pipeline() if runtime is not None else None


class ModelWorker:
    """Generation in a process that keeps the SP4D model loaded between items (one per GPU).

    The model lives in backend.sp4d.runtime's cache of this process, as in ``python -m backend
    serve``; each result says whether this item loaded it ("loaded") or found it ("warm")."""

    def __init__(self):
        from ..allocator import allocator_config

        allocator_config()  # this worker process's CUDA allocator as the memory tiers expect
        self.items = 0
        self.loads = 0

    def where(self) -> dict:
        return here()

    def run(self, job_dir: str, stages: list[str], log_path: str | None = None, attempt: int = 1,
            timeout: float | None = None) -> dict:
        before = _loaded_model()
        out = run_stages(job_dir, stages, log_path, attempt, timeout)
        after = _loaded_model()
        self.items += 1
        if after is not None and after is not before:
            self.loads += 1
        out["model"] = None if after is None else ("loaded" if after is not before else "warm")
        out["worker"] = {"items": self.items, "loads": self.loads}
        return out


def node_check(out: str, token: str, blender: dict | None) -> dict:
    """What a node sees: the batch's folder (shared storage: the token file the driver wrote),
    and the Blender interpreter (when the batch needs one)."""
    problems = []
    if not (Path(out) / token).is_file():
        problems.append(f"does not see {out} (the batch's folder must be on storage every node mounts "
                        "at the same path)")
    exe = (blender or {}).get("python") or (blender or {}).get("binary")
    if exe and not Path(exe).is_file():
        problems.append(f"has no Blender worker interpreter {exe}")
    return {**here(), "problems": problems}


def bpy_command(blender: dict, args: list[str]) -> list[str]:
    """The command that runs scripts/batch_bpy.py with ``args`` in a Blender process."""
    if blender.get("binary"):
        return [blender["binary"], "-b", "--factory-startup", "--python-exit-code", "1", "-P", str(BPY_SCRIPT),
                "--", *args]
    return [blender["python"], str(BPY_SCRIPT), *args]


def run_bpy(blender: dict, args: list[str], log_path: str, attempt: int = 1, timeout: float | None = None) -> dict:
    """Run one Blender worker process (a capture or a build of one .blend file); its result.

    Its output goes to ``log_path``; a worker that exits without a result is an error with the
    tail of its output. The process dies with this one (scripts/batch_bpy.py asks the kernel)."""
    log, where = ItemLog(log_path), here()
    log.write(f"try {attempt}: {args[0]} on {where['host']} (node {where['node']}, pid {where['pid']})")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.monotonic()
    try:
        proc = subprocess.run(bpy_command(blender, args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        output, rc = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as exc:
        got = exc.stdout or ""
        output, rc = got.decode(errors="replace") if isinstance(got, bytes) else got, None
    except OSError as exc:
        output, rc = f"cannot start the Blender worker: {exc}", -1
    result = None
    lines = output.splitlines()
    for line in reversed(lines):
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
            break
    log.write("\n".join(line for line in lines if not line.startswith(RESULT_MARK)))
    seconds = time.monotonic() - t0
    if result is None:
        why = f"timed out after {timeout:g} s" if rc is None else f"exited with code {rc} without a result"
        tail = "\n".join(lines[-8:])
        log.write(f"{args[0]}: failed: {why}")
        return {"ok": False, "error": f"the Blender worker {why}: {tail[-600:]}", "seconds": seconds, "where": where}
    log.write(f"{args[0]}: done ({seconds:.1f} s)")
    return {"ok": True, **result, "seconds": seconds, "where": where}
