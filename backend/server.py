"""``python -m backend serve``: the JSON-lines protocol on stdin/stdout (docs/protocol.md).

One request or event per line. Jobs run one at a time on a worker thread so that ``cancel``
and ``ping`` are answered while a job runs. Logs go to stderr. The process exits on
``shutdown`` or when stdin closes (its parent died). No network port is opened.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import traceback
from typing import IO, Callable

from . import __version__
from .context import StageContext
from .errors import BackendError, from_exception
from .jobdir import JobDir
from .stages import JOB_COMMANDS, run_command


class Server:
    def __init__(self, stdin: IO[str], stdout: IO[str], log: Callable[[str], None]):
        self._in, self._out, self._log = stdin, stdout, log
        self._lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue()
        self._current: tuple[str, StageContext] | None = None
        self._pending: dict[str, StageContext] = {}
        self._stop = threading.Event()

    def send(self, event: dict) -> None:
        line = json.dumps(event, default=str)
        with self._lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (BrokenPipeError, ValueError):  # parent gone: nothing to tell
                self._stop.set()

    def error(self, rid, err: BackendError) -> None:
        self.send({"id": rid, "event": "error", **err.to_dict()})

    def _worker(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            rid, cmd, path, ctx = item
            self._pending.pop(rid, None)
            self._current = (rid, ctx)
            job = JobDir(path)
            try:
                ctx.check()
                result = run_command(cmd, job, ctx)
                self.send({"id": rid, "event": "result", "data": {"job": str(path), "stages": result}})
            except BaseException as exc:  # noqa: BLE001 - every failure becomes an error event
                err = from_exception(exc)
                if err.code == "internal":
                    self._log(traceback.format_exc())
                try:
                    job.update_status(error=err.to_dict())
                except OSError:
                    pass
                self.error(rid, err)
            finally:
                self._current = None

    def handle(self, line: str) -> None:
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self.error(None, BackendError("bad_request", f"request is not a JSON object: {exc}"))
            return
        rid, cmd = req.get("id"), req.get("cmd")
        if cmd == "ping":
            self.send({"id": rid, "event": "result", "data": {"pong": True, "version": __version__}})
        elif cmd in JOB_COMMANDS:
            if not isinstance(req.get("job"), str):
                self.error(rid, BackendError("bad_request", f"{cmd} needs 'job': the job folder path"))
                return
            ctx = StageContext(lambda e, rid=rid: self.send({"id": rid, **e}))
            self._pending[rid] = ctx
            self._jobs.put((rid, cmd, req["job"], ctx))
        elif cmd == "cancel":
            target = req.get("target")
            cur = self._current
            hit = [c for r, c in ([cur] if cur else []) + list(self._pending.items()) if target in (None, r)]
            for ctx in hit:
                ctx.cancel_event.set()
            self.send({"id": rid, "event": "result", "data": {"cancelled": len(hit)}})
        elif cmd == "shutdown":
            self.send({"id": rid, "event": "result", "data": {"shutdown": True}})
            self._stop.set()
        else:
            self.error(rid, BackendError("bad_request", f"unknown cmd {cmd!r}; expected ping, "
                                         "generate, rig, run, cancel or shutdown"))

    def serve(self) -> int:
        worker = threading.Thread(target=self._worker, daemon=True)
        worker.start()
        self.send({"id": None, "event": "ready", "version": __version__})
        for line in self._in:
            if line.strip():
                self.handle(line)
            if self._stop.is_set():
                break
        # shutdown or EOF: cancel what runs, let the worker finish cleanly
        for ctx in list(self._pending.values()) + ([self._current[1]] if self._current else []):
            ctx.cancel_event.set()
        self._jobs.put(None)
        worker.join(timeout=30)
        return 0


def serve() -> int:
    return Server(sys.stdin, sys.stdout, lambda s: print(s, file=sys.stderr, flush=True)).serve()
