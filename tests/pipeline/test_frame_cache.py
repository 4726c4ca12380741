"""Identical frames computed once: the cache's key, bound and scopes, and the predictor's
outputs with reuse equal to computing every frame (tests/e2e/test_worker.py: across the
units of a worker, and never across jobs)."""

from __future__ import annotations

import dataclasses
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from virnuc.pipeline.fasta import FastaRecord, read_records
from virnuc.pipeline.frame_cache import FrameCache, entry_bytes, frame_key
from virnuc.pipeline.frames import Frame
from virnuc.pipeline.models import ModelSet
from virnuc.pipeline.outputs import RecordResult
from virnuc.pipeline.predict import Predictor

from bench.synthetic import random_lengths, write_fasta

BLOCK = 7  # frames per block: duplicates fall within blocks and across them


def frame(nucleotides: str, protein: str) -> Frame:
    return Frame("f", "c", nucleotides, protein)


def test_the_key_is_the_frames_two_strings_and_nothing_else() -> None:
    key = frame_key(frame("ATGAAA", "MK"))
    assert key == frame_key(Frame("other_id", "other_chunk", "ATGAAA", "MK"))
    assert len(key) == 16
    assert frame_key(frame("ATGAAC", "MK")) != key
    assert frame_key(frame("ATGAAA", "MN")) != key
    # the nucleotides are length-prefixed: moving a letter across the boundary differs
    assert frame_key(frame("AB", "C")) != frame_key(frame("A", "BC"))


def test_the_cache_never_holds_more_than_its_bound_and_drops_the_oldest() -> None:
    row = bytes(8)
    keys = [i.to_bytes(16, "little") for i in range(50)]
    cache = FrameCache(5 * entry_bytes(keys[0], row))
    for i, key in enumerate(keys[:5]):
        cache.put(key, row)
        assert len(cache) == i + 1
    assert cache.get(keys[0]) == row  # used: now the most recent
    cache.put(keys[5], row)
    assert cache.get(keys[1]) is None  # the least recently used went
    assert all(cache.get(key) == row for key in (keys[0], *keys[2:6]))
    for key in keys[6:]:
        cache.put(key, row)
        assert len(cache) == 5
        assert cache.nbytes <= cache.max_bytes
    assert [cache.get(key) for key in keys[-5:]] == [row] * 5
    assert cache.nbytes == 5 * entry_bytes(keys[0], row)


def test_a_row_larger_than_the_bound_is_not_kept() -> None:
    cache = FrameCache(100)
    cache.put(bytes(16), bytes(1000))
    assert len(cache) == 0
    assert cache.nbytes == 0


def test_entering_another_scope_empties_the_cache() -> None:
    cache = FrameCache(1 << 20)
    cache.enter("job-a")
    cache.put(bytes(16), bytes(8))
    cache.enter("job-a")
    assert len(cache) == 1
    cache.enter("job-b")
    assert (len(cache), cache.nbytes, cache.get(bytes(16))) == (0, 0, None)


@pytest.mark.parametrize("width", [2, 2 + 768 + 320])
def test_the_bytes_counted_cover_what_the_rows_take(width: int) -> None:
    """Its count is honest: at least what Python allocates for the entries (measured)."""
    rng = random.Random(3)
    cache = FrameCache(1 << 30)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(3000):  # made here, so that each one is traced
            cache.put(rng.randbytes(16), rng.randbytes(4 * width))
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert allocated <= cache.nbytes
    assert cache.nbytes <= 1.5 * allocated  # and not a wild overestimate either


# --- the predictor ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def unique(tmp_path_factory: pytest.TempPathFactory) -> list[FastaRecord]:
    path = tmp_path_factory.mktemp("in") / "in.fa"
    write_fasta(path, [*random_lengths(10, seed=9, high=900), 2], seed=9)
    return list(read_records(path))


def with_duplicates(records: list[FastaRecord]) -> list[FastaRecord]:
    """Each record, then copies of some under ids of their own: a copy right after its
    original (same block), and copies far later (other blocks)."""
    out = []
    for r in records:
        out.append(r)
        if r.index % 2 == 0:
            out.append(FastaRecord(f"{r.id}_again", r.sequence, 0))
    out += [FastaRecord(f"{r.id}_late", r.sequence.lower(), 0) for r in records[:4]]
    return [dataclasses.replace(r, index=i) for i, r in enumerate(out)]


def run(predictor: Predictor, records: list[FastaRecord]) -> list[RecordResult]:
    return list(predictor.predict(records))


def assert_same_outputs(got: list[RecordResult], want: list[RecordResult]) -> None:
    """As batching changes leave them (test_predict.py's tolerances), ids exactly."""
    assert [r.record_id for r in got] == [r.record_id for r in want]
    assert [r.frame_ids for r in got] == [r.frame_ids for r in want]
    for g, w in zip(got, want, strict=True):
        assert (g.length, g.chunks, g.n_bases) == (w.length, w.chunks, w.n_bases)
        np.testing.assert_allclose(g.scores, w.scores, rtol=0, atol=1e-6)
        assert (g.nucleotide is None) == (w.nucleotide is None)
        if w.nucleotide is not None:
            np.testing.assert_allclose(g.nucleotide, w.nucleotide, rtol=0, atol=1e-5)
            np.testing.assert_allclose(g.protein, w.protein, rtol=0, atol=1e-5)


def reused(results: list[RecordResult]) -> int:
    return sum(r.frames_reused for r in results)


def distinct_frames(results: list[RecordResult], records: list[FastaRecord]) -> int:
    """Frames of distinct content: a copy's frames are its original's (upper-cased)."""
    sequences = {r.sequence.upper() for r in records}
    by_sequence = {r.sequence.upper(): res for r, res in zip(records, results, strict=True)}
    return sum(len(by_sequence[s].frame_ids) for s in sequences)


@pytest.mark.parametrize("keep_embeddings", [True, False])
@pytest.mark.parametrize("prefetch", [False, True])
def test_reuse_gives_the_outputs_of_computing_every_frame(
    demo_models: ModelSet, unique, keep_embeddings: bool, prefetch: bool
) -> None:
    records = with_duplicates(unique)
    options = dict(keep_embeddings=keep_embeddings, block_frames=BLOCK, prefetch=prefetch)
    every = run(Predictor(demo_models, frame_cache_mb=0, **options), records)
    reusing = run(Predictor(demo_models, **options), records)
    assert_same_outputs(reusing, every)
    frames = sum(len(r.frame_ids) for r in every)
    assert reused(every) == 0
    assert reused(reusing) == frames - distinct_frames(every, records) > 0
    # a record's count is its own frames that were copies
    copies = [r for r in reusing if r.record_id.endswith(("_again", "_late"))]
    assert all(r.frames_reused == len(r.frame_ids) for r in copies)
    originals = [r for r in reusing if not r.record_id.endswith(("_again", "_late"))]
    assert reused(originals) == 0  # the random records share no frame


def test_without_duplicates_reuse_changes_no_bit(demo_models: ModelSet, unique) -> None:
    options = dict(keep_embeddings=True, block_frames=BLOCK)
    every = run(Predictor(demo_models, frame_cache_mb=0, **options), unique)
    reusing = run(Predictor(demo_models, **options), unique)
    assert reused(reusing) == 0
    for g, w in zip(reusing, every, strict=True):
        assert g.frame_ids == w.frame_ids
        for name in ("scores", "nucleotide", "protein"):
            assert np.array_equal(getattr(g, name), getattr(w, name)), name


def test_a_shared_cache_serves_the_next_unit_of_the_same_scope(
    demo_models: ModelSet, unique
) -> None:
    cache = FrameCache(1 << 20)
    first = run(Predictor(demo_models, frame_cache=cache, reuse_scope="job-a"), unique)
    again = run(Predictor(demo_models, frame_cache=cache, reuse_scope="job-a"), unique)
    assert reused(first) == 0
    assert reused(again) == sum(len(r.frame_ids) for r in again) > 0
    assert_same_outputs(again, first)


def test_a_tiny_bound_evicts_and_stays_correct(demo_models: ModelSet, unique) -> None:
    records = with_duplicates(unique)
    every = run(Predictor(demo_models, frame_cache_mb=0, block_frames=BLOCK), records)
    probe = bytes(8)  # a scores-only row: 2 float32
    bound = 4 * entry_bytes(bytes(16), probe)  # four frames
    cache = FrameCache(bound)
    sizes: list[tuple[int, int]] = []
    real_put = cache.put

    def put(key: bytes, row: bytes) -> None:
        real_put(key, row)
        sizes.append((len(cache), cache.nbytes))

    cache.put = put  # type: ignore[method-assign]
    reusing = run(Predictor(demo_models, frame_cache=cache, block_frames=BLOCK), records)
    assert_same_outputs(reusing, every)
    assert len(sizes) > 4  # more distinct frames than it holds: it had to drop some
    assert all(count <= 4 and used <= bound for count, used in sizes)
    # still reused: copies inside a block, and a copy right after its original
    assert 0 < reused(reusing) < reused(run(Predictor(demo_models, block_frames=BLOCK), records))


def test_another_scope_reuses_nothing(demo_models: ModelSet, unique) -> None:
    """A job (the worker's scope) never gets rows another job computed."""
    cache = FrameCache(1 << 20)
    run(Predictor(demo_models, frame_cache=cache, reuse_scope="job-of-alice"), unique)
    bob = run(Predictor(demo_models, frame_cache=cache, reuse_scope="job-of-bob"), unique)
    assert reused(bob) == 0


def test_other_models_or_precision_reuse_nothing(
    demo_models: ModelSet, demo_cache: Path, unique
) -> None:
    cache = FrameCache(1 << 20)
    run(Predictor(demo_models, frame_cache=cache, reuse_scope="job"), unique)
    bf16 = ModelSet.load(dataclasses.replace(demo_models.spec, precision="bf16"))
    assert reused(run(Predictor(bf16, frame_cache=cache, reuse_scope="job"), unique)) == 0
    # the same spec loaded again is another load: its rows are not taken on trust either
    reloaded = ModelSet.load(demo_models.spec)
    assert reused(run(Predictor(reloaded, frame_cache=cache, reuse_scope="job"), unique)) == 0
    # and rows without embeddings never serve a job that keeps them
    with_embeddings = Predictor(
        reloaded, frame_cache=cache, reuse_scope="job", keep_embeddings=True
    )
    results = run(with_embeddings, unique)
    assert reused(results) == 0
    assert all(r.nucleotide is not None for r in results if r.frame_ids)
