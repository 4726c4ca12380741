"""`assign_message`: the `assign` names the seek-point index of the unit's own input
(when it is gzip and was indexed), and nothing for a plain input or an older job.
`job_status`: when the job was submitted and, once it has, when it ended."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from virnuc.daemon.jobs.run import assign_message, job_status
from virnuc.daemon.progress.log import JobRow, UnitRow
from virnuc.pipeline.gzip_index import GzipIndex
from virnuc.pipeline.spec import ModelSpec
from virnuc.protocol import JobState, decode_from_daemon

SPEC = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300, "demo")
INDEX = GzipIndex("/state/jobs/j1/input-1.gzidx", 4096, "ab" * 32)


def job_row(gzip_indexes: tuple[GzipIndex | None, ...]) -> JobRow:
    return JobRow(
        "j1", 1, JobState.RUNNING, "/in/a.fa", "/out", SPEC, False, 100, False,
        12, 3, 0, 0, 0, 0, None, 0.0, 0.0, None,
        inputs=("/in/a.fa", "/in/b.fq.gz"), gzip_indexes=gzip_indexes,
    )  # fmt: skip


def unit(input_index: int) -> UnitRow:
    return UnitRow(
        "j1", input_index, 0, 4 * input_index, 4, "pending", 0, 80, "0" * 32, input_index
    )


def test_a_gzip_units_assign_names_its_inputs_index_and_survives_the_wire() -> None:
    assign = assign_message(job_row((None, INDEX)), unit(1), (4, 0), Path("/parts"))

    assert assign.input == "/in/b.fq.gz"
    assert (assign.gzip_index, assign.gzip_index_size, assign.gzip_index_sha256) == (
        INDEX.path,
        INDEX.size,
        INDEX.sha256,
    )
    assert decode_from_daemon(assign.encode()) == assign


def test_a_plain_unit_or_a_job_planned_before_indexes_names_none() -> None:
    plain = assign_message(job_row((None, INDEX)), unit(0), (0, 0), Path("/parts"))
    older = assign_message(job_row(()), unit(1), (4, 0), Path("/parts"))

    for assign in (plain, older):
        assert assign.gzip_index is None
        assert "gzip_index" not in assign.to_wire()
        assert dataclasses.replace(assign) == decode_from_daemon(assign.encode())


def test_status_says_when_a_job_was_submitted_and_once_it_has_when_it_ended() -> None:
    running = dataclasses.replace(job_row(()), created_at=100.0)
    assert job_status(running, None)["submitted_at"] == 100.0
    assert "finished_at" not in job_status(running, None)
    done = dataclasses.replace(running, state=JobState.DONE, finished_at=250.0)
    assert job_status(done, None)["finished_at"] == 250.0


def test_status_names_the_model_set_of_a_job_that_has_one() -> None:
    assert job_status(dataclasses.replace(job_row(()), model_set="big"), None)["model_set"] == "big"
    assert "model_set" not in job_status(job_row(()), None)  # it named its models itself
