"""Record ids must be unique across a job's inputs: VirNucPro silently mixes up
duplicates, and our outputs key every row by id.

A scan keeps only an 8-byte hash of each id (`id_hash`), so a 10-million-record job
costs 80 MB, not a set of strings. `check_unique_ids` sorts the hashes of every file
together; only when two are equal does it re-read the headers, of the suspects alone,
to name the duplicated id, its files and lines (or to find a mere hash collision).
"""

from __future__ import annotations

import array
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np

from .input_error import FastaError

Path = str | os.PathLike[str]


class _Start(Protocol):
    """What is read here of a `fasta.RecordStart` (not imported: fasta imports us)."""

    @property
    def id(self) -> str: ...

    @property
    def line(self) -> int: ...


#: Where each record of a file starts: `fasta.record_starts`, or `inputs.record_starts`
#: for FASTA and FASTQ alike.
StartsOf = Callable[[Path], Iterable[_Start]]


def id_hash(rid: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(rid.encode(), digest_size=8).digest(), "little", signed=True
    )


def check_unique_ids(files: Sequence[tuple[Path, array.array[int]]], starts_of: StartsOf) -> None:
    """Raise `FastaError` at the first repeated id (in input order), naming where it
    first occurred; `files` holds each input with the id hashes of its records."""
    suspects = _colliding_hashes([hashes for _, hashes in files])
    if not suspects:
        return
    first_seen: dict[str, tuple[int, int]] = {}  # id -> (file index, line) of its first record
    repeats: list[tuple[str, int, int]] = []  # (id, file index, line) of each repeat, in order
    for index, (path, _) in enumerate(files):
        for start in starts_of(path):
            if id_hash(start.id) not in suspects:
                continue
            if start.id in first_seen:
                repeats.append((start.id, index, start.line))
            else:
                first_seen[start.id] = (index, start.line)
    if repeats:
        raise _duplicate_error(files, first_seen, repeats)
    # else: only a hash collision


def _colliding_hashes(per_file: list[array.array[int]]) -> set[int]:
    arrays = [np.frombuffer(hashes, dtype=np.int64) for hashes in per_file if len(hashes)]
    if not arrays:
        return set()
    hashes = np.sort(np.concatenate(arrays))
    return set(hashes[1:][hashes[1:] == hashes[:-1]].tolist())


def _duplicate_error(
    files: Sequence[tuple[Path, array.array[int]]],
    first_seen: dict[str, tuple[int, int]],
    repeats: list[tuple[str, int, int]],
) -> FastaError:
    rid, index, line = repeats[0]
    first_index, first_line = first_seen[rid]
    if first_index == index:
        first = f"first on line {first_line}"
    else:
        first = f"first in {files[first_index][0]}, line {first_line}"
    duplicated = list(dict.fromkeys(r for r, _, _ in repeats))
    shown = ", ".join(duplicated[:10]) + (" …" if len(duplicated) > 10 else "")
    scope = " in the job's inputs" if len(files) > 1 else ""
    return FastaError(
        files[index][0],
        f"duplicate record id {rid!r} ({first}); {len(duplicated)} id(s) occur more "
        f"than once{scope}: {shown}. Record ids (the header's first word) must be "
        "unique: rename or remove the duplicates",
        line=line,
    )
