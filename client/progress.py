"""A one-line live progress display: records and frames done/total, rate, ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressLine:
    """Redraws one line on a terminal; prints a plain line now and then otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, min_interval: float = 0.2):
        self.stream = stream
        self.tty = stream.isatty()
        self.min_interval = min_interval if self.tty else 10.0
        self.started = time.monotonic()
        self.last_draw = 0.0

    def update(
        self, records_done: int, records_total: int, frames_done: int, *, force: bool = False
    ) -> None:
        now = time.monotonic()
        if not force and now - self.last_draw < self.min_interval:
            return
        self.last_draw = now
        self.stream.write(
            ("\r" if self.tty else "") + self.render(records_done, records_total, frames_done, now)
        )
        if not self.tty:
            self.stream.write("\n")
        self.stream.flush()

    def render(self, records_done: int, records_total: int, frames_done: int, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = records_done / elapsed
        pct = 100.0 * records_done / records_total if records_total else 100.0
        eta = _duration((records_total - records_done) / rate) if rate > 0 else "?"
        width = 24
        filled = int(width * pct / 100)
        bar = "#" * filled + "-" * (width - filled)
        return (
            f"[{bar}] {pct:5.1f}%  records {records_done}/{records_total}  frames {frames_done}  "
            f"{rate:.1f} rec/s  {frames_done / elapsed:.1f} frames/s  ETA {eta}  "
        )

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
