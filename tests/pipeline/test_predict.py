"""The engine in-process: the original's per-frame method, blocks, prefetching (a whole
prediction to outputs: test_run.py; tests/e2e/test_cli_predict.py runs `virnucctl predict`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from virnuc.pipeline.classifier import classify
from virnuc.pipeline.fasta import FastaRecord, read_records
from virnuc.pipeline.frames import record_frames
from virnuc.pipeline.predict import Predictor, _cut_blocks

from bench.synthetic import random_lengths, write_fasta


def original_scores(models, records: list[FastaRecord]) -> tuple[list[str], np.ndarray]:
    """VirNucPro's way: every frame embedded alone, then the classifier."""
    tokenizer, bert = models.dnabert.tokenizer, models.dnabert.model
    esm_model, converter = models.esm.model, models.esm.alphabet.get_batch_converter(1022)
    layer = esm_model.num_layers
    ids, features = [], []
    with torch.no_grad():
        for record in records:
            for frame in record_frames(record.id, record.sequence.upper(), 300):
                nucleotide = bert(tokenizer(frame.nucleotides, return_tensors="pt")["input_ids"])
                _, _, tokens = converter([(frame.id, frame.protein)])
                reps = esm_model(tokens, repr_layers=[layer])["representations"][layer]
                protein = reps[0, 1 : min(len(frame.protein), 1022) + 1].mean(0)
                ids.append(frame.id)
                features.append(torch.cat([nucleotide[0][0].mean(0), protein]))
    return ids, classify(models.classifier, torch.stack(features).numpy())


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[FastaRecord]:
    path = tmp_path_factory.mktemp("in") / "in.fa"
    write_fasta(path, [*random_lengths(12, seed=5), 40, 2, 1800], seed=5)
    return list(read_records(path))


def test_scores_equal_the_original_per_frame_method(demo_models, records) -> None:
    results = list(Predictor(demo_models).predict(records))
    ids, expected = original_scores(demo_models, records)
    assert [i for r in results for i in r.frame_ids] == ids
    got = np.concatenate([r.scores for r in results])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("block_frames", [1, 7, 100_000])
def test_block_size_changes_nothing(demo_models, records, block_frames: int) -> None:
    reference = list(Predictor(demo_models, keep_embeddings=True).predict(records))
    results = list(
        Predictor(demo_models, keep_embeddings=True, block_frames=block_frames).predict(records)
    )
    assert [r.record_id for r in results] == [r.id for r in records]
    for got, want in zip(results, reference, strict=True):
        assert (got.length, got.chunks, got.frame_ids) == (want.length, want.chunks, want.frame_ids)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
        if want.frame_ids:
            np.testing.assert_allclose(got.nucleotide, want.nucleotide, atol=1e-5)
            np.testing.assert_allclose(got.protein, want.protein, atol=1e-5)


def test_records_without_frames_keep_their_place(demo_models, records) -> None:
    results = list(Predictor(demo_models).predict(records))
    short = [r for r in results if r.length == 2]
    assert len(short) == 1
    assert short[0].frame_ids == []
    assert short[0].chunks == 1


@pytest.mark.parametrize("block_frames", [1, 7, 2048])
def test_prefetching_the_next_block_gives_the_same_arrays(
    demo_models, records, block_frames: int
) -> None:
    def run(prefetch: bool) -> list:
        predictor = Predictor(
            demo_models, keep_embeddings=True, block_frames=block_frames, prefetch=prefetch
        )
        return list(predictor.predict(records))

    for got, want in zip(run(True), run(False), strict=True):
        assert (got.record_id, got.frame_ids) == (want.record_id, want.frame_ids)
        for name in ("scores", "nucleotide", "protein"):
            have, expected = getattr(got, name), getattr(want, name)
            assert (have is None) == (expected is None)
            assert have is None or np.array_equal(have, expected), name


def test_without_eager_records_without_frames_share_a_block() -> None:
    # Prefetching hands each block to another thread: frameless records wait in the
    # block being cut, at most block_frames of them, rather than crossing one by one.
    frameless = [FastaRecord(f"r{i}", "TTAGTTAGTTAG", i) for i in range(10)]
    eager = list(_cut_blocks(frameless, 300, 4))
    held = list(_cut_blocks(frameless, 300, 4, eager=False))
    assert [len(b.closed) for b in eager] == [1] * 10
    assert [len(b.closed) for b in held] == [4, 4, 2]
    assert [p.record_id for b in held for p in b.opened] == [r.id for r in frameless]
    assert all(not b.frames for b in held)
