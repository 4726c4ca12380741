"""Output files: exact headers, row order, the highest-score rule, and atomic publishing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from virnuc.pipeline.outputs import (
    EMBEDDINGS,
    HIGHEST_SCORE,
    OUTPUT_NAMES,
    PREDICTIONS,
    SUMMARY,
    VIRUS_FASTA,
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
        for n, r in enumerate(results):
            writer.write(r, source=source_of(n))
        writer.commit()


def source_of(n: int) -> str:
    """Records alternate between two input files."""
    return f"/in/{'ab'[n % 2]}.fq"


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


def test_sequence_summary_one_row_per_record_with_its_source_file(tmp_path: Path) -> None:
    write_all(tmp_path, RESULTS)
    assert lines(tmp_path / SUMMARY) == [
        "record_id\tlength\tchunks\tframes_scored\tchunks_virus\tmax_virus_score\tcall\tsource"
        "\twarnings",
        "z\t600\t2\t3\t2\t0.9\tvirus\t/in/a.fq\t",
        "a\t2\t1\t0\t0\tNA\tno_frames\t/in/b.fq\tno_frames",
        "m\t300\t1\t1\t0\t0.1\tothers\t/in/a.fq\t",
    ]


def test_warnings_name_what_weakens_a_call_last_and_semicolon_joined(tmp_path: Path) -> None:
    results = [
        result("fine", [("chunk_1F1", 0.9)], length=300, chunks=1),
        replace(result("short", [], length=120, chunks=1), n_bases=61),  # 61 of 120: N
        replace(result("half", [("chunk_1F1", 0.9)], length=400, chunks=2), n_bases=200),
        result("unknown_n", [("chunk_1F1", 0.9)], length=400, chunks=2),  # an older part
    ]
    with ResultWriter(tmp_path, chunk_length=300) as writer:
        for r in results:
            writer.write(r, source="/in.fa")
        writer.commit()
    warnings = {row.split("\t")[0]: row.split("\t")[-1] for row in lines(tmp_path / SUMMARY)[1:]}
    assert warnings == {
        "fine": "",
        "short": "no_frames;shorter_than_chunk;mostly_N",
        "half": "",  # exactly half is not "more than half"
        "unknown_n": "",
    }


def test_a_source_path_with_a_tab_or_non_ascii_letters_stays_one_field(tmp_path: Path) -> None:
    with ResultWriter(tmp_path) as writer:
        writer.write(RESULTS[0], source="/in/m\u00fcller\tlab.fq")
        writer.commit()
    row = lines(tmp_path / SUMMARY)[1].split("\t")
    assert len(row) == 9
    assert row[-2] == "/in/m\u00fcller lab.fq"


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


# --- who owns the output dir: files that are not ours are never replaced without force --


def partials(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".partial"))


def publish(
    out: Path,
    results: list[RecordResult],
    meanwhile: Callable[[], object] = lambda: None,
    **options: Any,
) -> None:
    """The daemon's way: checked free at submit, so not again when the writer opens;
    `meanwhile` runs after the last write, before `commit()`."""
    with ResultWriter(out, check_free=False, **options) as writer:
        for n, r in enumerate(results):
            writer.write(r, source=source_of(n))
        meanwhile()
        writer.commit()


def theirs(path: Path, text: str = "someone else's\n") -> Callable[[], object]:
    return lambda: path.write_text(text)


def assert_names_the_file_and_what_to_do(message: str, out: Path, name: str) -> None:
    for part in (str(out), name, "did not write", "move it away", "--force"):
        assert part in message, message


def test_a_file_that_appeared_mid_job_is_not_replaced_and_nothing_is_published(
    tmp_path: Path,
) -> None:
    with pytest.raises(OutputExistsError) as error:
        publish(tmp_path, RESULTS, theirs(tmp_path / PREDICTIONS))
    assert_names_the_file_and_what_to_do(str(error.value), tmp_path, PREDICTIONS)
    assert (tmp_path / PREDICTIONS).read_text() == "someone else's\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREDICTIONS]  # none of ours


def test_an_embeddings_file_that_appeared_is_not_deleted_without_force(tmp_path: Path) -> None:
    """A job without embeddings deletes a stale embeddings.h5, but only when forced."""
    with pytest.raises(OutputExistsError, match=EMBEDDINGS):
        publish(tmp_path, RESULTS, theirs(tmp_path / EMBEDDINGS))
    assert sorted(p.name for p in tmp_path.iterdir()) == [EMBEDDINGS]
    publish(tmp_path, RESULTS, force=True)
    assert not (tmp_path / EMBEDDINGS).exists()


def test_with_force_a_file_that_appeared_mid_job_is_replaced(tmp_path: Path) -> None:
    publish(tmp_path, RESULTS, theirs(tmp_path / PREDICTIONS), force=True)
    assert lines(tmp_path / PREDICTIONS)[1].startswith("z_chunk_1F1\tvirus")
    assert partials(tmp_path) == []


def test_our_files_from_an_interrupted_publish_are_replaced(tmp_path: Path) -> None:
    """A crash between the renames (or before the job was marked done) leaves final
    files with exactly the bytes the next assembly writes: those are ours."""
    dims = (3, 5)
    results = [result("z", [("chunk_1F1", 0.9)], dims=dims), result("m", [], dims=dims)]
    reference, out = tmp_path / "reference", tmp_path / "out"
    write_all(reference, results, dims)
    out.mkdir()
    for name in (SUMMARY, HIGHEST_SCORE, EMBEDDINGS):  # renamed before the crash
        (out / name).write_bytes((reference / name).read_bytes())
    publish(out, results, embedding_dims=dims)
    for name in (n for n in OUTPUT_NAMES if (reference / n).exists()):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert partials(out) == []


def test_a_file_appearing_during_the_renames_is_not_replaced_and_ours_are_taken_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check before the renames passed; the name appears just after it. A rename
    would replace it; the hard link that places each file refuses to, and the files
    already placed are removed again."""
    check = ResultWriter._ours

    def check_then_someone_writes(writer: ResultWriter, *names: list[str]) -> set[str]:
        ours = check(writer, *names)
        (tmp_path / PREDICTIONS).write_text("someone else's\n")
        return ours

    monkeypatch.setattr(ResultWriter, "_ours", check_then_someone_writes)
    with pytest.raises(OutputExistsError) as error:
        publish(tmp_path, RESULTS)
    assert_names_the_file_and_what_to_do(str(error.value), tmp_path, PREDICTIONS)
    assert (tmp_path / PREDICTIONS).read_text() == "someone else's\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREDICTIONS]


def test_virus_fna_holds_the_records_called_virus_in_input_order(tmp_path: Path) -> None:
    results = [
        result("z", [("chunk_1F1", 0.9)], length=130, chunks=1),  # virus
        result("a", [], length=2, chunks=1),  # no frames
        result("m", [("chunk_1F2", 0.1)], length=300, chunks=1),  # others
        result("b", [("chunk_1F1", 0.1), ("chunk_2F1", 0.5)], length=5, chunks=2),  # a tie
    ]
    sequences = {"z": "ACGT" * 32 + "AC", "a": "AC", "m": "G" * 300, "b": "TTTTT"}
    with ResultWriter(tmp_path, with_sequences=True) as writer:
        for r in results:
            writer.write(r, source="/in.fa", sequence=sequences[r.record_id])
        writer.commit()
    z = sequences["z"]
    assert (tmp_path / VIRUS_FASTA).read_text() == (
        f">z\n{z[:60]}\n{z[60:120]}\n{z[120:]}\n>b\nTTTTT\n"
    )
    calls = {row.split("\t")[0]: row.split("\t")[6] for row in lines(tmp_path / SUMMARY)[1:]}
    assert [rid for rid, call in calls.items() if call == "virus"] == ["z", "b"]


def test_virus_fna_of_a_run_without_viruses_is_empty_and_needs_no_sequences_then(
    tmp_path: Path,
) -> None:
    with ResultWriter(tmp_path, with_sequences=True) as writer:
        writer.write(result("m", [("chunk_1F2", 0.1)], length=300, chunks=1))
        with pytest.raises(ValueError, match="no sequence"):
            writer.write(result("z", [("chunk_1F1", 0.9)]))
    assert not (tmp_path / VIRUS_FASTA).exists()  # nothing published after the error
    with ResultWriter(tmp_path, with_sequences=True) as writer:
        writer.write(result("m", [("chunk_1F2", 0.1)], length=300, chunks=1))
        writer.commit()
    assert (tmp_path / VIRUS_FASTA).read_bytes() == b""
