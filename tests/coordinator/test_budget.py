"""Pull budgets: a token bucket driven by the caller's clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetgrid.coordinator.budget import (
    Budget,
    new_budget,
    pull_size,
    refill,
    take,
    wait_time,
    with_factor,
)
from jetgrid.events.errors import ConfigError


def test_starts_full_and_grants_up_to_what_it_holds() -> None:
    b = new_budget(rate=10, burst=5, now=100.0)
    assert b == Budget(10.0, 5.0, 1.0, 5.0, 100.0)
    b, got = take(b, 3, 100.0)
    assert (got, b.tokens) == (3, 2.0)
    b, got = take(b, 3, 100.0)  # only two left: a partial grant
    assert (got, b.tokens) == (2, 0.0)
    b, got = take(b, 1, 100.0)
    assert got == 0


def test_refills_at_rate_times_factor_capped_at_burst() -> None:
    b = new_budget(rate=10, burst=4, factor=0.5, now=0.0, tokens=0)
    assert b.effective_rate == 5.0
    assert refill(b, 0.2).tokens == pytest.approx(1.0)
    assert refill(b, 0.5).tokens == pytest.approx(2.5)
    assert refill(b, 60.0).tokens == 4.0
    b, got = take(b, 10, 0.6)  # 3 tokens accrued: 3 granted
    assert got == 3


def test_factor_zero_grants_nothing_ever() -> None:
    b = new_budget(rate=100, burst=50, factor=0, now=0.0)
    assert b.tokens == 0.0
    for now in (0.0, 1.0, 1e6):
        b, got = take(b, 1, now)
        assert got == 0
        assert wait_time(b, now) == math.inf
    assert b.available == 0


def test_wait_time_until_one_token() -> None:
    b = new_budget(rate=10, burst=3, factor=0.1, now=0.0, tokens=0)  # 1 job/s
    assert wait_time(b, 0.0) == pytest.approx(1.0)
    assert wait_time(b, 0.25) == pytest.approx(0.75)
    assert wait_time(b, 1.0) == 0.0
    assert wait_time(new_budget(rate=1, burst=1), 0.0) == 0.0


def test_factor_change_applies_from_the_next_refill() -> None:
    b = new_budget(rate=10, burst=100, factor=1.0, now=0.0, tokens=0)
    b = with_factor(b, 0.1, 1.0)  # the first second is credited at the old factor
    assert (b.factor, b.tokens, b.updated) == (0.1, pytest.approx(10.0), 1.0)
    b = refill(b, 2.0)  # the next second at the new one
    assert b.tokens == pytest.approx(11.0)
    # dropping to 0 drops the tokens; climbing back starts from empty
    b = with_factor(b, 0.0, 2.0)
    assert b.tokens == 0.0
    b = with_factor(b, 0.5, 3.0)
    assert b.tokens == 0.0
    assert refill(b, 4.0).tokens == pytest.approx(5.0)
    assert with_factor(b, 0.5, 3.0) == b


def test_a_clock_stepping_back_mints_nothing() -> None:
    b = new_budget(rate=10, burst=10, now=5.0, tokens=1)
    assert refill(b, 4.0) is b
    b2, got = take(b, 5, 4.0)
    assert got == 1
    assert b2.updated == 5.0


def test_float_sums_count_as_whole_tokens() -> None:
    b = new_budget(rate=3, burst=10, now=0.0, tokens=0)
    for i in range(1, 11):  # ten refills of 0.1 s at 3/s: 2.9999999999999996 tokens
        b = refill(b, i / 10)
    assert b.available == 3
    assert wait_time(b, 1.0) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "quoted"),
    [
        ({"rate": 0, "burst": 1}, "0"),
        ({"rate": -1, "burst": 1}, "-1"),
        ({"rate": math.inf, "burst": 1}, "inf"),
        ({"rate": 1, "burst": 0.5}, "0.5"),
        ({"rate": 1, "burst": 1, "factor": 1.5}, "1.5"),
        ({"rate": 1, "burst": 1, "factor": -0.1}, "-0.1"),
    ],
)
def test_invalid_budgets(kwargs: dict[str, float], quoted: str) -> None:
    with pytest.raises(ConfigError, match=quoted):
        new_budget(**kwargs)


def test_negative_take_is_a_bug() -> None:
    with pytest.raises(ValueError, match="-1"):
        take(new_budget(1, 1), -1, 0.0)


@pytest.mark.parametrize(
    ("free", "tokens", "max_batch", "expected"),
    [
        (4, 10.0, 8, 4),
        (10, 2.5, 8, 2),
        (10, 20.0, 8, 8),
        (0, 5.0, 8, 0),
        (3, 0.0, 8, 0),
        (3, 0.999, 8, 0),
        (3, 2.9999999999999996, 8, 3),
        (-1, 5.0, 8, 0),
        (3, -2.0, 8, 0),
    ],
)
def test_pull_size(free: int, tokens: float, max_batch: int, expected: int) -> None:
    assert pull_size(free, tokens, max_batch) == expected


@given(
    rate=st.floats(0.5, 200),
    burst=st.integers(1, 20),
    factor=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    steps=st.lists(st.tuples(st.floats(0, 2), st.integers(0, 30)), max_size=60),
)
def test_never_grants_more_than_burst_plus_rate_times_time(
    rate: float, burst: int, factor: float, steps: list[tuple[float, int]]
) -> None:
    """The bound the audit checks: granted <= burst + rate * factor * elapsed."""
    b = new_budget(rate, burst, factor, now=0.0)
    now, granted = 0.0, 0
    for dt, n in steps:
        now += dt
        b, got = take(b, n, now)
        assert 0 <= got <= n
        granted += got
    assert granted <= burst * (factor > 0) + rate * factor * now + 1e-6


def test_saturated_shares_follow_the_factors() -> None:
    """Four workers pulling as fast as allowed for 100 s take work in the ratio of factors."""
    totals = {}
    for factor in (1.0, 0.5, 0.1, 0.0):
        b = new_budget(rate=20, burst=1, factor=factor, now=0.0, tokens=0)
        got_total = 0
        for step in range(1, 10_001):
            b, got = take(b, 8, step / 100)
            got_total += got
        totals[factor] = got_total
    assert totals == {1.0: 2000, 0.5: 1000, 0.1: 200, 0.0: 0}
