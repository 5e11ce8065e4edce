"""Shedding as plain data: when a pool refuses a submit, Retry-After, and shedding at take."""

from __future__ import annotations

import pytest

from jetgrid.coordinator.pools import PoolConfig, parse_pools
from jetgrid.coordinator.shedding import (
    IDLE_RETRY_AFTER_S,
    MAX_RETRY_AFTER_S,
    refuse,
    retry_after,
    shed_at_take,
)
from jetgrid.events import ConfigError

OPEN = PoolConfig("p")
BACKLOG = PoolConfig("p", max_backlog=10)
WAIT = PoolConfig("p", max_wait_s=30.0)
BOTH = PoolConfig("p", max_backlog=10, max_wait_s=30.0)


@pytest.mark.parametrize(
    ("excess", "drain", "want"),
    [
        (1, 1.0, 1),
        (10, 2.0, 5),
        (11, 2.0, 6),  # rounded up
        (0, 2.0, 1),  # at least 1 s
        (-5, 2.0, 1),
        (5, 0.0, IDLE_RETRY_AFTER_S),  # nothing drains
        (10**9, 0.001, MAX_RETRY_AFTER_S),  # at most an hour
    ],
)
def test_retry_after_is_the_time_to_drain_the_excess(
    excess: float, drain: float, want: int
) -> None:
    assert retry_after(excess, drain) == want


@pytest.mark.parametrize(
    ("pool", "queued", "oldest", "drain", "retry"),
    [
        (OPEN, 10**6, 10**6, 0.0, None),
        (BACKLOG, 9, 999.0, 1.0, None),
        (BACKLOG, 10, None, 1.0, 1),  # at the limit: one must drain first
        (BACKLOG, 14, 1.0, 2.0, 3),  # 5 over, 2/s
        (BACKLOG, 10, 1.0, 0.0, IDLE_RETRY_AFTER_S),
        (WAIT, 100, 29.9, 1.0, None),
        (WAIT, 100, None, 1.0, None),  # nothing queued
        (WAIT, 100, 30.0, 2.0, 20),  # 100 - 60 that drain within 30 s = 40, at 2/s
        (WAIT, 10, 45.0, 2.0, 1),  # a stuck head, a short queue: try again soon
        (WAIT, 3, 45.0, 0.0, 30),  # nothing drains: the idle wait, capped by max_wait_s
        (PoolConfig("p", max_wait_s=5.0), 3, 45.0, 0.0, 5),
        (BOTH, 10, 0.0, 1.0, 1),  # backlog first
        (BOTH, 3, 31.0, 0.1, 1),  # 3 - floor(3.0) = 0 over
    ],
)
def test_refuse_beyond_max_backlog_or_max_wait(
    pool: PoolConfig, queued: int, oldest: float | None, drain: float, retry: int | None
) -> None:
    got = refuse(pool, "m:1b", queued, oldest, drain)
    if retry is None:
        assert got is None
        return
    assert got is not None and got.retry_after_s == retry
    assert f"retry in {retry} s" in got.reason and "'p'" in got.reason and "'m:1b'" in got.reason


def test_the_refusal_names_the_limit_and_the_value() -> None:
    over = refuse(BACKLOG, "m", 12, None, 1.0)
    assert over is not None and over.reason == (
        "Pool 'p' is over its max_backlog for model 'm': 12 jobs queued, limit 10; retry in 3 s."
    )
    late = refuse(WAIT, "m", 1, 42.25, 0.0)
    assert late is not None and late.reason == (
        "Pool 'p' is over its max_wait_s for model 'm': its oldest queued job has waited 42.2 s, "
        "limit 30 s; retry in 30 s."
    )


@pytest.mark.parametrize(
    ("pool", "waited", "attempt", "shed"),
    [
        (OPEN, 10**6, 1, False),
        (BACKLOG, 10**6, 1, False),  # a taker cannot judge a backlog
        (WAIT, 30.0, 1, False),
        (WAIT, 30.5, 1, True),
        (WAIT, 300.0, 2, False),  # a redelivery: its wait includes runs
    ],
)
def test_a_taker_sheds_a_job_that_waited_past_max_wait(
    pool: PoolConfig, waited: float, attempt: int, shed: bool
) -> None:
    reason = shed_at_take(pool, waited, attempt)
    assert (reason is not None) is shed
    if reason is not None:
        assert "max_wait_s of 30 s" in reason and f"{waited:.1f} s" in reason


def test_the_pools_file_sets_the_limits() -> None:
    text = '[[pool]]\nname = "standard"\nmax_backlog = 50\nmax_wait_s = 12.5\n'
    pool = parse_pools(text, default="standard")["standard"]
    assert (pool.max_backlog, pool.max_wait_s, pool.extra) == (50, 12.5, {})
    plain = parse_pools('[[pool]]\nname = "standard"\n', default="standard")["standard"]
    assert (plain.max_backlog, plain.max_wait_s) == (None, None)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("max_backlog = 0", "max_backlog >= 1"),
        ("max_backlog = 2.5", "whole number"),
        ('max_backlog = "ten"', "whole number"),
        ("max_wait_s = 0", "max_wait_s > 0"),
        ('max_wait_s = "soon"', "bad value"),
    ],
)
def test_a_bad_limit_is_named(line: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_pools(f'[[pool]]\nname = "standard"\n{line}\n', default="standard")
