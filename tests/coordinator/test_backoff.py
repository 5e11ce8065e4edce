"""The retry and back-off rules, as tables: every policy's waits and where each gives up."""

from __future__ import annotations

import pytest

from jetgrid.coordinator.backoff import (
    DEAD_LETTER_SETUP,
    FAILOVER,
    GOODBYE,
    LAST_DEAD,
    NOT_STORED_NAK_S,
    PULL_ROUND_WAIT_S,
    TERMINAL_STORE,
    TIER_WATCH_RETRY_S,
    Backoff,
    Stop,
    TryAgain,
    after_failure,
    dead_letter_fetch_wait_s,
    tier_watch_retry_s,
)
from jetgrid.coordinator.errors import NatsTimeout, NatsUnavailable, NotFound, PermissionDenied

DENIED = PermissionDenied("Could not publish to x: permission denied.")
AWAY = NatsUnavailable("No NATS server answered.")
SLOW = NatsTimeout("The server did not answer in time.")


@pytest.mark.parametrize(
    ("failures", "error", "decision"),
    [
        (1, AWAY, TryAgain(0.2)),
        (2, AWAY, TryAgain(0.4)),
        (3, SLOW, TryAgain(0.8)),
        (4, AWAY, TryAgain(1.6)),
        (5, AWAY, Stop()),  # gives up at the fifth failure: the nak brings the job back
        (6, AWAY, Stop()),
        (1, DENIED, TryAgain(0.2)),  # the terminal store retries any NATS error alike
    ],
)
def test_the_terminal_store_doubles_its_wait_five_times(
    failures: int, error: Exception, decision: TryAgain | Stop
) -> None:
    got = after_failure(TERMINAL_STORE, failures, elapsed_s=1000.0, error=error)
    assert got == (
        TryAgain(pytest.approx(decision.delay_s)) if isinstance(got, TryAgain) else decision
    )


def test_the_last_dead_store_holds_on_about_a_minute_before_leaving_it_to_the_advisory() -> None:
    steps = [after_failure(LAST_DEAD, n, error=AWAY) for n in range(1, 21)]
    waits = [s.delay_s for s in steps if isinstance(s, TryAgain)]
    assert waits[:5] == pytest.approx([0.5, 1.0, 2.0, 4.0, 4.0]) and max(waits) == 4.0
    assert steps[-1] == Stop() and len(waits) == 19
    assert sum(waits) == pytest.approx(67.5)
    assert after_failure(LAST_DEAD, 1, error=DENIED) == TryAgain(0.5)  # any NATS error alike


def test_the_terminal_store_waits_3_s_in_all_before_handing_a_job_back() -> None:
    steps = [after_failure(TERMINAL_STORE, n) for n in range(1, 6)]
    waits = [s.delay_s for s in steps if isinstance(s, TryAgain)]
    assert waits == pytest.approx([0.2, 0.4, 0.8, 1.6]) and steps[-1] == Stop()
    assert sum(waits) == pytest.approx(3.0)
    assert NOT_STORED_NAK_S == 1.0


@pytest.mark.parametrize(
    ("policy", "failures", "elapsed_s", "error", "decision"),
    [
        (FAILOVER, 1, 0.0, AWAY, TryAgain(0.5)),
        (FAILOVER, 59, 29.5, SLOW, TryAgain(0.5)),
        (FAILOVER, 60, 30.0, AWAY, TryAgain(0.5)),  # not past the limit yet
        (FAILOVER, 61, 30.01, AWAY, Stop()),
        (FAILOVER, 1000, 0.0, NotFound("No such stream."), TryAgain(0.5)),  # no count limit
        (FAILOVER, 1, 0.0, DENIED, Stop()),  # a refusal is not a failover
        (FAILOVER, 1, 0.0, RuntimeError("boom"), TryAgain(0.5)),
        (FAILOVER, 3, 1.0, None, TryAgain(0.5)),
        (GOODBYE, 1, 0.0, AWAY, TryAgain(0.5)),
        (GOODBYE, 20, 10.0, AWAY, TryAgain(0.5)),
        (GOODBYE, 21, 10.5, AWAY, Stop()),
        (GOODBYE, 1, 0.0, DENIED, Stop()),
        (DEAD_LETTER_SETUP, 1, 0.0, AWAY, TryAgain(0.5)),
        (DEAD_LETTER_SETUP, 29, 14.5, AWAY, TryAgain(0.5)),
        (DEAD_LETTER_SETUP, 30, 15.0, AWAY, Stop()),  # no wait after the last try
        (DEAD_LETTER_SETUP, 31, 15.5, AWAY, Stop()),
        (DEAD_LETTER_SETUP, 5, 1e6, DENIED, TryAgain(0.5)),  # neither time nor refusals count
    ],
)
def test_policies(
    policy: Backoff,
    failures: int,
    elapsed_s: float,
    error: Exception | None,
    decision: TryAgain | Stop,
) -> None:
    assert after_failure(policy, failures, elapsed_s, error) == decision


@pytest.mark.parametrize(
    ("policy", "failures", "decision"),
    [
        (Backoff(first_s=1.0), 1, TryAgain(1.0)),
        (Backoff(first_s=1.0), 10**6, TryAgain(1.0)),  # no limit: retries for ever
        (Backoff(first_s=0.1, factor=3.0), 3, TryAgain(0.1 * 9)),
        (Backoff(first_s=0.1, factor=3.0, tries=3), 3, Stop()),
        (Backoff(first_s=0.0, tries=1), 1, Stop()),  # one try only
        (Backoff(first_s=0.0), 2, TryAgain(0.0)),  # at once
        (Backoff(first_s=1.0, never=(ValueError,)), 1, TryAgain(1.0)),  # no error given
    ],
)
def test_the_rule_for_any_policy(policy: Backoff, failures: int, decision: TryAgain | Stop) -> None:
    got = after_failure(policy, failures)
    assert got == (
        TryAgain(pytest.approx(decision.delay_s)) if isinstance(got, TryAgain) else decision
    )


@pytest.mark.parametrize(
    ("error", "decision"),
    [
        (ValueError("bad"), Stop()),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), Stop()),  # a subclass counts
        (KeyError("k"), TryAgain(1.0)),
    ],
)
def test_never_retried_errors_stop_at_once(error: Exception, decision: TryAgain | Stop) -> None:
    policy = Backoff(first_s=1.0, never=(ValueError,))
    assert after_failure(policy, 1, 0.0, error) == decision


@pytest.mark.parametrize("failures", [0, -1])
def test_failures_count_from_one(failures: int) -> None:
    with pytest.raises(ValueError, match=f"Failures has value {failures}"):
        after_failure(FAILOVER, failures)


@pytest.mark.parametrize(
    ("interval_s", "retry_s"),
    [(0.01, 0.2), (0.05, 0.2), (0.1, 0.4), (0.25, 1.0), (0.5, 2.0), (5.0, 2.0), (60.0, 2.0)],
)
def test_a_tier_watch_retries_after_four_pings_within_limits(
    interval_s: float, retry_s: float
) -> None:
    assert tier_watch_retry_s(interval_s) == pytest.approx(retry_s)
    assert tier_watch_retry_s(interval_s) <= TIER_WATCH_RETRY_S == 2.0


@pytest.mark.parametrize(("connected", "wait_s"), [(True, 0.05), (False, 0.5)])
def test_the_dead_letter_watcher_waits_longer_while_nats_is_away(
    connected: bool, wait_s: float
) -> None:
    assert dead_letter_fetch_wait_s(connected) == wait_s


def test_the_pull_loop_waits_at_most_half_a_second_between_rounds() -> None:
    assert PULL_ROUND_WAIT_S == 0.5
