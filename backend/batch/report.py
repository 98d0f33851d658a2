"""report.json, one entry per item written exactly once, and the batch's progress in the terminal.

The report is rewritten atomically whenever an item ends, so a driver that dies leaves a report
of what finished (a re-run rewrites it whole). An item that ends twice is a bug in the driver:
``finish`` refuses it, and ``close`` reports any item that never ended instead of dropping it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, TextIO

from sp4d_job.layout import write_json_atomic

from .plan import Item


class Report:
    """The items of a batch in their order, each ending once as ok or failed."""

    def __init__(self, path: Path, items: list[Item] | None = None):
        self.path = Path(path)
        self.order: list[str] = []
        self.entries: dict[str, dict] = {}
        for it in items or []:
            self.expect(it)

    def expect(self, item: Item) -> None:
        if item.key in self.order:
            raise ValueError(f"two items named {item.key!r}")
        self.order.append(item.key)

    def finish(self, item: Item, ok: bool, **extra) -> dict:
        if item.key not in self.order:
            self.expect(item)
        if item.key in self.entries:
            raise RuntimeError(f"item {item.key!r} ended twice")
        self.entries[item.key] = entry = item.entry(ok, **extra)
        self.write()
        return entry

    @property
    def done(self) -> int:
        return sum(e["ok"] for e in self.entries.values())

    @property
    def failed(self) -> int:
        return len(self.entries) - self.done

    @property
    def open_keys(self) -> list[str]:
        return [k for k in self.order if k not in self.entries]

    def write(self) -> None:
        write_json_atomic(self.path, [self.entries[k] for k in self.order if k in self.entries])

    def close(self, items: dict[str, Item]) -> None:
        """End every item still open as failed (never silently dropped), then write."""
        for key in self.open_keys:
            self.finish(items[key], False, error="the batch ended before this item did", phase="driver")
        self.write()


class Progress:
    """One line for the whole batch: items done and failed, what is in flight, the rate and the
    time left (from the items ended so far). On a terminal the line is redrawn every second; in a
    log it is printed when the counts change, else every ``every`` seconds, and at the end."""

    def __init__(self, total: int, stream: TextIO = sys.stdout, every: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.stream, self.clock = total, stream, clock
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.every = 1.0 if self.tty else every
        self.t0 = clock()
        self.last = -1e9
        self.counts: tuple = ()
        self.drawn = False

    def text(self, done: int, failed: int, running: dict[str, int]) -> str:
        elapsed = self.clock() - self.t0
        ended = done + failed
        run = ", ".join(f"{n} {k}" for k, n in running.items() if n)
        parts = [f"[batch] {ended}/{self.total} items: {done} ok, {failed} failed"]
        if run:
            parts.append(f"in flight {run}")
        if ended:
            rate = ended / elapsed
            parts.append(f"{rate * 60:.1f} items/min")
            if ended < self.total:
                parts.append(f"ETA {_duration((self.total - ended) / rate)}")
        parts.append(f"elapsed {_duration(elapsed)}")
        return "; ".join(parts)

    def show(self, done: int, failed: int, running: dict[str, int], force: bool = False) -> None:
        now = self.clock()
        counts = (done, failed, tuple(running.items()))
        if not (force or now - self.last >= self.every or (not self.tty and counts != self.counts)):
            return
        line = self.text(done, failed, running)
        if self.tty:
            print("\r\033[K" + line, end="\n" if force else "", file=self.stream, flush=True)
            self.drawn = not force
        else:
            print(line, file=self.stream, flush=True)
        self.last, self.counts = now, counts

    def event(self, text: str) -> None:
        """An item's end or retry, on its own line (above the redrawn one on a terminal)."""
        print(("\r\033[K" if self.drawn else "") + text, file=self.stream, flush=True)
        self.drawn = False


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")
