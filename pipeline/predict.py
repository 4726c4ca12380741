"""The prediction engine: records in, `RecordResult`s out, in input order.

Frames from consecutive records are pooled into blocks of about `block_frames`, so the
embedders see enough sequences to batch well (they sort each block by length), yet
memory stays bounded whatever the input: a huge record spans several blocks, and a
record is released as soon as its last frame is scored.

With a `FrameCache` (the default), a frame identical to one scored before is not
computed again (`pipeline.frame_cache`): each block embeds only its distinct frames
that the cache does not hold, and every frame gets the row of its content.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .classifier import classify
from .frame_cache import DEFAULT_FRAME_CACHE_MB, FrameCache, frame_key
from .frames import Frame, chunk_starts, record_frames
from .models import ModelSet
from .prefetch import prefetched
from .record_result import RecordResult
from .record_warnings import n_bases

if TYPE_CHECKING:  # only its id and sequence are read: bench/gpu_bench.py runs without Bio
    from .fasta import FastaRecord

DEFAULT_BLOCK_FRAMES = 2048
# The scores of every record without frames: one read-only array, not one per record.
_NO_SCORES = np.zeros((0, 2), np.float32)
_NO_SCORES.flags.writeable = False


@dataclass(slots=True)
class _Pending:
    """A record whose frames are being scored; pieces arrive block by block."""

    record_id: str
    length: int
    chunks: int
    n_bases: int
    frame_ids: list[str] = field(default_factory=list)
    pieces: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = field(
        default_factory=list
    )
    enumerated: bool = False
    reused: int = 0  # frames whose rows were not computed for this record's own frame

    def result(self) -> RecordResult:
        if not self.pieces:
            return RecordResult(
                self.record_id, self.length, self.chunks, [], _NO_SCORES, n_bases=self.n_bases
            )
        scores, nucleotide, protein = zip(*self.pieces, strict=True)
        return RecordResult(
            self.record_id,
            self.length,
            self.chunks,
            self.frame_ids,
            np.concatenate(scores),
            None if nucleotide[0] is None else np.concatenate(nucleotide),
            None if protein[0] is None else np.concatenate(protein),
            self.n_bases,
            self.reused,
        )


@dataclass(slots=True)
class _Block:
    """Frames to score together, and the records first seen (`opened`) and fully
    enumerated (`closed`) since the previous block."""

    frames: list[tuple[Frame, _Pending]]
    opened: list[_Pending]
    closed: list[_Pending]
    # DNABERT's tokens, per frame; with reuse, per distinct frame (`distinct` order)
    dna_tokens: list[list[int]] = field(default_factory=list)
    distinct: DistinctFrames | None = None  # with reuse: the block's distinct frames


@dataclass(slots=True)
class DistinctFrames:
    """A block's frames by content: `keys[j]` is the j-th distinct frame's `frame_key`,
    `first[j]` the index of its first frame, `inverse[i]` frame i's distinct index."""

    keys: list[bytes]
    first: list[int]
    inverse: np.ndarray

    @classmethod
    def of(cls, frames: list[Frame]) -> DistinctFrames:
        index: dict[bytes, int] = {}
        first: list[int] = []
        inverse = np.empty(len(frames), np.intp)
        for i, frame in enumerate(frames):
            j = index.setdefault(frame_key(frame), len(first))
            if j == len(first):
                first.append(i)
            inverse[i] = j
        return cls(list(index), first, inverse)


class Predictor:
    """Runs VirNucPro's pipeline with a warm `ModelSet`.

    With `prefetch`, the next block is cut (records read, frames translated, DNA
    tokenized) on a thread while the current one is scored; the results are the same
    either way, but the records iterator is then advanced on that thread, one block
    ahead, and records without a frame wait in the block being cut (at most
    `block_frames` of them) rather than each crossing to the consumer as a block of
    its own: a hand-over between threads costs more than such a record's own work.

    Identical frames are computed once: `frame_cache` is a cache shared with other
    predictors (a worker's, across the units of a job); without one the predictor
    keeps its own of `frame_cache_mb` MiB, and with 0 MiB there is no reuse at all
    (every frame computed, as before reuse existed). Rows are only reused within
    `reuse_scope` (a worker passes the job's id) and the same loaded models.
    """

    def __init__(
        self,
        models: ModelSet,
        *,
        keep_embeddings: bool = False,
        block_frames: int = DEFAULT_BLOCK_FRAMES,
        prefetch: bool = False,
        frame_cache: FrameCache | None = None,
        frame_cache_mb: int = DEFAULT_FRAME_CACHE_MB,
        reuse_scope: Hashable = None,
    ):
        self.models = models
        self.keep_embeddings = keep_embeddings
        self.block_frames = block_frames
        self.prefetch = prefetch
        self.cache = (
            frame_cache if frame_cache is not None else FrameCache.of_megabytes(frame_cache_mb)
        )
        # Whatever decides a frame's row besides its content: rows of another scope,
        # other models or without the embeddings are never reused.
        self.scope = (reuse_scope, models.spec, str(models.device), models.load_id, keep_embeddings)

    def predict(self, records: Iterable[FastaRecord]) -> Iterator[RecordResult]:
        blocks = _tokenized(
            _cut_blocks(
                records,
                self.models.spec.chunk_length,
                self.block_frames,
                eager=not self.prefetch,
            ),
            self.models.dnabert.tokenize,
            reuse=self.cache is not None,
        )
        pending: deque[_Pending] = deque()
        for block in prefetched(blocks) if self.prefetch else blocks:
            pending.extend(block.opened)
            self._score(block)
            for record in block.closed:
                record.enumerated = True
            yield from _completed(pending)

    def _score(self, cut: _Block) -> None:
        block = cut.frames
        if not block:
            return
        frames = [frame for frame, _ in block]
        rows: _Rows
        if cut.distinct is None:
            rows = self._embed(cut.dna_tokens, [f.protein for f in frames])
            reused = np.zeros(len(frames), bool)
        else:
            rows, reused = self._reusing(cut.distinct, cut.dna_tokens, frames)
        scores, nucleotide, protein = rows
        start = 0
        for owner, count in _runs(block):
            end = start + count
            owner.frame_ids.extend(f.id for f in frames[start:end])
            owner.reused += int(np.count_nonzero(reused[start:end]))
            kept = (
                (nucleotide[start:end], protein[start:end])
                if self.keep_embeddings and nucleotide is not None and protein is not None
                else (None, None)
            )
            owner.pieces.append((scores[start:end], *kept))
            start = end

    def _embed(
        self, dna_tokens: list[list[int]], proteins: list[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores, nucleotide and protein embeddings of frames, all computed."""
        nucleotide = self.models.dnabert.embed_tokens(dna_tokens)
        protein = self.models.esm.embed(proteins)
        scores = classify(self.models.classifier, np.concatenate([nucleotide, protein], axis=1))
        return scores, nucleotide, protein

    def _reusing(
        self, distinct: DistinctFrames, dna_tokens: list[list[int]], frames: list[Frame]
    ) -> tuple[_Rows, np.ndarray]:
        """Every frame's rows, computing only the distinct frames the cache lacks; and
        which frames were not computed for themselves (a copy, or a cached row)."""
        assert self.cache is not None
        self.cache.enter(self.scope)
        held = [self.cache.get(key) for key in distinct.keys]
        missing = [j for j, row in enumerate(held) if row is None]
        table = np.empty((len(held), self._row_width()), np.float32)
        if missing:
            scores, nucleotide, protein = self._embed(
                [dna_tokens[j] for j in missing],
                [frames[distinct.first[j]].protein for j in missing],
            )
            parts = [scores, nucleotide, protein] if self.keep_embeddings else [scores]
            computed = np.concatenate(parts, axis=1)
            table[missing] = computed
            for j, row in zip(missing, computed, strict=True):
                self.cache.put(distinct.keys[j], row.tobytes())
        hits = [j for j, row in enumerate(held) if row is not None]
        if hits:
            joined = b"".join(row for row in held if row is not None)
            table[hits] = np.frombuffer(joined, np.float32).reshape(len(hits), -1)
        reused = np.ones(len(frames), bool)
        reused[[distinct.first[j] for j in missing]] = False
        return self._split(table[distinct.inverse]), reused

    def _row_width(self) -> int:
        """A cached row: the 2 scores, then with embeddings DNABERT's and ESM's."""
        if not self.keep_embeddings:
            return 2
        return 2 + self.models.dnabert.dim + self.models.esm.dim

    def _split(self, rows: np.ndarray) -> _Rows:
        scores = np.ascontiguousarray(rows[:, :2])
        if not self.keep_embeddings:
            return scores, None, None
        split = 2 + self.models.dnabert.dim
        return scores, np.ascontiguousarray(rows[:, 2:split]), np.ascontiguousarray(rows[:, split:])


_Rows = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]  # scores, nucleotide, protein


def _cut_blocks(
    records: Iterable[FastaRecord], chunk_length: int, block_frames: int, *, eager: bool = True
) -> Iterator[_Block]:
    """Pool consecutive records' frames into blocks of `block_frames`. With `eager`, a
    record that ends with the block empty closes at once (an empty block), so without
    prefetch every finished result is out before the next record is read; otherwise
    such records stay in the block until it fills with frames or holds `block_frames`
    closed records."""
    block: list[tuple[Frame, _Pending]] = []
    opened: list[_Pending] = []
    closed: list[_Pending] = []
    for record in records:
        length = len(record.sequence)
        chunks = len(chunk_starts(length, chunk_length))
        current = _Pending(record.id, length, chunks, n_bases(record.sequence))
        opened.append(current)
        for frame in record_frames(record.id, record.sequence, chunk_length):
            block.append((frame, current))
            if len(block) >= block_frames:
                yield _Block(block, opened, closed)
                block, opened, closed = [], [], []
        closed.append(current)
        if not block and (eager or len(closed) >= block_frames):
            yield _Block([], opened, closed)
            opened, closed = [], []
    if block or opened or closed:
        yield _Block(block, opened, closed)


def _tokenized(
    blocks: Iterator[_Block], tokenize: Callable[[list[str]], list[list[int]]], *, reuse: bool
) -> Iterator[_Block]:
    """The blocks with their frames' DNA tokenized (host work the prefetch thread does);
    with `reuse`, their distinct frames found first and only those tokenized."""
    for block in blocks:
        frames = [frame for frame, _ in block.frames]
        if reuse:
            block.distinct = DistinctFrames.of(frames)
            frames = [frames[i] for i in block.distinct.first]
        block.dna_tokens = tokenize([frame.nucleotides for frame in frames])
        yield block


def _runs(block: list[tuple[Frame, _Pending]]) -> Iterator[tuple[_Pending, int]]:
    """Consecutive frames of the same record, as (record, count)."""
    owner, count = block[0][1], 0
    for _, frame_owner in block:
        if frame_owner is not owner:
            yield owner, count
            owner, count = frame_owner, 0
        count += 1
    yield owner, count


def _completed(pending: deque[_Pending]) -> Iterator[RecordResult]:
    while pending and pending[0].enumerated:
        yield pending.popleft().result()
