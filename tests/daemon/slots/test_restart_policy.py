"""A slot's restart rules with a fake clock: no process, no waiting."""

from __future__ import annotations

from virnuc.daemon.slots.restart_policy import MAX_START_FAILURES, NextStart, RestartPolicy

BACKOFF_MAX = 2.0
HEALTHY_RUN = 60.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy() -> tuple[RestartPolicy, FakeClock]:
    clock = FakeClock()
    return RestartPolicy(BACKOFF_MAX, HEALTHY_RUN, clock), clock


def run(
    restarts: RestartPolicy,
    clock: FakeClock,
    seconds: float,
    *,
    said_hello: bool = True,
    leaving: bool = False,
) -> NextStart:
    """One worker that lives `seconds` before it ends."""
    restarts.started()
    clock.now += seconds
    return restarts.ended(said_hello=said_hello, leaving=leaving)


def test_young_deaths_back_off_exponentially_up_to_the_cap() -> None:
    restarts, clock = policy()
    delays = [run(restarts, clock, 1.0).delay for _ in range(6)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_a_worker_older_than_healthy_run_is_replaced_at_once_and_the_backoff_starts_over() -> None:
    restarts, clock = policy()
    for _ in range(3):
        run(restarts, clock, 1.0)
    assert run(restarts, clock, HEALTHY_RUN + 1).delay == 0.0
    assert run(restarts, clock, 1.0).delay == 0.25


def test_the_time_before_a_start_does_not_count_as_the_workers_age() -> None:
    restarts, clock = policy()
    clock.now += HEALTHY_RUN * 2  # e.g. waiting for a pilot claim, or the backoff
    assert run(restarts, clock, 1.0).delay == 0.25


def test_a_worker_that_left_is_replaced_at_once_and_resets_the_backoff() -> None:
    restarts, clock = policy()
    for _ in range(3):
        run(restarts, clock, 1.0)
    assert run(restarts, clock, 1.0, leaving=True).delay == 0.0
    assert run(restarts, clock, 1.0).delay == 0.25


def test_the_slot_is_given_up_once_after_max_start_failures_in_a_row() -> None:
    restarts, clock = policy()
    outcomes = [run(restarts, clock, 1.0, said_hello=False) for _ in range(MAX_START_FAILURES + 3)]
    assert [o.give_up for o in outcomes].count(True) == 1
    assert outcomes[MAX_START_FAILURES - 1].give_up
    assert all(o.delay == BACKOFF_MAX for o in outcomes[MAX_START_FAILURES:])  # still retried


def test_a_hello_ends_a_streak_of_failed_starts() -> None:
    restarts, clock = policy()
    for _ in range(MAX_START_FAILURES - 1):
        run(restarts, clock, 1.0, said_hello=False)
    run(restarts, clock, 1.0, said_hello=True)
    outcomes = [run(restarts, clock, 1.0, said_hello=False) for _ in range(MAX_START_FAILURES)]
    assert [o.give_up for o in outcomes] == [False] * (MAX_START_FAILURES - 1) + [True]
