"""A one-line live progress display: records and frames done/total, rate, ETA.

On a terminal the line is redrawn in place a few times a second; in a log file (not
a TTY) a plain line is printed every ten seconds, so ``virnucctl wait`` under nohup
or systemd leaves a readable trail instead of thousands of carriage returns.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from .output import state_text


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressLine:
    """Redraws one line on a terminal; prints a plain line now and then otherwise.

    Rates are measured from the first update, not from the job's start, so attaching
    to a job that is already half done does not report an absurd rate.
    """

    def __init__(self, stream: TextIO | None = None, min_interval: float = 0.2):
        self.stream = stream or sys.stderr  # looked up now: tests and callers may swap it
        self.tty = self.stream.isatty()
        self.min_interval = min_interval if self.tty else 10.0
        self.started = time.monotonic()
        self.last_draw = 0.0
        self.drawn = False
        self._base: tuple[int, int] | None = None  # records, frames at the first update

    def update(
        self,
        records_done: int,
        records_total: int,
        frames_done: int,
        *,
        state: str = "",
        force: bool = False,
    ) -> None:
        if self._base is None:
            self._base = (records_done, frames_done)
            self.started = time.monotonic()
        now = time.monotonic()
        if not force and self.drawn and now - self.last_draw < self.min_interval:
            return
        self.last_draw = now
        self.drawn = True
        line = self.render(records_done, records_total, frames_done, now, state)
        self.stream.write(f"\r{line}\x1b[K" if self.tty else f"{line}\n")
        self.stream.flush()

    def show(self, status: Mapping[str, Any], *, force: bool = False) -> None:
        """Draw a JobStatus map (a ``status`` result or a job event's body)."""
        self.update(
            status["records_done"],
            status["records_total"],
            status["frames_done"],
            state=state_text(status),
            force=force,
        )

    def render(
        self, records_done: int, records_total: int, frames_done: int, now: float, state: str = ""
    ) -> str:
        base_records, base_frames = self._base or (0, 0)
        elapsed = max(now - self.started, 1e-9)
        rate = max(records_done - base_records, 0) / elapsed
        frame_rate = max(frames_done - base_frames, 0) / elapsed
        if records_total:
            pct = 100.0 * records_done / records_total
            total = str(records_total)
        else:  # not planned yet: the daemon has not counted the input's records
            pct, total = 0.0, "?"
        left = records_total - records_done
        eta = _duration(left / rate) if rate > 0 and records_total else "?"
        width = 24
        filled = int(width * min(pct, 100.0) / 100)
        bar = "#" * filled + "-" * (width - filled)
        suffix = f"  {state}" if state else ""
        return (
            f"[{bar}] {pct:5.1f}%  records {records_done}/{total}  frames {frames_done}  "
            f"{rate:.1f} rec/s  {frame_rate:.1f} frames/s  ETA {eta}{suffix}"
        )

    def note(self, text: str) -> None:
        """A notice on a line of its own; on a terminal the bar is redrawn below it."""
        clear = "\r\x1b[K" if self.tty and self.drawn else ""
        self.stream.write(f"{clear}virnucctl: {text}\n")
        self.stream.flush()

    def close(self) -> None:
        """End the redrawn line so whatever follows starts on a fresh one."""
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
