"""The backend subprocess and one Generate Rig job, seen from Blender. No bpy in here.

``BackendProcess`` starts ``python -m backend serve`` and turns its stdout into a queue of
events (a reader thread, so the UI never blocks). ``RigJob`` drives one job through it and is
polled: from a modal timer in the UI, or in a blocking loop headless (``wait``). A backend that
dies becomes a ``backend_died`` error carrying the tail of its stderr.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BACKEND_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds backend/


def default_backend_python() -> str:
    """SP4D_BACKEND_PYTHON, else the repository's .venv, else this interpreter."""
    env = os.environ.get("SP4D_BACKEND_PYTHON")
    if env:
        return env
    for cand in (BACKEND_ROOT / ".venv" / "bin" / "python", BACKEND_ROOT / ".venv" / "Scripts" / "python.exe"):
        if cand.exists():
            return str(cand)
    return sys.executable


class BackendProcess:
    """One backend subprocess speaking JSON lines."""

    def __init__(self, python: str | None = None, root: Path = BACKEND_ROOT):
        self.python = python or default_backend_python()
        self.root = Path(root)
        self.proc: subprocess.Popen | None = None
        self.events: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._log = tempfile.NamedTemporaryFile(prefix="sp4d-backend-", suffix=".log", delete=False)
        self.log_path = self._log.name
        self._write_lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.alive:
            return
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["PYTHONUNBUFFERED"] = "1"
        self.events = queue.Queue()  # a restarted process must not see the old one's exit
        try:
            self.proc = subprocess.Popen(
                [self.python, "-u", "-m", "backend", "serve"], cwd=str(self.root), env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        except OSError as exc:
            raise RuntimeError(f"cannot start the backend with {self.python!r}: {exc}. "
                               "Set the backend interpreter in the SP4D preferences.") from exc
        threading.Thread(target=self._read, args=(self.proc, self.events), daemon=True).start()

    @staticmethod
    def _read(proc: subprocess.Popen, events: queue.Queue) -> None:
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # not protocol: ignore (logs belong on stderr)
            if isinstance(ev, dict):
                events.put(ev)
        events.put({"event": "exit", "returncode": proc.wait()})

    def stderr_tail(self, n: int = 1500) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""

    def send(self, cmd: str, **fields) -> str | None:
        """Send a request; returns its id, or None when the process is gone."""
        rid = f"r{next(self._ids)}"
        if not self.alive:
            return None
        with self._write_lock:
            try:
                self.proc.stdin.write(json.dumps({"id": rid, "cmd": cmd, **fields}) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                return None
        return rid

    def stop(self, timeout: float = 5.0) -> None:
        """Ask for shutdown, then kill if needed."""
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
        self.proc = None


class RigJob:
    """Generate Rig for one job folder: the backend's ``run`` request, followed to its end."""

    def __init__(self, backend: BackendProcess, job_dir: str | os.PathLike, cmd: str = "run"):
        self.backend = backend
        self.job_dir = Path(job_dir).resolve()
        self.cmd = cmd
        self.state = "new"  # new | running | done | failed | cancelled
        self.error: dict | None = None
        self.result: dict | None = None
        self.progress: dict = {}
        self.rid: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def start(self) -> None:
        self.backend.start()
        self.rid = self.backend.send(self.cmd, job=str(self.job_dir))
        if self.rid is None:
            self._fail("backend_died", "the backend is not running")
        else:
            self.state = "running"

    def _fail(self, code: str, message: str) -> None:
        self.error = {"code": code, "message": message}
        self.state = "cancelled" if code == "cancelled" else "failed"

    def poll(self) -> list[dict]:
        """Consume pending events (non-blocking); returns those that belong to this job."""
        mine = []
        while not self.finished:
            try:
                ev = self.backend.events.get_nowait()
            except queue.Empty:
                if self.state == "running" and not self.backend.alive and self.backend.events.empty():
                    self._died(None)
                break
            if ev.get("event") == "exit":
                self._died(ev.get("returncode"))
                break
            if ev.get("id") != self.rid:
                continue
            mine.append(ev)
            kind = ev.get("event")
            if kind == "progress":
                self.progress = ev
            elif kind == "result":
                self.result = ev.get("data")
                self.state = "done"
            elif kind == "error":
                self._fail(ev.get("code", "internal"), ev.get("message", "unknown error"))
        return mine

    def _died(self, rc) -> None:
        tail = self.backend.stderr_tail()
        self._fail("backend_died", f"the backend exited (code {rc}) before the job finished"
                   + (f":\n{tail}" if tail else ""))

    def cancel(self) -> None:
        if self.state == "running" and self.backend.send("cancel", target=self.rid) is None:
            self._fail("cancelled", "cancelled (the backend was not running)")

    def wait(self, timeout: float | None = None, on_event=None, interval: float = 0.05) -> str:
        """Block until the job ends (headless use); returns the final state. Past ``timeout``
        seconds the job is cancelled; a backend that ignores the cancel for 30 s is stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cancelled_at = None
        while not self.finished:
            for ev in self.poll():
                if on_event:
                    on_event(ev)
            now = time.monotonic()
            if not self.finished and deadline is not None and now > deadline and cancelled_at is None:
                self.cancel()
                cancelled_at = now
            if not self.finished and cancelled_at is not None and now > cancelled_at + 30:
                self.backend.stop(timeout=1)
                self._fail("cancelled", f"timed out after {timeout} s")
            if not self.finished:
                time.sleep(interval)
        return self.state
