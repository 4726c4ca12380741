"""A uniform, reproducible sample of an input's records, in one validating read.

`sample_records(path, size, seed)` reads the file once through the pipeline's own
validating pass (pipeline/input_pass.py: FASTA or FASTQ, plain or gzip, every error
naming the file and line, exactly as a submitted job's), so a 10^8-read FASTQ.gz
costs one decompression and numpy's checks, not Python's per record. The pass hands
over blocks of bytes with the offsets where records start; the sample is drawn over
those offsets by reservoir sampling with Li's Algorithm L, which computes how many
records to skip before the next one enters the reservoir: Python touches only the
O(size * log(n / size)) records that enter it. Memory: `size` records' bytes. Each
record of the file ends in the sample with probability size / n, whatever its place;
a file of at most `size` records is taken whole. The records come back in input
order, parsed by the pipeline's readers (RNA read as DNA, as a job reads it).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from virnuc.pipeline.fasta import FastaError
from virnuc.pipeline.input_pass import Block
from virnuc.pipeline.inputs import detect_format, input_pass, parse_records, record_starts
from virnuc.pipeline.record_ids import check_unique_ids

#: Bases per line of the sample's FASTA, as virus.fna writes them.
FASTA_WIDTH = 60


@dataclass(frozen=True, slots=True)
class SampledRecord:
    index: int  # the record's place in the input, from 0
    id: str
    sequence: str


@dataclass(frozen=True, slots=True)
class Sample:
    records: list[SampledRecord]  # in input order
    total: int  # records in the whole input


class _ReservoirL:
    """Algorithm L (Li 1994): which record indices enter a reservoir of `size`, and
    the slot each takes, drawn from `rng` alone (so a seed fixes the sample)."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size = size
        self.rng = rng
        self.weight = math.exp(math.log(self._unit()) / size)
        self.next_pick = size - 1
        self.filled = 0
        self._skip()

    def _unit(self) -> float:
        """Uniform in (0, 1): log(0) would fail."""
        while (value := self.rng.random()) == 0.0:
            pass
        return value

    def _skip(self) -> None:
        self.next_pick += math.floor(math.log(self._unit()) / math.log(1 - self.weight)) + 1

    def take(self, index: int) -> int | None:
        """The slot record `index` takes, or None when it is not sampled."""
        if self.filled < self.size:
            self.filled += 1
            return index
        if index != self.next_pick:
            return None
        slot = self.rng.randrange(self.size)
        self.weight *= math.exp(math.log(self._unit()) / self.size)
        self._skip()
        return slot

    def first_wanted(self, start: int) -> int:
        """The first index >= start the reservoir will take."""
        return start if self.filled < self.size else max(start, self.next_pick)


def sample_records(path: str | os.PathLike[str], size: int, seed: int) -> Sample:
    """`size` records of `path` drawn uniformly with `seed` (all when it has fewer).

    Raises `FastaError` (the file, the line, what) for an input a job would refuse,
    a repeated record id included."""
    reservoir = _ReservoirL(size, random.Random(seed))
    slots: dict[int, tuple[int, bytes]] = {}  # slot -> (record index, its raw bytes)
    run = input_pass(path)
    pending: tuple[int, int, list[bytes]] | None = None  # (slot, index, bytes so far)
    for block in run:
        pending = _collect(block, reservoir, slots, pending)
    if pending is not None:  # the file's last record
        slot, index, parts = pending
        slots[slot] = (index, b"".join(parts))
    check_unique_ids([(path, run.id_hashes)], record_starts)
    total = run.scan.records if run.scan is not None else 0
    return Sample(_parsed(path, sorted(slots.values())), total)


def _collect(
    block: Block,
    reservoir: _ReservoirL,
    slots: dict[int, tuple[int, bytes]],
    pending: tuple[int, int, list[bytes]] | None,
) -> tuple[int, int, list[bytes]] | None:
    """Take the sampled records of `block` into `slots`; the one it ends inside of is
    returned as still pending (its bytes go on in the next block)."""
    starts = [int(offset) - block.offset for offset in block.starts]
    if pending is not None:
        slot, index, parts = pending
        end = starts[0] if starts else len(block.data)
        parts.append(bytes(block.data[:end]))
        if not starts:
            return pending
        slots[slot] = (index, b"".join(parts))
        pending = None
    first, count = block.first_record, len(starts)
    index = reservoir.first_wanted(first)
    while index < first + count:
        taken = reservoir.take(index)
        if taken is not None:
            at = index - first
            if at + 1 < count:
                slots[taken] = (index, bytes(block.data[starts[at] : starts[at + 1]]))
            else:
                pending = (taken, index, [bytes(block.data[starts[at] :])])
        index = reservoir.first_wanted(index + 1)
    return pending


def _parsed(path: str | os.PathLike[str], raw: Sequence[tuple[int, bytes]]) -> list[SampledRecord]:
    """The sampled records' bytes parsed by the pipeline's reader of the file's format."""
    fmt = detect_format(path)
    records = []
    for index, data in raw:
        lines = iter(data.splitlines(keepends=True))  # an iterator, as a file is
        for record in parse_records(fmt, lines, offset=0, first_index=index, path=path):
            records.append(SampledRecord(index, record.id, record.sequence))
    return records


def write_fasta(records: Iterable[SampledRecord], path: Path) -> None:
    """The sample as FASTA, created 0600 (never readable by others, whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        for record in records:
            out.write(f">{record.id}\n")
            for start in range(0, len(record.sequence), FASTA_WIDTH):
                out.write(record.sequence[start : start + FASTA_WIDTH] + "\n")


__all__ = ["FastaError", "Sample", "SampledRecord", "sample_records", "write_fasta"]
