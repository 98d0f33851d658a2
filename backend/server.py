"""``python -m backend serve``: the JSON-lines protocol on stdin/stdout (docs/protocol.md).

One request or event per line. Every job runs on a thread of its own, so that ``cancel``,
``ping`` and other jobs are answered while one runs (generations take turns on the one model:
generate_sp4d.MODEL_LOCK; two jobs on one folder: the second gets ``busy``). Whatever a line holds
(not JSON, nested a million deep, not an object, an id that is not a string or number, an
unknown command, fields of the wrong type), the server answers it with a ``bad_request`` error and
goes on. Logs go to stderr. The process exits on ``shutdown`` or when stdin closes (its parent
died). No network port is opened.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import traceback
from typing import IO, Any, Callable

from . import __version__
from .context import StageContext
from .errors import BackendError, from_exception
from .jobdir import JobDir
from .stages import JOB_COMMANDS, run_command

MAX_LINE = 1 << 20  # bytes: no request is near this long; a longer line is refused, not parsed
MAX_DEPTH = 32  # nesting of a request's arrays and objects (requests are flat)
MAX_ID = 200  # characters of a request id
MAX_JOBS = 32  # jobs under way at once (each a thread); more is a client gone wrong
COMMANDS = ("ping", *JOB_COMMANDS, "weights", "warm", "cancel", "shutdown")
THREADED = (*JOB_COMMANDS, "weights", "warm")  # commands that run on a thread of their own until their result or error


class BadRequest(Exception):
    """A request line that cannot be served; ``rid`` is its id when one could be read."""

    def __init__(self, message: str, rid: Any = None):
        super().__init__(message)
        self.rid = rid


def nesting(text: str) -> int:
    """The deepest nesting of arrays and objects in a JSON text (strings skipped), counted
    without parsing: json.loads would recurse once per level."""
    depth = deepest = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _valid_id(rid: Any) -> bool:
    if rid is None or (isinstance(rid, int) and not isinstance(rid, bool)):
        return True
    return isinstance(rid, str) and len(rid) <= MAX_ID


def parse_request(line: str) -> dict:
    """The request of one line, checked: a JSON object with a valid ``id`` and a known ``cmd``;
    BadRequest saying what is wrong otherwise."""
    if nesting(line) > MAX_DEPTH:
        raise BadRequest(f"the request is nested deeper than {MAX_DEPTH} levels")
    try:
        req = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request is not JSON: {str(exc)[:200]}") from None
    if not isinstance(req, dict):
        raise BadRequest(f"the request must be a JSON object, got {type(req).__name__}")
    rid = req.get("id")
    if not _valid_id(rid):
        raise BadRequest(f"'id' must be a string (at most {MAX_ID} characters), an integer or null, "
                         f"got {type(rid).__name__}")
    cmd = req.get("cmd")
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        shown = json.dumps(cmd)[:60] if cmd is not None else "nothing"
        raise BadRequest(f"unknown cmd {shown}; expected one of {', '.join(COMMANDS)}", rid)
    if cmd in JOB_COMMANDS:
        job = req.get("job")
        if not isinstance(job, str) or not job.strip() or "\0" in job:
            raise BadRequest(f"{cmd} needs 'job': the job folder's path (a non-empty string)", rid)
    if cmd == "cancel":
        if not _valid_id(req.get("target")):
            raise BadRequest("'target' must be a request id (a string or an integer) or absent", rid)
        if req.get("code", "cancelled") not in ("cancelled", "timeout"):
            raise BadRequest("'code' of a cancel must be 'cancelled' or 'timeout'", rid)
        if not isinstance(req.get("message", ""), str):
            raise BadRequest("'message' of a cancel must be a string", rid)
    if cmd == "warm" and not isinstance(req.get("settings", {}), dict):
        raise BadRequest("'settings' of a warm request must be an object (a job's generate settings)", rid)
    if cmd == "weights" and not isinstance(req.get("accept_licence", False), bool):
        raise BadRequest("'accept_licence' of a weights request must be true or false", rid)
    if cmd == "weights" and req.get("model", "sp4d") not in ("sp4d", "svd"):
        raise BadRequest("'model' of a weights request must be 'sp4d' or 'svd' (its licence: accept_licence)", rid)
    return req


def read_lines(stream: IO[bytes], limit: int = MAX_LINE):
    """Lines of a binary stream as text (undecodable bytes replaced); a line longer than ``limit``
    comes out as None after being skipped in pieces, never held whole."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while True:  # skip the rest of the long line
                more = stream.readline(limit)
                if not more or more.endswith(b"\n"):
                    break
            yield None
            continue
        yield line.decode("utf-8", errors="replace")


class Server:
    def __init__(self, stdin: IO[bytes], stdout: IO[str], log: Callable[[str], None]):
        self._in, self._out, self._log = stdin, stdout, log
        self._lock = threading.Lock()
        self._jobs: dict[Any, tuple[threading.Thread, StageContext]] = {}
        self._stop = threading.Event()

    def send(self, event: dict) -> None:
        line = json.dumps(event, default=str)
        with self._lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (BrokenPipeError, ValueError, OSError):  # parent gone: nothing to tell
                self._stop.set()

    def error(self, rid, err: BackendError) -> None:
        self.send({"id": rid, "event": "error", **err.to_dict()})

    def _run_job(self, rid, cmd: str, path: str, ctx: StageContext) -> None:
        job = JobDir(path)
        try:
            ctx.check()
            result = run_command(cmd, job, ctx)
            self.send({"id": rid, "event": "result", "data": {"job": str(path), "stages": result}})
        except BaseException as exc:  # noqa: BLE001 - every failure becomes an error event
            err = from_exception(exc)
            if err.code == "internal":
                self._log(traceback.format_exc())
            if err.code != "busy":  # a busy folder's status belongs to the job that holds it
                try:
                    job.update_status(error=err.to_dict())  # never creates a missing folder
                except (OSError, BackendError):
                    pass
            self.error(rid, err)
        finally:
            with self._lock:
                self._jobs.pop(rid, None)

    def _answer(self, rid, compute: Callable[[], dict]) -> None:
        """Send ``compute()`` as the result of request ``rid``, or its failure as an error event;
        then forget the request."""
        try:
            self.send({"id": rid, "event": "result", "data": compute()})
        except BaseException as exc:  # noqa: BLE001 - every failure becomes an error event
            err = from_exception(exc)
            if err.code == "internal":
                self._log(traceback.format_exc())
            self.error(rid, err)
        finally:
            with self._lock:
                self._jobs.pop(rid, None)

    def _run_warm(self, rid, ctx: StageContext, settings: dict) -> None:
        """Load the model at a job's generate ``settings`` and run it once (prepare.warm), so that
        the next job finds it warm: the add-on asks when its panel is first shown."""
        from .prepare import warm

        self._answer(rid, lambda: warm(settings, ctx))

    def _run_weights(self, rid, ctx: StageContext, accepted: bool, model: str = "sp4d") -> None:
        """Download the SP4D weights (``model`` 'svd': SVD-XT 1.1's) into the hub cache
        (backend/weights.py): progress events, cancellable, resumed by the next request;
        ``accepted``: the request's accept_licence (that model's licence)."""
        from sp4d_job.hub import MODELS

        from .weights import fetch_weights

        def download() -> dict:
            m = MODELS[model]
            path = fetch_weights(ctx, repo=m["repo"], filename=m["file"], accepted=accepted)
            return {"weights": str(path), "bytes": path.stat().st_size}

        self._answer(rid, download)

    def handle(self, line: str | None) -> None:
        """Answer one line; never raises."""
        try:
            if line is None:
                raise BadRequest(f"the request is longer than {MAX_LINE} bytes")
            self._dispatch(parse_request(line))
        except BadRequest as exc:
            self.error(exc.rid, BackendError("bad_request", str(exc)))
        except Exception as exc:  # noqa: BLE001 - a server that dies loses every job
            self._log(traceback.format_exc())
            self.error(None, from_exception(exc))

    def _dispatch(self, req: dict) -> None:
        rid, cmd = req.get("id"), req["cmd"]
        if cmd == "ping":
            self.send({"id": rid, "event": "result", "data": {"pong": True, "version": __version__}})
        elif cmd in THREADED:
            if rid is None:
                raise BadRequest(f"{cmd} needs an 'id' (its events carry it)")
            ctx = StageContext(lambda e, rid=rid: self.send({"id": rid, **e}))
            target, args = ((self._run_weights, (rid, ctx, req.get("accept_licence", False), req.get("model", "sp4d")))
                            if cmd == "weights" else (self._run_warm, (rid, ctx, req.get("settings", {})))
                            if cmd == "warm" else (self._run_job, (rid, cmd, req["job"], ctx)))
            thread = threading.Thread(target=target, args=args, daemon=True, name=f"job {rid}")
            with self._lock:
                if rid in self._jobs:
                    raise BadRequest(f"a job with id {json.dumps(rid)} is still running: use another id", rid)
                if len(self._jobs) >= MAX_JOBS:
                    raise BadRequest(f"{MAX_JOBS} jobs are under way already: wait for one to end", rid)
                self._jobs[rid] = (thread, ctx)
            thread.start()
        elif cmd == "cancel":
            target = req.get("target")
            with self._lock:
                hit = [ctx for r, (_, ctx) in self._jobs.items() if target in (None, r)]
            for ctx in hit:
                ctx.cancel(req.get("code", "cancelled"), req.get("message") or None)
            self.send({"id": rid, "event": "result", "data": {"cancelled": len(hit)}})
        elif cmd == "shutdown":
            self.send({"id": rid, "event": "result", "data": {"shutdown": True}})
            self._stop.set()

    def serve(self) -> int:
        self.send({"id": None, "event": "ready", "version": __version__, "missing": []})
        for line in read_lines(self._in):
            if line is None or line.strip():
                self.handle(line)
            if self._stop.is_set():
                break
        # shutdown or EOF: cancel what runs, let the jobs finish cleanly
        with self._lock:
            running = list(self._jobs.values())
        for _, ctx in running:
            ctx.cancel("cancelled", "the backend was shut down")
        for thread, _ in running:
            thread.join(timeout=30)
        return 0


def serve() -> int:
    stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else io.BytesIO(sys.stdin.read().encode())
    return Server(stdin, sys.stdout, lambda s: print(s, file=sys.stderr, flush=True)).serve()
