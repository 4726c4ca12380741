"""Jobs paused on a full disk: what each waits for, what `status` says, when it looks again.

The scheduler owns the one `SpaceWaits` and decides what a paused job does next; a
timer only sends it a `SpaceCheck` message, so every decision keeps its inbox order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from virnuc.disk_space import describe, free_bytes

log = structlog.get_logger()

ROOM = 1_000_000  # bytes: less free than this is never worth a retry; this much freed is


@dataclass
class SpaceWait:
    path: Path  # a directory on the full filesystem
    needed: int  # bytes that should be free before the job is tried again (an estimate)
    free_then: int | None  # free bytes when the job stopped
    attempts: int = 0
    reason: str = ""  # shown as `waiting` in status
    timer: asyncio.Task[None] | None = field(default=None, repr=False)

    def ready(self) -> bool:
        """Whether a retry is worth making: the space needed is free, or space was
        freed since the job stopped. A filesystem that cannot be asked is retried."""
        free = free_bytes(self.path)
        if free is None:
            return True
        if free < ROOM:
            return False
        return free >= self.needed or self.free_then is None or free >= self.free_then + ROOM


class SpaceWaits:
    """The paused jobs, each retried after `first` seconds, doubling up to `cap`."""

    def __init__(
        self,
        first: float,
        cap: float,
        wake: Callable[[str], Awaitable[None]],
        shown: Callable[[str], None],
    ):
        self.first = first
        self.cap = cap
        self.wake = wake  # tells the scheduler to look at a job again
        self.shown = shown  # a job began or stopped waiting: its status changed
        self._waits: dict[str, SpaceWait] = {}

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._waits

    def reason(self, job_id: str) -> str | None:
        wait = self._waits.get(job_id)
        return wait.reason if wait is not None else None

    async def start(self, job_id: str, path: Path, needed: int) -> None:
        """Pause the job (nothing partial was left, what is verified stays), unless it
        waits already: one wait per job, whichever of its steps found the disk full."""
        if job_id in self._waits:
            return
        free = await asyncio.to_thread(free_bytes, path)
        wait = self._waits[job_id] = SpaceWait(path, needed, free)
        await self._schedule(job_id, wait)
        log.warning("job.waiting_for_space", job_id=job_id, reason=wait.reason)
        self.shown(job_id)

    async def check(self, job_id: str) -> bool:
        """True if the paused job may go on now (it no longer waits); else it is
        looked at again later."""
        wait = self._waits.get(job_id)
        if wait is None:
            return False
        if not await asyncio.to_thread(wait.ready):
            await self._schedule(job_id, wait)
            return False
        del self._waits[job_id]
        log.info("job.space_freed", job_id=job_id, path=str(wait.path), tries=wait.attempts)
        self.shown(job_id)
        return True

    def cancel(self, job_id: str) -> None:
        wait = self._waits.pop(job_id, None)
        if wait is not None and wait.timer is not None:
            wait.timer.cancel()

    def cancel_all(self) -> None:
        for job_id in list(self._waits):
            self.cancel(job_id)

    async def _schedule(self, job_id: str, wait: SpaceWait) -> None:
        delay = min(self.cap, self.first * 2**wait.attempts)
        wait.attempts += 1
        when = time.strftime("%H:%M:%S", time.localtime(time.time() + delay))
        described = await asyncio.to_thread(describe, wait.path, wait.needed)
        wait.reason = f"{described}; next try at {when}"

        async def later() -> None:
            await asyncio.sleep(delay)
            await self.wake(job_id)

        wait.timer = asyncio.create_task(later(), name=f"space-check-{job_id}")
