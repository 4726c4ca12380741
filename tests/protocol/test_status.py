"""protocol/status.py: job and worker states as the wire carries them."""

import virnuc.protocol as p


def test_job_state_terminal() -> None:
    assert {s for s in p.JobState if s.is_terminal} == {"done", "failed", "killed"}
