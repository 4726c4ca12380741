"""The prediction engine: records in, `RecordResult`s out, in input order.

Frames from consecutive records are pooled into blocks of about `block_frames`, so the
embedders see enough sequences to batch well (they sort each block by length), yet
memory stays bounded whatever the input: a huge record spans several blocks, and a
record is released as soon as its last frame is scored.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .classifier import classify
from .fasta import FastaRecord
from .frames import Frame, chunk_starts, record_frames
from .models import ModelSet
from .outputs import RecordResult
from .prefetch import prefetched
from .record_warnings import n_bases

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
        )


@dataclass(slots=True)
class _Block:
    """Frames to score together, and the records first seen (`opened`) and fully
    enumerated (`closed`) since the previous block."""

    frames: list[tuple[Frame, _Pending]]
    opened: list[_Pending]
    closed: list[_Pending]
    dna_tokens: list[list[int]] = field(default_factory=list)  # DNABERT's, per frame


class Predictor:
    """Runs VirNucPro's pipeline with a warm `ModelSet`.

    With `prefetch`, the next block is cut (records read, frames translated, DNA
    tokenized) on a thread while the current one is scored; the results are the same
    either way, but the records iterator is then advanced on that thread, one block
    ahead, and records without a frame wait in the block being cut (at most
    `block_frames` of them) rather than each crossing to the consumer as a block of
    its own: a hand-over between threads costs more than such a record's own work.
    """

    def __init__(
        self,
        models: ModelSet,
        *,
        keep_embeddings: bool = False,
        block_frames: int = DEFAULT_BLOCK_FRAMES,
        prefetch: bool = False,
    ):
        self.models = models
        self.keep_embeddings = keep_embeddings
        self.block_frames = block_frames
        self.prefetch = prefetch

    def predict(self, records: Iterable[FastaRecord]) -> Iterator[RecordResult]:
        blocks = _tokenized(
            _cut_blocks(
                records,
                self.models.spec.chunk_length,
                self.block_frames,
                eager=not self.prefetch,
            ),
            self.models.dnabert.tokenize,
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
        nucleotide = self.models.dnabert.embed_tokens(cut.dna_tokens)
        protein = self.models.esm.embed([f.protein for f in frames])
        scores = classify(self.models.classifier, np.concatenate([nucleotide, protein], axis=1))
        start = 0
        for owner, count in _runs(block):
            end = start + count
            owner.frame_ids.extend(f.id for f in frames[start:end])
            kept = (
                (nucleotide[start:end], protein[start:end])
                if self.keep_embeddings
                else (None, None)
            )
            owner.pieces.append((scores[start:end], *kept))
            start = end


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
    blocks: Iterator[_Block], tokenize: Callable[[list[str]], list[list[int]]]
) -> Iterator[_Block]:
    """The blocks with their frames' DNA tokenized (host work the prefetch thread does)."""
    for block in blocks:
        block.dna_tokens = tokenize([frame.nucleotides for frame, _ in block.frames])
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
