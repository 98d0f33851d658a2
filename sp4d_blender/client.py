"""The backend subprocess and its jobs, seen from Blender. No bpy in here.

``BackendProcess`` starts ``python -m backend serve`` and a reader thread that routes every event
to the queue of its request id, so any number of jobs (two Generate Rigs, Recompute Weights during
a generation) can be under way at once without taking each other's events. ``RigJob`` drives one
job through it and is polled: from a modal timer in the UI, or in a blocking loop headless
(``wait``). A backend that dies ends every job under way with ``backend_died`` carrying the tail
of its log (and, when the system killed it, the likely reason: memory). Logs go to a folder of
their own, the last few kept.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

BACKEND_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds backend/
KEEP_LOGS = 5  # backend logs kept in the log folder (the newest)


def default_backend_python(root: Path = BACKEND_ROOT) -> str | None:
    """SP4D_BACKEND_PYTHON, else the repository's .venv (a development checkout), else None. Never
    this interpreter: inside Blender that is Blender's own Python, which has no torch, and the
    artist would read "No module named 'torch'" instead of being asked to set the backend up."""
    env = os.environ.get("SP4D_BACKEND_PYTHON")
    if env:
        return env
    for cand in (root / ".venv" / "bin" / "python", root / ".venv" / "Scripts" / "python.exe"):
        if cand.exists():
            return str(cand)
    return None


NO_BACKEND = ("no backend is set up: press Set Up Backend (Edit > Preferences > Add-ons > SP4D Rig, or the SP4D "
              "panel) to install it, or set Backend Python to an interpreter with the backend's packages")


class NoBackend(RuntimeError):
    """No interpreter to run the backend with (error code ``no_backend``)."""

    code = "no_backend"


def default_log_dir() -> Path:
    return Path(tempfile.gettempdir()) / "sp4d-logs"


def prune_logs(log_dir: Path, keep: int = KEEP_LOGS) -> None:
    """Delete all but the newest ``keep`` backend logs in ``log_dir``."""
    try:
        logs = sorted(log_dir.glob("backend-*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in logs[keep:]:
        try:
            old.unlink()
        except OSError:
            pass


class BackendProcess:
    """One backend subprocess speaking JSON lines; events routed by request id."""

    def __init__(self, python: str | None = None, root: Path = BACKEND_ROOT, env: dict | None = None,
                 log_dir: str | os.PathLike | None = None):
        self.python = python or default_backend_python()  # None: start() raises NoBackend
        self.root = Path(root)
        self.env = dict(env or {})
        self.log_dir = Path(log_dir) if log_dir else default_log_dir()
        self.log_path: str | None = None
        self.proc: subprocess.Popen | None = None
        self.events: queue.Queue = queue.Queue()  # events of no request of ours (ready, bad lines)
        self._queues: dict[str, queue.Queue] = {}
        self._sent_to: dict[str, subprocess.Popen] = {}  # the process each request went to
        self._routes = threading.Lock()
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.alive:
            return
        if not self.python:
            raise NoBackend(NO_BACKEND)
        env = dict(os.environ)
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join([str(self.root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["PYTHONUNBUFFERED"] = "1"
        self.events = queue.Queue()  # a restarted process must not see the old one's exit
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            prune_logs(self.log_dir, KEEP_LOGS - 1)
            log = open(self.log_dir / f"backend-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-"
                       f"{next(self._ids)}.log", "w")
        except OSError:
            log = tempfile.NamedTemporaryFile("w", prefix="sp4d-backend-", suffix=".log", delete=False)
        self.log_path = log.name
        try:
            self.proc = subprocess.Popen(
                [self.python, "-u", "-m", "backend", "serve"], cwd=str(self.root), env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
        except OSError as exc:
            raise RuntimeError(f"cannot start the backend with {self.python!r}: {exc}. "
                               "Set the backend interpreter in the SP4D preferences.") from exc
        finally:
            log.close()  # the child has its own handle
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _route(self, ev: dict) -> None:
        with self._routes:
            q = self._queues.get(ev.get("id")) if isinstance(ev.get("id"), str) else None
        (q or self.events).put(ev)

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # not protocol: ignore (logs belong on stderr)
            if isinstance(ev, dict):
                self._route(ev)
        exit_ev = {"event": "exit", "returncode": proc.wait()}
        with self._routes:  # the jobs sent to this process, not those of a process started since
            targets = [q for rid, q in self._queues.items() if self._sent_to.get(rid) is proc]
        for q in (*targets, self.events):  # every job under way learns of the exit
            q.put(exit_ev)

    def queue_for(self, rid: str) -> queue.Queue:
        """The events of request ``rid`` (made by ``send``)."""
        with self._routes:
            return self._queues.setdefault(rid, queue.Queue())

    def forget(self, rid: str) -> None:
        """Stop routing events of a finished request."""
        with self._routes:
            self._queues.pop(rid, None)
            self._sent_to.pop(rid, None)

    def stderr_tail(self, n: int = 1500) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-n:].strip() if self.log_path else ""
        except OSError:
            return ""

    def send(self, cmd: str, **fields) -> str | None:
        """Send a request; returns its id (its events go to ``queue_for(id)``), or None when the
        process is gone."""
        rid = f"r{next(self._ids)}"
        if not self.alive:
            return None
        self.queue_for(rid)
        with self._routes:
            self._sent_to[rid] = self.proc
        with self._write_lock:
            try:
                self.proc.stdin.write(json.dumps({"id": rid, "cmd": cmd, **fields}) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.forget(rid)
                return None
        return rid

    def stop(self, timeout: float = 5.0) -> None:
        """Ask for shutdown, then kill if needed. A log of a clean exit is deleted."""
        if self.proc is None:
            return
        if self.alive:
            self.send("shutdown")
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        if self.proc.returncode == 0 and self.log_path:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass
        self.proc = None


def died_message(rc, tail: str) -> str:
    """What to tell when the backend exited under a job: its exit code, why when the system
    killed it (SIGKILL: most often the out-of-memory killer), and its log's tail."""
    text = f"the backend exited (code {rc}) before the job finished"
    if rc == -getattr(signal, "SIGKILL", 9):
        text += (" — it was killed, most likely for running out of memory: lower the frames or the image size, "
                 "use a shorter or smaller clip, or switch on low VRAM")
    return text + (f":\n{tail}" if tail else "")


class RigJob:
    """One backend job (``run`` for Generate Rig, ``rig``, ``reweight``; ``weights`` without a job
    folder: the weights download), followed to its end."""

    def __init__(self, backend: BackendProcess, job_dir: str | os.PathLike | None, cmd: str = "run",
                 fields: dict | None = None):
        self.backend = backend
        self.fields = dict(fields or {})  # more fields of the request (the weights' accept_licence)
        self.job_dir = Path(job_dir).resolve() if job_dir is not None else None
        self.cmd = cmd
        self.state = "new"  # new | running | done | failed | cancelled
        self.error: dict | None = None
        self.result: dict | None = None
        self.progress: dict = {}
        self.rid: str | None = None
        self._events: queue.Queue | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def start(self) -> None:
        try:
            self.backend.start()
        except NoBackend as exc:
            self._fail(NoBackend.code, str(exc))
            return
        fields = dict(self.fields) if self.job_dir is None else {"job": str(self.job_dir), **self.fields}
        self.rid = self.backend.send(self.cmd, **fields)
        if self.rid is None:
            self._fail("backend_died", "the backend is not running")
        else:
            self._events = self.backend.queue_for(self.rid)
            self.state = "running"

    def _fail(self, code: str, message: str) -> None:
        self.error = {"code": code, "message": message}
        self.state = "cancelled" if code == "cancelled" else "failed"
        self._done()

    def _done(self) -> None:
        if self.rid is not None:
            self.backend.forget(self.rid)

    def poll(self) -> list[dict]:
        """Consume this job's pending events (non-blocking); returns them."""
        mine = []
        while not self.finished and self._events is not None:
            try:
                ev = self._events.get_nowait()
            except queue.Empty:
                if self.state == "running" and not self.backend.alive and self._events.empty():
                    self._died(self.backend.proc.returncode if self.backend.proc else None)
                break
            if ev.get("event") == "exit":
                self._died(ev.get("returncode"))
                break
            mine.append(ev)
            kind = ev.get("event")
            if kind == "progress":
                self.progress = ev
            elif kind == "result":
                self.result = ev.get("data")
                self.state = "done"
                self._done()
            elif kind == "error":
                self._fail(ev.get("code", "internal"), ev.get("message", "unknown error"))
        return mine

    def _died(self, rc) -> None:
        self._fail("backend_died", died_message(rc, self.backend.stderr_tail()))

    def cancel(self, code: str = "cancelled", message: str | None = None) -> None:
        """Stop the job (Esc); ``code`` 'timeout' when a time limit ran out."""
        if self.state == "running" and self.backend.send("cancel", target=self.rid, code=code,
                                                         message=message or "") is None:
            self._fail(code, message or "cancelled (the backend was not running)")

    def wait(self, timeout: float | None = None, on_event=None, interval: float = 0.05) -> str:
        """Block until the job ends (headless use); returns the final state. Past ``timeout``
        seconds the job is cancelled and ends with the code ``timeout``; a backend that ignores
        the cancel for 30 s is stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cancelled_at = None
        why = f"the job did not finish within {timeout} s and was stopped (a longer timeout lets it finish)"
        while not self.finished:
            for ev in self.poll():
                if on_event:
                    on_event(ev)
            now = time.monotonic()
            if not self.finished and deadline is not None and now > deadline and cancelled_at is None:
                self.cancel("timeout", why)
                cancelled_at = now
            if not self.finished and cancelled_at is not None and now > cancelled_at + 30:
                self.backend.stop(timeout=1)
                self._fail("timeout", why)
            if not self.finished:
                time.sleep(interval)
        return self.state


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _duration(s: float) -> str:
    return f"{s / 60:.0f} min" if s >= 90 else f"{s:.0f} s"


def progress_text(p: dict) -> str:
    """A progress event in words for the status bar and the panel: steps and the time left, or a
    download's bytes, rate and time left."""
    eta = f", {_duration(p['eta_s'])} left" if p.get("eta_s") is not None else ""
    if p.get("bytes") is not None:
        total = f" of {_size(p['bytes_total'])}" if p.get("bytes_total") else ""
        rate = f", {p['rate_bps'] / 1e6:.1f} MB/s" if p.get("rate_bps") else ""
        return f"SP4D {p.get('stage', 'weights')}: {_size(p['bytes'])}{total}{rate}{eta} (Esc cancels)"
    return f"SP4D {p.get('stage', '')}: {p.get('step', 0)}/{p.get('total', 0)}{eta} (Esc cancels)"
