"""Output files: exact headers, row order, the highest-score rule, and atomic publishing."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from virnuc.pipeline.outputs import (
    EMBEDDINGS,
    HIGHEST_SCORE,
    OUTPUT_NAMES,
    PREDICTIONS,
    SUMMARY,
    OutputExistsError,
    RecordResult,
    ResultWriter,
)


def result(
    record_id: str,
    frames: list[tuple[str, float]],
    length: int = 600,
    chunks: int = 2,
    dims: tuple[int, int] | None = None,
) -> RecordResult:
    """Frames given as (suffix after the record id, P(virus))."""
    p_virus = np.array([p for _, p in frames], dtype=np.float32)
    scores = np.stack([1 - p_virus, p_virus], axis=1).astype(np.float32)
    ids = [f"{record_id}_{suffix}" for suffix, _ in frames]
    n = len(frames)
    nuc = prot = None
    if dims:
        nuc = np.arange(n * dims[0], dtype=np.float32).reshape(n, dims[0])
        prot = -np.arange(n * dims[1], dtype=np.float32).reshape(n, dims[1])
    return RecordResult(record_id, length, chunks, ids, scores, nuc, prot)


RESULTS = [
    result("z", [("chunk_1F1", 0.9), ("chunk_1R2", 0.2), ("chunk_2F3", 0.5)]),
    result("a", [], length=2, chunks=1),
    result("m", [("chunk_1F2", 0.1)], length=300, chunks=1),
]


def write_all(out: Path, results: list[RecordResult], dims: tuple[int, int] | None = None) -> None:
    with ResultWriter(out, embedding_dims=dims) as writer:
        for r in results:
            writer.write(r)
        writer.commit()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_prediction_results_header_order_and_scores(tmp_path: Path) -> None:
    write_all(tmp_path, RESULTS)
    rows = lines(tmp_path / PREDICTIONS)
    assert rows[0] == "Sequence_ID\tPrediction\tscore1\tscore2"
    assert [r.split("\t")[:2] for r in rows[1:]] == [
        ["z_chunk_1F1", "virus"],
        ["z_chunk_1R2", "others"],
        ["z_chunk_2F3", "others"],
        ["m_chunk_1F2", "others"],
    ]
    # scores print as the original's `map(str, probability)` over a float32 numpy row
    assert rows[1].split("\t")[2:] == ["0.100000024", "0.9"]
    assert rows[3].split("\t")[2:] == ["0.5", "0.5"]


def test_highest_score_rule_per_chunk_in_input_order(tmp_path: Path) -> None:
    write_all(tmp_path, RESULTS)
    assert lines(tmp_path / HIGHEST_SCORE) == [
        "Modified_ID\tIs_Virus",
        "z_chunk_1\tTrue",  # max P(virus) 0.9 >= max P(others) 0.8
        "z_chunk_2\tTrue",  # a tie counts as virus (>=)
        "m_chunk_1\tFalse",
    ]


def test_sequence_summary_one_row_per_record(tmp_path: Path) -> None:
    write_all(tmp_path, RESULTS)
    assert lines(tmp_path / SUMMARY) == [
        "record_id\tlength\tchunks\tframes_scored\tchunks_virus\tmax_virus_score\tcall",
        "z\t600\t2\t3\t2\t0.9\tvirus",
        "a\t2\t1\t0\t0\tNA\tno_frames",
        "m\t300\t1\t1\t0\t0.1\tothers",
    ]


def test_embeddings_are_row_aligned_with_predictions(tmp_path: Path) -> None:
    dims = (3, 5)
    results = [
        result("z", [("chunk_1F1", 0.9), ("chunk_1F2", 0.4)], dims=dims),
        result("a", [], dims=dims),
        result("m", [("chunk_1R3", 0.1)], dims=dims),
    ]
    write_all(tmp_path, results, dims)
    predicted_ids = [row.split("\t")[0] for row in lines(tmp_path / PREDICTIONS)[1:]]
    with h5py.File(tmp_path / EMBEDDINGS) as h5:
        assert [i.decode() for i in h5["ids"][:]] == predicted_ids
        np.testing.assert_array_equal(h5["nucleotide"][:2], results[0].nucleotide)
        np.testing.assert_array_equal(h5["protein"][2:], results[2].protein)
        assert h5["nucleotide"].shape == (3, 3)
        assert h5["protein"].shape == (3, 5)


def test_nothing_final_appears_until_commit_and_an_error_leaves_nothing(tmp_path: Path) -> None:
    def interrupted_job() -> None:
        with ResultWriter(tmp_path, embedding_dims=(3, 5)) as writer:
            writer.write(result("z", [("chunk_1F1", 0.9)], dims=(3, 5)))
            assert not any((tmp_path / name).exists() for name in OUTPUT_NAMES)
            raise RuntimeError("killed mid-job")

    with pytest.raises(RuntimeError):
        interrupted_job()
    assert list(tmp_path.iterdir()) == []


def test_existing_results_are_kept_unless_forced(tmp_path: Path) -> None:
    write_all(tmp_path, RESULTS)
    before = (tmp_path / PREDICTIONS).read_text()
    with pytest.raises(OutputExistsError, match="--force"):
        ResultWriter(tmp_path)
    assert (tmp_path / PREDICTIONS).read_text() == before
    with ResultWriter(tmp_path, force=True) as writer:
        writer.write(RESULTS[2])
        writer.commit()
    assert len(lines(tmp_path / PREDICTIONS)) == 2
