"""virnuc/log_setup.py: JSON lines off a terminal, with the bound context on each."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from virnuc.log_setup import configure_logging


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    before = structlog.get_config()
    yield
    structlog.configure(**before)


def test_off_a_terminal_each_event_is_one_json_line_with_its_bound_context() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    log = structlog.get_logger()
    with structlog.contextvars.bound_contextvars(job_id="j1", unit=3):
        log.warning("unit.failed", reason="oom")
    log.debug("hidden")  # below the default level

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert {k: event[k] for k in ("event", "level", "job_id", "unit", "reason")} == {
        "event": "unit.failed",
        "level": "warning",
        "job_id": "j1",
        "unit": 3,
        "reason": "oom",
    }
    assert event["timestamp"].endswith("Z")


def test_the_level_given_is_the_least_logged() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream, level=logging.DEBUG)
    structlog.get_logger().debug("shown")
    assert json.loads(stream.getvalue())["event"] == "shown"
