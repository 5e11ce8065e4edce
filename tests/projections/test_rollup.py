"""Hour rollups fold to the very tracker the raw pings gave (projections.rollup)."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jetgrid.events import Envelope
from jetgrid.events.workers import (
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
    WorkerRollup,
)
from jetgrid.projections import workers as wr
from jetgrid.projections.rollup import (
    HOUR_S,
    HourLog,
    HourRollup,
    apply_rollup,
    decode_bits,
    encode_bits,
    fold_rollup,
    rollup_event,
)
from jetgrid.projections.uptime import UptimeTracker, UptimeWindows
from jetgrid.projections.workers import WorkerView

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


# -- worker views: raw pings vs rollups -----------------------------------------------------
T0 = 1_800_000_000.0  # an hour boundary
_n = itertools.count()


def _env(event: Any, t: float) -> Envelope:
    return Envelope(
        id=f"e{next(_n)}", source="test", time=datetime.fromtimestamp(t, UTC), event=event
    )


def _worker_log(seed: int, hours: int = 5, interval: float = 30.0) -> list[Envelope]:
    """Random pings of one worker with outages, unhealthy spells, a drain and restarts."""
    rng = random.Random(seed)
    out, boot, n, t = [], 0, 0, T0 + rng.uniform(0, 600)
    bad = rng.choice([0.001, 0.01, 0.05, 0.3])  # how often a ping is unhealthy in a bad spell
    gaps = rng.choice([0.0, 0.005, 0.02])

    def reg() -> Envelope:
        return _env(
            WorkerRegistered(worker_id="w1", pools=["p"], models=["m"], backend="echo",
                             concurrency=1, heartbeat_interval_s=interval, boot_id=f"b{boot}"),
            t,
        )  # fmt: skip

    out.append(reg())
    while t < T0 + hours * 3600:
        r = rng.random()
        if r < 0.01:  # restart: new boot
            boot, n = boot + 1, 0
            t += rng.uniform(0, 900)
            out.append(reg())
        elif r < 0.015:  # planned absence
            out.append(_env(WorkerDraining(worker_id="w1", reason="upgrade"), t))
            t += rng.uniform(60, 1800)
            out.append(_env(WorkerDeregistered(worker_id="w1"), t))
            boot, n = boot + 1, 0
            t += rng.uniform(60, 1800)
            out.append(reg())
        elif r < 0.015 + gaps:  # silence
            t += rng.uniform(60, 1200)
        n += 1
        t += interval + rng.uniform(-3, 3)
        healthy = rng.random() > (bad if (t // 1800) % 3 == 1 else 0.001)
        out.append(
            _env(WorkerHeartbeat(worker_id="w1", n=n, healthy=healthy, interval_s=interval,
                                 in_flight=0, boot_id=f"b{boot}"), t)
        )  # fmt: skip
    return out


@pytest.mark.parametrize("seed", range(16))
def test_worker_views_from_rollups_match_the_raw_pings(seed: int) -> None:
    """Folding the raw log, with a rollup taken at each hour's end, vs folding only rollups:
    the same uptime tracker, windows, observed slots and tier at every hour's end."""
    view: WorkerView | None = None
    log, rollups, at_hour_end = HourLog(), [], []
    hour_end = T0 + 3600
    for e in _worker_log(seed):
        while e.time.timestamp() >= hour_end and view is not None:
            view = wr.refresh(view, datetime.fromtimestamp(hour_end, UTC))
            assert view.uptime is not None
            r = log.take(view.uptime)
            assert r is not None
            hour = int(hour_end) - HOUR_S
            ev = rollup_event("w1", hour, r, view.uptime, view.tier)
            rollups.append(_env(ev, hour_end + 5))
            at_hour_end.append(view)
            hour_end += 3600
        view = wr.apply(view, e)
        if view.uptime is not None:
            log.observe(view.uptime)
    assert len(rollups) >= 4
    folded: WorkerView | None = None
    for renv, raw in zip(rollups, at_hour_end, strict=True):
        ev = renv.event
        assert isinstance(ev, WorkerRollup)
        assert len(ev.model_dump_json()) < 700
        folded = apply_rollup(folded, ev)
        assert folded.uptime == raw.uptime
        end = float(ev.hour + HOUR_S)
        assert folded.uptime is not None and raw.uptime is not None
        assert folded.uptime.windows(end) == raw.uptime.windows(end)
        assert folded.tier == raw.tier
        # Applying it again, or after the raw pings of its hour, changes nothing.
        assert apply_rollup(folded, ev) is folded
        assert apply_rollup(raw, ev) is raw
