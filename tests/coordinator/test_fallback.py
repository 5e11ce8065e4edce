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


def _read(s, now, pending, delivered, own=0, wait=2.0, gap=3.0):
    return observe(
        s, now=now, pending=pending, delivered=delivered, own=own, wait_s=wait, gap_s=gap
    )


def test_a_consumer_others_take_from_never_stalls() -> None:
    s = None
    for t in range(100):  # another worker takes one job a second, a backlog remains
        s = _read(s, float(t), 50, 2 * t, own=t, wait=1.0)  # (this one took one too)
        assert fallback_allowance(s, 4) == 0


def test_a_stalled_consumer_gives_free_slots_after_the_wait_and_own_takes_keep_it() -> None:
    s = _read(None, 0.0, 3, 7)
    assert fallback_allowance(s, 4) == 0
    s = _read(s, 1.9, 3, 7)
    assert fallback_allowance(s, 4) == 0
    s = _read(s, 2.0, 3, 7)
    assert fallback_allowance(s, 4) == 4 and s.taking
    s = _read(s, 2.5, 1, 9, own=2)  # this worker took two
    assert fallback_allowance(s, 2) == 2
    assert fallback_allowance(s, 0) == 0 and fallback_allowance(s, -1) == 0
    assert fallback_allowance(None, 3) == 0


def test_a_better_worker_back_ends_the_taking_after_one_wait() -> None:
    s = _read(_read(None, 0.0, 9, 0), 2.0, 9, 0)
    assert s.taking
    # Another worker takes at every reading from t=3: the worker keeps taking for one wait...
    s = _read(s, 3.0, 9, 1)
    assert s.taking and s.contested == 3.0
    s = _read(s, 4.0, 9, 2)
    assert s.taking
    # ...then stops, and must see the consumer stalled for a whole wait again.
    s = _read(s, 5.0, 9, 3)
    assert not s.taking and s.since == 5.0 and fallback_allowance(s, 4) == 0
    s = _read(s, 6.0, 9, 4)
    assert not s.taking and s.since == 6.0


def test_a_reading_without_others_taking_clears_the_contest() -> None:
    s = _read(_read(None, 0.0, 9, 0), 2.0, 9, 0)
    s = _read(s, 3.0, 9, 1)
    s = _read(s, 4.0, 9, 1)  # nobody else this time
    assert s.taking and s.contested is None
    s = _read(s, 5.0, 9, 2)
    s = _read(s, 6.5, 9, 3)
    assert s.taking and s.contested == 5.0


def test_an_empty_consumer_restarts_the_wait() -> None:
    s = _read(None, 0.0, 1, 0)
    s = _read(s, 1.5, 1, 0)
    s = _read(s, 2.0, 1, 0)
    assert s.taking
    s = _read(s, 3.0, 0, 0)
    assert s.since == 3.0 and not s.taking
    s = _read(s, 4.0, 1, 0)  # a new job: waits from 3
    assert fallback_allowance(s, 1) == 0
    assert fallback_allowance(_read(s, 5.0, 1, 0), 1) == 1


def test_a_consumer_made_anew_restarts_the_wait() -> None:
    # Its delivery count went back (deleted and created again): the old baseline means nothing.
    s = Stall(since=0.0, others=5, seen=9.5, taking=True)
    s = _read(s, 10.0, 2, 1)
    assert s == Stall(10.0, 1, 10.0)
    s = _read(s, 11.0, 2, 2, own=1)  # only its own take since
    assert s == Stall(10.0, 1, 11.0)


def test_a_long_gap_between_readings_starts_afresh() -> None:
    s = _read(None, 0.0, 1, 0)
    s = _read(s, 1.0, 1, 0, gap=2.0)
    assert s.since == 0.0
    s = _read(s, 4.0, 1, 0, gap=2.0)  # unseen for 3 s
    assert s.since == 4.0 and fallback_allowance(s, 1) == 0


def test_with_the_fallback_off_nothing_is_ever_taken() -> None:
    s = None
    for t in range(50):
        s = _read(s, float(t), 5, 0, wait=None)
        assert fallback_allowance(s, 4) == 0


@pytest.mark.parametrize("seq", list(itertools.product([(0, 0), (2, 0), (2, 1)], repeat=7)))
def test_every_sequence_of_readings(seq: tuple[tuple[int, int], ...]) -> None:
    # Readings 1 s apart, wait 2 s; each reading: jobs pending (0 or 2), others took (0 or 1).
    s, delivered, taking = None, 0, []
    for i, (pending, more) in enumerate(seq):
        delivered += more
        s = _read(s, float(i), pending, delivered)
        taking.append(s.taking)
        if pending == 0:
            assert not s.taking  # an empty consumer: nothing to take, the wait restarts
        if s.taking and (i == 0 or not taking[i - 1]):
            # It starts only 2 s after a reading that found the consumer empty or saw someone
            # else take, with jobs waiting and nobody else taking at every reading since.
            assert i >= 2 and all(p > 0 and m == 0 for p, m in seq[i - 1 : i + 1])
        if i >= 1 and taking[i - 1] and not s.taking and pending > 0:
            # Once taking, it stops (jobs still waiting) only after others took at every
            # reading for 2 s, while it was taking.
            assert i >= 3 and all(taking[i - 3 : i]) and all(m for _, m in seq[i - 2 : i + 1])
        if i >= 1 and taking[i - 1] and pending > 0 and not more:
            assert s.taking  # a quiet reading never stops it


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
