"""The uptime tracker's constant-time ping and window read give exactly the reference's numbers.

Pure: jetgrid.projections.uptime against tests/helpers/uptime_reference.py (every bucket in one
array, copied on each fold and summed on each read), driven through generated histories: gaps,
duplicates, out-of-order pings within and beyond the horizon, unhealthy pings, reanchors,
pauses, resumes and cancels, over several intervals, windows, bucket sizes and horizons small
enough to hit every edge. After each step every reading and the persisted JSON must be equal.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jetgrid.projections.uptime import DEFAULT_WINDOWS, UptimeTracker, UptimeWindows
from tests.helpers.uptime_reference import RefTracker

Step = tuple[Any, ...]

steps = st.one_of(
    st.tuples(st.just("ping"), st.integers(-40, 40), st.booleans(), st.booleans()),
    st.tuples(st.just("ping"), st.integers(0, 400), st.booleans(), st.just(False)),
    st.tuples(st.just("ping"), st.integers(1, 6), st.just(True), st.just(False)),
    st.tuples(st.just("pause"), st.integers(-8, 40), st.booleans()),
    st.tuples(st.just("resume"), st.integers(-8, 200)),
    st.tuples(st.just("cancel"), st.integers(0, 8)),
)

configs = st.tuples(
    st.sampled_from([1.0, 2.5, 10.0]),
    st.lists(st.integers(1, 40), min_size=1, max_size=3, unique=True),
    st.integers(1, 6),
    st.integers(1, 12),
)


def same(new: UptimeTracker, ref: RefTracker, t: float) -> None:
    """Every reading of `new` at and around `t` is the reference's, and so is its JSON."""
    data = new.to_json()
    assert data == ref.to_json()
    assert UptimeTracker.from_json(data) == new  # one state, one representation
    for now in (t, t + new.interval / 2, t + 3 * new.interval, t + 100 * new.interval):
        assert new.observed_slots(now) == ref.observed_slots(now)
        for w in new.windows_s:
            assert new.window(now, w) == ref.window(now, w)


def drive(new: UptimeTracker, ref: RefTracker, history: list[Step], t: float) -> None:
    q = new.interval / 4  # steps are in quarter slots, so pings land anywhere in a slot
    for step in history:
        kind, dt = step[0], step[1] * q
        t += dt
        if kind == "ping":
            new, ref = (
                new.ping(t, step[2], reanchor=step[3]),
                ref.ping(t, step[2], reanchor=step[3]),
            )
        elif kind == "pause":
            until = t + 10 * q if step[2] else None
            new, ref = new.pause(t, until=until), ref.pause(t, until=until)
        elif kind == "resume":
            new, ref = new.resume(t), ref.resume(t)
        else:
            new, ref = new.cancel(), ref.cancel()
        same(new, ref, t)


@settings(max_examples=400, deadline=None)
@given(configs, st.lists(steps, max_size=120))
def test_generated_histories_read_exactly_as_the_reference(
    config: tuple[float, list[int], int, int], history: list[Step]
) -> None:
    interval, slots, max_buckets, horizon = config
    windows = UptimeWindows(tuple(n * interval for n in slots), None, max_buckets, horizon)
    new, ref = UptimeTracker.start(interval, windows), RefTracker.start(interval, windows)
    drive(new, ref, history, 1000.0)


@settings(max_examples=200, deadline=None)
@given(configs, st.lists(steps, max_size=60), st.lists(steps, max_size=60))
def test_a_tracker_read_back_from_the_reference_json_carries_on_alike(
    config: tuple[float, list[int], int, int], before: list[Step], after: list[Step]
) -> None:
    """A tracker persisted by the reference (the JSON format) is read and folded on exactly."""
    interval, slots, max_buckets, horizon = config
    windows = UptimeWindows(tuple(n * interval for n in slots), None, max_buckets, horizon)
    ref = RefTracker.start(interval, windows)
    new = UptimeTracker.start(interval, windows)
    drive(new, ref, before, 1000.0)
    t = 1000.0 + sum(s[1] for s in before) * interval / 4
    ref = RefTracker.from_json(new.to_json())
    drive(UptimeTracker.from_json(ref.to_json()), ref, after, t)


def test_a_day_of_default_windows_reads_exactly_as_the_reference() -> None:
    """Real sizes: 1 Hz pings for a day and a half with misses, unhealthy spells and a jittered
    clock, so both default windows fill, roll over and drop their oldest buckets."""
    new, ref = UptimeTracker.start(1.0, DEFAULT_WINDOWS), RefTracker.start(1.0, DEFAULT_WINDOWS)
    for i in range(130_000):
        if i % 53 == 7 or 40_000 <= i < 40_300:
            continue  # missed
        t = 5_000.0 + i + (i % 7) * 0.05
        healthy = not (i % 211 == 3 or 90_000 <= i < 90_120)
        new, ref = new.ping(t, healthy), ref.ping(t, healthy)
        if i % 997 == 0:
            same(new, ref, t)
    same(new, ref, t)


def test_a_steady_ping_copies_no_bucket_array_until_a_bucket_starts() -> None:
    """A ping whose expiring slot falls into the newest bucket of each window shares the older
    buckets (and their sums) with the tracker before it: its cost does not grow with the
    window. Only the ping that starts a bucket copies them, once per bucket."""
    t = UptimeTracker.start(1.0, DEFAULT_WINDOWS)
    for i in range(5_000):
        t = t.ping(1_000.0 + i, True)
    copies = {r.window_s: 0 for r in t.rings}
    for i in range(5_000, 5_000 + 3_380):
        before, t = t, t.ping(1_000.0 + i, True)
        for old, new in zip(before.rings, t.rings, strict=True):
            assert new.counts.tolist() != old.counts.tolist()  # every ping folds one slot
            if new.done is not old.done:
                copies[new.window_s] += 1
            else:
                assert new.sums is old.sums and new.tail == (old.tail or 0) + 1
    assert copies == {3600.0: 3_380 // 15, 86400.0: 3_380 // 338}
