"""client/output.py: how virnucctl prints a job, the jobs table and the workers table."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_time_zone() -> Iterator[None]:
    """A test that sets $TZ (monkeypatch undoes it) has it re-read afterwards."""
    yield
    time.tzset()


def test_status_of_a_job_with_several_inputs_lists_each_on_its_own_line() -> None:
    from virnuc.client.output import job_lines

    status = {
        "job_id": "j1",
        "state": "done",
        "records_total": 3,
        "records_done": 3,
        "frames_done": 9,
        "restarts": 0,
        "input": "/a.fa",
        "inputs": ["/a.fa", "/b.fq"],
        "output": "/out",
    }
    lines = job_lines(status).splitlines()
    at = lines.index("input:     /a.fa")
    assert lines[at + 1].split() == ["/b.fq"]
    assert lines[at + 2].startswith("output:")


def test_a_queued_job_shows_its_place_in_the_queue_in_status_list_and_the_bar() -> None:
    import io

    from virnuc.client.output import job_lines, jobs_table
    from virnuc.client.progress import ProgressLine

    queued = {
        "job_id": "j2",
        "state": "queued",
        "records_total": 0,
        "records_done": 0,
        "frames_done": 0,
        "restarts": 0,
        "queue_position": 3,
    }
    assert "state:     queued (position 3)" in job_lines(queued).splitlines()
    assert jobs_table([queued]).splitlines()[1].split()[:4] == ["j2", "queued", "(position", "3)"]
    drawn = io.StringIO()
    ProgressLine(drawn).show(queued)
    assert drawn.getvalue().rstrip().endswith("queued (position 3)")
    running = {**queued, "state": "running"}  # a position is a queued job's only
    assert "state:     running" in job_lines(running).splitlines()
    older = {key: value for key, value in queued.items() if key != "queue_position"}
    assert "state:     queued" in job_lines(older).splitlines()  # an older virnucd's


def test_status_separates_every_label_from_its_value_precision_included() -> None:
    """`precision:fp32` was printed with no space: the label filled the column."""
    from virnuc.client.output import job_lines

    status = {
        "job_id": "j1",
        "state": "running",
        "records_total": 0,
        "records_done": 0,
        "frames_done": 0,
        "restarts": 0,
        "precision": "fp32",
        "model_set": "default",
        "input": "/a.fa",
        "output": "/out",
        "waiting": "a worker",
        "error": "none",
    }
    lines = job_lines(status).splitlines()
    assert "precision: fp32" in lines
    assert "models:    default" in lines  # the server's model set the job uses
    columns = {line.index(line.split(":", 1)[1].strip()) for line in lines}
    assert len(columns) == 1  # every value starts in the same column


def test_list_shows_when_each_job_was_submitted_and_when_it_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from virnuc.client.output import jobs_table

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    base = {"records_total": 1, "records_done": 1, "frames_done": 1, "restarts": 0}
    ended = {**base, "job_id": "j1", "state": "done", "submitted_at": 0.0, "finished_at": 90.0}
    running = {**base, "job_id": "j2", "state": "running", "submitted_at": 3600.0}
    lines = jobs_table([ended, running]).splitlines()
    assert lines[0].split()[5:7] == ["SUBMITTED", "ENDED"]
    assert "1970-01-01 00:00  1970-01-01 00:01" in lines[1]
    assert "1970-01-01 01:00  -" in lines[2]


def test_status_says_how_many_frames_were_reused_when_any_were() -> None:
    from virnuc.client.output import job_lines

    status = {
        "job_id": "j1",
        "state": "done",
        "records_total": 3,
        "records_done": 3,
        "frames_done": 12000,
        "restarts": 0,
        "frames_reused": 3100,
    }
    assert "frames:    12000 (3100 reused)" in job_lines(status).splitlines()
    none_reused = job_lines({**status, "frames_reused": 0}).splitlines()
    assert "frames:    12000" in none_reused
    older = {k: v for k, v in status.items() if k != "frames_reused"}  # an older virnucd
    assert "frames:    12000" in job_lines(older).splitlines()
