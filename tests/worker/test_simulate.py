"""Simulated uptime: a seeded, evenly spread schedule that separates the tiers quickly."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetgrid.coordinator.tiers import DEFAULT_POLICY
from jetgrid.events.errors import ConfigError
from jetgrid.projections.uptime import UptimeTracker, UptimeWindows
from jetgrid.worker.simulate import UptimeSchedule, parse_uptime


@given(
    p=st.sampled_from([0.995, 0.98, 0.95, 0.92, 0.9, 0.85, 0.5, 0.123457, 0.0, 1.0]),
    seed=st.integers(0, 2**32),
    start=st.integers(0, 10**7),
    width=st.integers(1, 500),
)
def test_any_window_of_w_ticks_is_within_1_over_w_of_p(
    p: float, seed: int, start: int, width: int
) -> None:
    s = UptimeSchedule(p, seed)
    healthy = sum(s.healthy(n) for n in range(start, start + width))
    assert abs(healthy / width - p) < 1 / width


def test_same_seed_same_schedule_other_seed_other_phase() -> None:
    a = UptimeSchedule(0.92, seed=7).outcomes(0, 500)
    assert a == UptimeSchedule(0.92, seed=7).outcomes(0, 500)
    phases = {tuple(UptimeSchedule(0.92, seed=s).outcomes(0, 25)) for s in range(20)}
    assert len(phases) > 10  # workers do not miss in lockstep


def test_known_schedule_is_stable_across_runs_and_machines() -> None:
    """Integer arithmetic and blake2b only: this exact pattern must never change."""
    s = UptimeSchedule(0.85, seed=42)
    bad = [(n, s.ping_outcome(n)) for n in range(40) if s.ping_outcome(n) != "healthy"]
    assert bad == [
        (1, "unhealthy"),
        (7, "missed"),
        (14, "unhealthy"),
        (21, "unhealthy"),
        (27, "unhealthy"),
        (34, "missed"),
    ]


@pytest.mark.parametrize(("share", "kinds"), [(0.0, {"missed"}), (1.0, {"unhealthy"})])
def test_unhealthy_share_picks_the_kind_of_bad_tick(share: float, kinds: set[str]) -> None:
    s = UptimeSchedule(0.8, seed=1, unhealthy_share=share)
    assert set(s.outcomes(0, 200)) - {"healthy"} == kinds


def test_bad_ticks_mix_missed_and_unhealthy() -> None:
    outcomes = UptimeSchedule(0.5, seed=3).outcomes(0, 2000)
    assert outcomes.count("healthy") == 1000
    assert 400 < outcomes.count("missed") < 600
    assert outcomes.count("missed") + outcomes.count("unhealthy") == 1000


@pytest.mark.parametrize(("p", "outcome"), [(1.0, "healthy"), (0.0, None)])
def test_extremes(p: float, outcome: str | None) -> None:
    outcomes = set(UptimeSchedule(p, seed=9).outcomes(0, 300))
    assert outcomes == {"healthy"} if outcome else "healthy" not in outcomes


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 99])
def test_four_simulated_workers_land_in_four_tiers_within_a_few_hundred_pings(seed: int) -> None:
    windows = UptimeWindows((200.0,))
    tiers = {}
    for p in (0.995, 0.98, 0.92, 0.85):
        schedule = UptimeSchedule(p, seed=seed + int(p * 1000))
        tracker = UptimeTracker.start(1.0, windows)
        for n in range(300):
            outcome = schedule.ping_outcome(n)
            if outcome != "missed":
                tracker = tracker.ping(1000.0 + n, outcome == "healthy")
        now = 1000.0 + 300
        uptime = tracker.uptime(now, 200.0)
        tiers[p] = DEFAULT_POLICY.tier_for(uptime, tracker.observed_slots(now)).name
    assert tiers == {0.995: "full", 0.98: "half", 0.92: "tenth", 0.85: "none"}


@pytest.mark.parametrize(("value", "p"), [("0.92", 0.92), ("92%", 0.92), (0.5, 0.5), ("1", 1.0)])
def test_parse_uptime(value: str | float, p: float) -> None:
    assert parse_uptime(value) == pytest.approx(p)


@pytest.mark.parametrize("value", ["1.5", "-0.1", "abc", "nan", "150%", ""])
def test_bad_uptimes_quote_the_value(value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(value))):
        UptimeSchedule(value)  # type: ignore[arg-type]


def test_bad_unhealthy_share_and_ticks() -> None:
    with pytest.raises(ConfigError, match=r"1\.5"):
        UptimeSchedule(0.9, unhealthy_share=1.5)
    with pytest.raises(ValueError, match="-1"):
        UptimeSchedule(0.9).ping_outcome(-1)
