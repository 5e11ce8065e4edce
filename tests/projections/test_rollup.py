"""Hour rollups fold to the very tracker the raw pings gave (projections.rollup)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from jetgrid.projections.rollup import (
    HourLog,
    HourRollup,
    decode_bits,
    encode_bits,
    fold_rollup,
)
from jetgrid.projections.uptime import UptimeTracker, UptimeWindows

HOUR = 3600.0
INTERVAL = 60.0  # 60 slots an hour: small enough to explore, large enough for rings to fold
WINDOWS = UptimeWindows((900.0, HOUR), max_buckets=8, horizon_slots=16)

# One step: (kind, seconds after the previous step's time, healthy, how late (slots))
step = st.tuples(
    st.sampled_from(["ping"] * 12 + ["late", "dup", "pause", "resume", "cancel", "gap"]),
    st.floats(0.0, 90.0),
    st.booleans(),
    st.integers(1, 30),
)


def _run(steps: list[tuple[str, float, bool, int]]) -> tuple[list[HourRollup], list[UptimeTracker]]:
    """Feed raw events to a tracker; take a rollup at each hour end of the log clock."""
    tracker = UptimeTracker.start(INTERVAL, WINDOWS)
    log = HourLog()
    rollups: list[HourRollup] = []
    states: list[UptimeTracker] = []
    clock = 1_000_000.0
    hour_end = (math.floor(clock / HOUR) + 1) * HOUR
    for kind, dt, healthy, back in steps:
        clock += dt * (40 if kind == "gap" else 1)
        while clock >= hour_end:  # the log clock passed the end of an hour
            if tracker.first_slot is not None:
                r = log.take(tracker)
                assert r is not None
                rollups.append(r)
                states.append(tracker)
            hour_end += HOUR
        if kind == "ping" or kind == "gap":
            tracker = tracker.ping(clock, healthy)
        elif kind == "late":
            tracker = tracker.ping(clock - back * INTERVAL, healthy)
        elif kind == "dup":
            tracker = tracker.ping(clock - INTERVAL / 3, healthy)
        elif kind == "pause":
            tracker = tracker.pause(clock, until=clock + 5 if healthy else None)
        elif kind == "resume":
            tracker = tracker.resume(clock)
        else:
            tracker = tracker.cancel()
        log.observe(tracker)
    if tracker.first_slot is not None:
        r = log.take(tracker)
        assert r is not None
        rollups.append(r)
        states.append(tracker)
    return rollups, states


@settings(max_examples=300, deadline=None)
@given(st.lists(step, min_size=1, max_size=400))
def test_rollups_fold_to_the_raw_tracker(steps: list[tuple[str, float, bool, int]]) -> None:
    rollups, states = _run(steps)
    folded: UptimeTracker | None = None
    for r, raw in zip(rollups, states, strict=True):
        folded = fold_rollup(folded, r, WINDOWS)
        assert folded == raw
        for now in (raw.origin + (raw.top + k) * INTERVAL for k in (1, 2, 30, 200)):
            assert folded.windows(now) == raw.windows(now)
            assert folded.observed_slots(now) == raw.observed_slots(now)


@settings(max_examples=100, deadline=None)
@given(st.lists(step, min_size=1, max_size=300), st.integers(0, 20))
def test_a_rollup_folded_twice_or_late_changes_nothing(
    steps: list[tuple[str, float, bool, int]], k: int
) -> None:
    rollups, states = _run(steps)
    folded: UptimeTracker | None = None
    for r in rollups:
        folded = fold_rollup(folded, r, WINDOWS)
    if folded is None:
        return  # never pinged: no rollup
    again = fold_rollup(folded, rollups[-1], WINDOWS)
    assert again == states[-1]
    old = rollups[min(k, len(rollups) - 1)]
    if old.top < folded.top:
        assert fold_rollup(folded, old, WINDOWS) is folded


def test_default_windows_at_one_hertz_over_a_day() -> None:
    """The default windows, a 1 s interval, a day of pings with an outage and a drain."""
    tracker = UptimeTracker.start(1.0)
    log, folded = HourLog(), None
    t0 = 1_700_000_400.0
    for s in range(86_400):
        t = t0 + s
        if s % 3600 == 0 and s:
            r = log.take(tracker)
            assert r is not None
            folded = fold_rollup(folded, r)
            assert folded == tracker
        if 30_000 <= s < 33_000:
            continue  # down: missed slots
        if s == 50_000:
            tracker = tracker.pause(t)
        if s == 55_000:
            tracker = tracker.resume(t)
        tracker = tracker.ping(t + 0.1, s % 97 != 0)
        log.observe(tracker)
    assert folded is not None
    assert folded.windows(t0 + 86_400) != ()


def test_bits_encode_compactly_and_refuse_garbage() -> None:
    steady = (1 << 3856) - 1
    assert decode_bits(encode_bits(steady)) == steady
    assert len(encode_bits(steady)) < 64
    assert decode_bits(encode_bits(0)) == 0
    for bad in ("not base64!", "aGVsbG8="):
        try:
            decode_bits(bad)
        except ValueError:
            pass
        else:
            raise AssertionError(bad)
    bomb = encode_bits((1 << (1 << 22)) - 1)
    try:
        decode_bits(bomb)
    except ValueError:
        pass
    else:
        raise AssertionError("a bitmap over the cap was decoded")
