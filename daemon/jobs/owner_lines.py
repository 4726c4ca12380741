"""The fair queue between owners: each owner's unfinished jobs and its share of workers.

An idle worker's next unit goes to the owner with the fewest units running; of owners
running as many, to the one served least recently (so a single worker takes turns
between owners); of owners not served yet, to the one with the oldest job. Within an
owner, jobs go first in, first out. A unit, once handed out, runs to its end: another
owner's job waits for the next unit boundary and never pre-empts it.

The owner is the job's `owner` (`Caller.owner` of its submitter); jobs that recorded
none (submitted before v7) share one line of their own, `NO_OWNER`.

The `UnitQueue` owns the one `OwnerLines` and uses it from the scheduler's task only.
A line's running units are counted from its jobs' `JobRun.running` when asked, never
kept beside them, so the count cannot drift.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from virnuc.protocol import JobState

if TYPE_CHECKING:
    from .run import JobRun

NO_OWNER = ""  # the line of the jobs that recorded no owner


def owner_of(owner: str | None) -> str:
    """The line a job of `owner` (None: it recorded none) stands in."""
    return NO_OWNER if owner is None else owner


@dataclass(eq=False)
class OwnerLine:
    """One owner's unfinished jobs, oldest submission first, and what it has had."""

    owner: str
    jobs: dict[str, JobRun] = field(default_factory=dict)
    served: int = 0  # the tick of the last unit handed to it; 0: none yet

    @property
    def running(self) -> int:
        """Units of these jobs that workers compute now."""
        return sum(len(run.running) for run in self.jobs.values())

    def oldest(self) -> int:
        return next(iter(self.jobs.values())).row.seq

    def turn(self) -> tuple[int, int, int]:
        """Its place in the fair order; the smallest is served first."""
        return (self.running, self.served, self.oldest())


class OwnerLines:
    """The unfinished jobs by owner, and the fair order between the owners."""

    def __init__(self) -> None:
        self._lines: dict[str, OwnerLine] = {}
        self._tick = 0  # counts the units handed out: "when" for `served`

    def admit(self, run: JobRun) -> None:
        """Queue a job (new, or resumed after a restart) at the end of its owner's line."""
        owner = owner_of(run.row.owner)
        line = self._lines.setdefault(owner, OwnerLine(owner))
        line.jobs[run.job_id] = run

    def drop(self, run: JobRun) -> None:
        """Forget a finished job; an owner left with no job leaves the queue."""
        line = self._lines.get(owner_of(run.row.owner))
        if line is None or line.jobs.pop(run.job_id, None) is None:
            return
        if not line.jobs:
            del self._lines[line.owner]

    def unfinished(self, owner: str | None) -> int:
        """How many unfinished jobs the owner has."""
        line = self._lines.get(owner_of(owner))
        return len(line.jobs) if line is not None else 0

    def in_turn(self) -> list[OwnerLine]:
        """The owners with unfinished jobs, the one to serve next first."""
        return sorted(self._lines.values(), key=OwnerLine.turn)

    def served(self, run: JobRun) -> None:
        """The job's owner was handed a unit just now."""
        self._tick += 1
        line = self._lines.get(owner_of(run.row.owner))
        if line is not None:
            line.served = self._tick

    def positions(self) -> dict[str, int]:
        """Each queued job's place in the queue, 1 = the next to start: the order the
        fair rule starts them in if each start counts as one more unit running for its
        owner, served then. An estimate: a unit's length and an owner's running jobs
        that still have units to hand out are not counted."""
        heap: list[tuple[int, int, int, str, deque[str]]] = []
        for line in self._lines.values():
            queued = deque(
                run.job_id for run in line.jobs.values() if run.row.state == JobState.QUEUED
            )
            if queued:
                heap.append((line.running, line.served, line.oldest(), line.owner, queued))
        heapq.heapify(heap)
        places: dict[str, int] = {}
        tick = self._tick
        while heap:
            running, _, oldest, owner, queued = heapq.heappop(heap)
            places[queued.popleft()] = len(places) + 1
            if queued:
                tick += 1
                heapq.heappush(heap, (running + 1, tick, oldest, owner, queued))
        return places
