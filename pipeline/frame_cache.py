"""Frames already scored, kept by content so that identical frames are computed once.

Sequencing libraries carry exact duplicate reads (PCR duplicates, abundant short
inserts); identical reads give identical frames, and a frame's features depend on
nothing but its two strings: DNABERT-S reads `Frame.nucleotides` (tokenized alone) and
ESM-2 reads `Frame.protein`, the classifier their two embeddings side by side. So a
frame is keyed by `frame_key`, a blake2b-128 digest of exactly those two strings
(length-prefixed, so that no two different pairs give the same bytes to digest). Two
different frames share a key only by a digest collision: about n^2 / 2^129 for n
distinct frames (1e-20 for a billion), and a `FrameCache` only ever holds the frames of
one scope (one job), so even a crafted collision could only touch its own author's job.

What a key maps to is the frame's output row: its two scores and, when the job keeps
embeddings, its two embeddings, as float32 bytes. The cache is an LRU bounded in bytes;
what it counts is every byte it holds (key, value and an entry's bookkeeping).

A cache belongs to one scope at a time (`enter`): the models it was filled with and who
may reuse it. Entering another scope empties it, so a worker that reloads models, or
moves on to another user's job, starts afresh: nothing is ever reused across them.
"""

from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict
from collections.abc import Hashable

from .frames import Frame

DEFAULT_FRAME_CACHE_MB = 256
# What an entry costs beyond its key and value objects: its node in the OrderedDict's
# linked list and its slot in the hash table (measured on CPython 3.11 at under 100
# bytes; tests/pipeline/test_frame_cache.py checks the total against tracemalloc).
ENTRY_OVERHEAD_BYTES = 112


def frame_key(frame: Frame) -> bytes:
    """The digest of everything the models read of a frame (see the module's doc)."""
    nucleotides = frame.nucleotides.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(digest_size=16)
    digest.update(len(nucleotides).to_bytes(8, "little"))
    digest.update(nucleotides)
    digest.update(frame.protein.encode("utf-8", "surrogatepass"))
    return digest.digest()


class FrameCache:
    """Frame rows by `frame_key`, least recently used dropped first, within `max_bytes`."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be at least 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._rows: OrderedDict[bytes, bytes] = OrderedDict()
        self._scope: Hashable = None

    @classmethod
    def of_megabytes(cls, megabytes: int) -> FrameCache | None:
        """A cache of `megabytes` MiB; None (no reuse at all) for 0."""
        return cls(megabytes << 20) if megabytes > 0 else None

    def __len__(self) -> int:
        return len(self._rows)

    def enter(self, scope: Hashable) -> None:
        """Serve `scope` from now on; rows of any other scope are dropped first."""
        if scope != self._scope:
            self.clear()
            self._scope = scope

    def clear(self) -> None:
        self._rows.clear()
        self.nbytes = 0

    def get(self, key: bytes) -> bytes | None:
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
        return row

    def put(self, key: bytes, row: bytes) -> None:
        """Keep `row` under `key`, dropping the least recently used rows to make room;
        a row larger than the whole bound is not kept."""
        cost = entry_bytes(key, row)
        if cost > self.max_bytes or key in self._rows:
            return
        while self.nbytes + cost > self.max_bytes:
            old_key, old_row = self._rows.popitem(last=False)
            self.nbytes -= entry_bytes(old_key, old_row)
        self._rows[key] = row
        self.nbytes += cost


def entry_bytes(key: bytes, row: bytes) -> int:
    """What one entry holds in memory: both bytes objects whole (header included) and
    the dictionary's share."""
    return sys.getsizeof(key) + sys.getsizeof(row) + ENTRY_OVERHEAD_BYTES
