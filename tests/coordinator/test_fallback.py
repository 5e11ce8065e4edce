"""The work-conserving fallback rule (coordinator.fallback), exhaustively, without a server."""

from __future__ import annotations

import itertools

import pytest

from jetgrid.coordinator.fallback import (
    DEFAULT_FALLBACK_WAIT_S,
    Stall,
    fallback_allowance,
    fallback_wait,
    observe,
    share,
)
from jetgrid.coordinator.tiers import DEFAULT_POLICY, PROBATION, TierPolicy


def test_the_wait_grows_down_the_tiers_and_none_comes_last() -> None:
    waits = {t: fallback_wait(DEFAULT_POLICY, t, 5.0) for t in DEFAULT_POLICY.names}
    assert waits == {"full": 5.0, "half": 10.0, "tenth": 15.0, "none": 20.0, PROBATION: 10.0}
    assert DEFAULT_FALLBACK_WAIT_S == 5.0
    ordered = [waits[t.name] for t in DEFAULT_POLICY.tiers]
    assert ordered == sorted(ordered) and waits["none"] == max(waits.values())


def test_zero_turns_the_fallback_off_and_unknown_tiers_rank_last() -> None:
    for tier in (*DEFAULT_POLICY.names, "mystery"):
        assert fallback_wait(DEFAULT_POLICY, tier, 0.0) is None
    assert fallback_wait(DEFAULT_POLICY, "mystery", 1.0) == 4.0


def test_probation_ranks_with_the_first_tier_at_or_below_its_factor() -> None:
    p = TierPolicy.from_string("a=0.99:1,b=0.9:0.3,c=0:0", probation_factor=0.5)
    assert fallback_wait(p, PROBATION, 1.0) == 2.0
    p = TierPolicy.from_string("a=0.99:1,b=0.9:0.3,c=0:0", probation_factor=1.0)
    assert fallback_wait(p, PROBATION, 1.0) == 1.0
    p = TierPolicy.from_string("a=0.99:1,b=0.9:0.3,c=0:0.2", probation_factor=0.0)
    assert fallback_wait(p, PROBATION, 1.0) == 3.0  # no tier that low: last


def test_a_consumer_others_take_from_never_stalls() -> None:
    s = None
    for t in range(100):  # another worker takes one job a second, a backlog remains
        s = observe(s, now=float(t), pending=50, delivered=2 * t, own=t)  # and it took one
        assert fallback_allowance(s, now=float(t), wait_s=1.0, free=4) == 0


def test_a_stalled_consumer_gives_free_slots_after_the_wait_and_own_takes_keep_it() -> None:
    s = observe(None, now=0.0, pending=3, delivered=7, own=0)
    assert fallback_allowance(s, now=0.0, wait_s=2.0, free=4) == 0
    s = observe(s, now=1.9, pending=3, delivered=7, own=0)
    assert fallback_allowance(s, now=1.9, wait_s=2.0, free=4) == 0
    s = observe(s, now=2.0, pending=3, delivered=7, own=0)
    assert fallback_allowance(s, now=2.0, wait_s=2.0, free=4) == 4
    s = observe(s, now=2.5, pending=1, delivered=9, own=2)  # this worker took two
    assert fallback_allowance(s, now=2.5, wait_s=2.0, free=2) == 2
    s = observe(s, now=3.0, pending=1, delivered=10, own=2)  # someone else took one
    assert s.since == 3.0 and fallback_allowance(s, now=3.0, wait_s=2.0, free=2) == 0


def test_an_empty_consumer_restarts_the_wait() -> None:
    s = observe(None, now=0.0, pending=1, delivered=0, own=0)
    s = observe(s, now=1.5, pending=1, delivered=0, own=0)
    s = observe(s, now=3.0, pending=0, delivered=0, own=0)
    assert s.since == 3.0
    s = observe(s, now=4.0, pending=1, delivered=0, own=0)  # a new job: waits from 3
    assert fallback_allowance(s, now=4.0, wait_s=2.0, free=1) == 0
    assert fallback_allowance(s, now=5.0, wait_s=2.0, free=1) == 1


def test_a_consumer_made_anew_restarts_the_wait() -> None:
    # Its delivery count went back (deleted and created again): the old baseline means nothing.
    s = Stall(since=0.0, others=5, seen=9.5)
    s = observe(s, now=10.0, pending=2, delivered=1, own=0)
    assert s == Stall(10.0, 1, 10.0)
    s = observe(s, now=11.0, pending=2, delivered=2, own=1)  # only its own take since
    assert s == Stall(10.0, 1, 11.0)


def test_a_long_gap_between_readings_starts_afresh() -> None:
    s = observe(None, now=0.0, pending=1, delivered=0, own=0)
    s = observe(s, now=1.0, pending=1, delivered=0, own=0, gap_s=2.0)
    assert s.since == 0.0
    s = observe(s, now=4.0, pending=1, delivered=0, own=0, gap_s=2.0)  # unseen for 3 s
    assert s.since == 4.0 and fallback_allowance(s, now=4.0, wait_s=1.0, free=1) == 0


@pytest.mark.parametrize("free", [-1, 0, 1, 3])
def test_allowance_is_free_slots_or_nothing(free: int) -> None:
    grid = itertools.product([None, Stall(0.0, 0, 0.0), Stall(5.0, 0, 5.0)], [None, 0.0, 1.0, 5.0])
    for stall, wait in grid:
        for now in (0.0, 1.0, 5.0, 6.0, 10.0):
            got = fallback_allowance(stall, now=now, wait_s=wait, free=free)
            stalled = stall is not None and wait is not None and now - stall.since >= wait
            assert got == (max(free, 0) if stalled else 0)


def _share(tier, factor, uptime=None, base_s=5.0):
    return share(
        DEFAULT_POLICY, tier=tier, factor=factor, uptime=uptime, window="1h", base_s=base_s
    )


def test_share_says_why_a_worker_takes_little_or_no_work() -> None:
    assert _share(None, None) == {"held_back": False, "reason": None, "fallback_wait_s": None}
    assert _share(None, 1.0) == {"held_back": False, "reason": None, "fallback_wait_s": None}
    pinged = _share(None, 0.0)  # the gateway's own fleet: the worker's word, no tier
    assert pinged["held_back"] and pinged["fallback_wait_s"] == 20.0
    assert pinged["reason"].startswith("tier factor 0, by its last ping")
    assert _share("full", 1.0, 0.995)["held_back"] is False
    half = _share("half", 0.5, 0.97)
    assert half["held_back"] and half["fallback_wait_s"] == 10.0
    assert half["reason"] == (
        "tier half (factor 0.5): 1h uptime 97.0%, below the 99% of tier full; "
        "pulls at 0.5 of its base rate"
    )
    none = _share("none", 0.0, 0.85)
    assert none["reason"] == (
        "tier none (factor 0): 1h uptime 85.0%, below the 90% of tier tenth; "
        "takes only jobs no other worker took within 20 s"
    )
    assert none["fallback_wait_s"] == 20.0
    off = _share("none", 0.0, None, base_s=0.0)
    assert off["reason"].endswith("1h uptime unknown, below the 90% of tier tenth; takes no "
                                  "jobs until its uptime recovers")  # fmt: skip
    assert off["fallback_wait_s"] is None
    new = _share(PROBATION, 0.5)
    assert new["reason"].startswith("tier probation (factor 0.5): a new worker, until it has 100")


def test_share_covers_every_tier_of_the_policy() -> None:
    for t in DEFAULT_POLICY.names:
        for uptime in (None, 0.0, 0.5, 0.9, 0.95, 0.99, 1.0):
            s = _share(t, DEFAULT_POLICY.factor(t), uptime)
            assert s["held_back"] == (DEFAULT_POLICY.factor(t) < 1)
            assert s["reason"].startswith(f"tier {t}") and "\n" not in s["reason"]
