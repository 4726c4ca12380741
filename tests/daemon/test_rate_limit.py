"""daemon/rate_limit.py: a repeated warning logged once per interval, with a count of
what it held back."""

from __future__ import annotations

import structlog

from virnuc.daemon.rate_limit import RateLimitedWarning


def test_a_repeated_warning_is_logged_once_per_interval_counting_the_suppressed() -> None:
    now = [100.0]
    warn = RateLimitedWarning(interval=10.0, clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        warn("bad message", peer="a")
        now[0] = 105.0
        warn("bad message", peer="b")
        warn("bad message", peer="c")
        warn("other complaint")  # its own key: not held back by the first
        now[0] = 110.0
        warn("bad message", peer="d")

    assert [(e["event"], e.get("peer"), e["suppressed"]) for e in logs] == [
        ("bad message", "a", 0),
        ("other complaint", None, 0),
        ("bad message", "d", 2),
    ]
    assert all(e["log_level"] == "warning" for e in logs)
