"""client/output.py: how virnucctl prints a job, the jobs table and the workers table."""

from __future__ import annotations


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
    at = lines.index("input:    /a.fa")
    assert lines[at + 1].split() == ["/b.fq"]
    assert lines[at + 2].startswith("output:")
