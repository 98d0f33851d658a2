"""Progress reporting and cancellation shared by every stage."""

from __future__ import annotations

import threading
import time
from typing import Callable

from .errors import Cancelled

ProgressFn = Callable[[dict], None]


class StageContext:
    """Passed to each stage: ``progress(...)`` reports, ``check()`` raises Cancelled when asked."""

    def __init__(self, on_event: ProgressFn | None = None, cancel: threading.Event | None = None):
        self._on_event = on_event or (lambda e: None)
        self.cancel_event = cancel or threading.Event()
        self._t0: dict[str, float] = {}

    def check(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled()

    def progress(self, stage: str, step: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        t0 = self._t0.setdefault(stage, now)
        eta = (now - t0) / step * (total - step) if step > 0 and total >= step else None
        self._on_event({"event": "progress", "stage": stage, "step": step, "total": total,
                        "message": message, "eta_s": None if eta is None else round(eta, 2)})
        self.check()
