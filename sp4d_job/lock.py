"""One job at a time per job folder: an advisory lock on ``<job>/.lock``.

The lock is the operating system's (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows): it
belongs to an open file, so it is released when its holder exits, however it exits (a SIGKILL or a
crash leaves a ``.lock`` file that nobody holds, and the next job simply takes it). Two opens in one
process conflict too, so two jobs of one backend on one folder are refused like two processes. The
file's text says who holds it (pid, host, what, since when) for the ``busy`` message. Standard
library only: Blender checks it before writing into a folder a job is using.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

LOCK_FILE = ".lock"


class Busy(RuntimeError):
    """The folder is locked by a running job; ``holder`` is what the lock file says about it."""

    def __init__(self, root: Path, holder: dict):
        what = holder.get("what") or "a job"
        since = holder.get("since")
        ago = f", for {time.time() - since:.0f} s" if isinstance(since, (int, float)) else ""
        super().__init__(f"the job folder {root} is in use by {what} (process {holder.get('pid', '?')} on "
                         f"{holder.get('host', '?')}{ago}); wait for it to finish or cancel it")
        self.holder = holder


def _try_lock(fd: int) -> bool:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(fd: int) -> None:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _holder(path: Path) -> dict:
    try:
        info = json.loads(path.read_text() or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


class JobLock:
    """The held lock of one job folder; ``release()`` (or leaving the ``with`` block) frees it."""

    def __init__(self, root: str | os.PathLike, what: str = "a job"):
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> JobLock:
        """Take the lock or raise Busy; OSError when the folder cannot be written."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            raise Busy(self.root, _holder(self.path))
        info = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what, "since": time.time()}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # nobody holds it: no stale holder to report
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> JobLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


def holder(root: str | os.PathLike) -> dict | None:
    """What holds the lock of ``root`` now, or None when no job runs there (a left-over lock
    file of a dead process counts as free)."""
    path = Path(root) / LOCK_FILE
    if not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY if os.name != "nt" else os.O_RDWR)
    except OSError:
        return None
    try:
        if _try_lock(fd):
            _unlock(fd)
            return None
        return _holder(path) or {"what": "a job"}
    finally:
        os.close(fd)
