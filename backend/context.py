"""Progress reporting and cancellation shared by every stage."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from .errors import Cancelled

ProgressFn = Callable[[dict], None]


class StageContext:
    """Passed to each stage: ``progress(...)`` reports, ``check()`` raises Cancelled when asked."""

    RECENT = 6  # the time left comes from the pace of the last few steps

    def __init__(self, on_event: ProgressFn | None = None, cancel: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._on_event = on_event or (lambda e: None)
        self.cancel_event = cancel or threading.Event()
        self._clock = clock
        self._t0: dict[str, float] = {}
        self._recent: dict[str, deque] = {}

    def cancel(self, code: str = "cancelled", message: str | None = None) -> None:
        """Ask the stage to stop at its next step: by the user, or (``timeout``) by a time limit."""
        self.reason = (code, message or ("cancelled by the user" if code == "cancelled" else "timed out"))
        self.cancel_event.set()

    def check(self) -> None:
        if self.cancel_event.is_set():
            code, message = getattr(self, "reason", ("cancelled", "cancelled by the user"))
            raise Cancelled(message, code)

    def wait_for(self, lock: threading.Lock, stage: str, what: str) -> None:
        """Acquire ``lock`` (another job holds it), reporting that this job waits and staying
        cancellable while it does."""
        if lock.acquire(blocking=False):
            return
        self.progress(stage, 0, 1, f"waiting for {what}")
        while not lock.acquire(timeout=0.2):
            self.check()

    def progress(self, stage: str, step: int, total: int, message: str = "", **extra) -> None:
        """Report ``step`` of ``total`` (with the time left from the recent pace) and raise
        Cancelled when asked to stop; ``extra`` fields go into the event as they are (a
        download's bytes and rate)."""
        now = self._clock()
        t0 = self._t0.setdefault(stage, now)
        recent = self._recent.setdefault(stage, deque(maxlen=self.RECENT))
        if recent and recent[-1][2] != total:  # another count (e.g. a message before the steps)
            recent.clear()
        if step > 0:
            recent.append((now, step, total))
        eta = None
        if step > 0 and total >= step:
            # the recent pace, so that a slow first step (a compile, model loading) does not
            # inflate the estimate; with one step so far, the pace since the stage started
            (ta, sa, _), (tb, sb, _) = recent[0], recent[-1]
            per_step = (tb - ta) / (sb - sa) if sb > sa else (now - t0) / step
            eta = per_step * (total - step)
        self._on_event({"event": "progress", "stage": stage, "step": step, "total": total,
                        "message": message, "eta_s": None if eta is None else round(eta, 2), **extra})
        self.check()
