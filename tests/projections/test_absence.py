"""Uptime judges the worker: planned absences and fleet-wide silences are not its downtime.

Pure: the tracker's pauses, the reducer's absence rules and the fold's silence rule, from event
times only (no server, no clock).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jetgrid.coordinator.settings import Settings
from jetgrid.coordinator.tiers import DEFAULT_POLICY, PROBATION
from jetgrid.events import (
    Envelope,
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
)
from jetgrid.projections.fold import Fold, FoldConfig
from jetgrid.projections.uptime import UptimeTracker, UptimeWindows
from jetgrid.projections.view_json import from_dict, to_dict
from jetgrid.projections.workers import WorkerView, apply, clock_ticks, refresh, silence

T0 = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
E0 = T0.timestamp()
W100 = UptimeWindows((100.0, 1000.0))
HOUR = UptimeWindows((3600.0,))
_ids = itertools.count()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def env(event, t: float) -> Envelope:
    return Envelope(id=f"a{next(_ids)}", source="test", time=at(t), event=event)


def reg(t: float, wid: str = "w1", boot: str = "b1", interval: float = 10.0) -> Envelope:
    return env(
        WorkerRegistered(
            worker_id=wid, pools=["standard"], models=["m"], backend="echo", concurrency=1,
            heartbeat_interval_s=interval, boot_id=boot,
        ),
        t,
    )  # fmt: skip


def ping(t: float, n: int, wid: str = "w1", boot: str = "b1", healthy: bool = True,
         interval: float = 10.0) -> Envelope:  # fmt: skip
    return env(
        WorkerHeartbeat(
            worker_id=wid, n=n, healthy=healthy, interval_s=interval, in_flight=0, boot_id=boot
        ),
        t,
    )


def fold(envs, view: WorkerView | None = None, windows: UptimeWindows = HOUR) -> WorkerView:
    for e in envs:
        view = apply(view, e, DEFAULT_POLICY, windows)
    assert view is not None
    return view


def judged(view: WorkerView, until: float, windows: UptimeWindows = HOUR) -> WorkerView:
    """The view refreshed at every second up to `until`, as the projector's ticks do."""
    for tick in clock_ticks(view.as_of, at(until), 1.0):
        view = refresh(view, tick, DEFAULT_POLICY, windows)
    return view


def two_hours(wid: str = "w1", boot: str = "b1") -> list[Envelope]:
    """Registered at 0, a ping every 10 s for 2 h, one in 33 missed: 97% uptime, tier half."""
    return [reg(0.0, wid, boot)] + [
        ping(10.0 * k, k, wid, boot) for k in range(1, 721) if k % 33 != 0
    ]


# -- the tracker ---------------------------------------------------------------------------------
def _ref_and_paused(n, bad, gap, after, during):
    ref = UptimeTracker.start(1.0, W100)
    paused = UptimeTracker.start(1.0, W100)
    for k in range(n):
        if k not in bad[0]:
            ref = ref.ping(E0 + k, k not in bad[1])
            paused = paused.ping(E0 + k, k not in bad[1])
    paused = paused.pause(E0 + n - 0.4)
    for d in during:  # pings while paused (a draining worker): neither for nor against
        paused = paused.ping(E0 + n + d * gap, d < 0.5)
    paused = paused.resume(E0 + n + gap - 0.4)
    paused = paused.ping(E0 + n - 1, False)  # from before the resume: ignored
    for j in range(after):
        healthy = (n + j) not in bad[1]
        if (n + j) not in bad[0]:
            ref = ref.ping(E0 + n + j, healthy)
            paused = paused.ping(E0 + n + gap + j, healthy)
    return ref, paused


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 400),
    bad=st.tuples(st.frozensets(st.integers(0, 800)), st.frozensets(st.integers(0, 800))),
    gap=st.integers(0, 100_000),
    after=st.integers(0, 400),
    during=st.lists(st.floats(0.0, 0.99), max_size=5),
)
def test_a_pause_cuts_its_slots_out_exactly(n, bad, gap, after, during) -> None:
    """Paused for `gap` seconds, a tracker equals one that never saw the gap, at every time."""
    assume(any(k not in bad[0] for k in range(n)))  # pinged before: a pause needs a grid
    ref, paused = _ref_and_paused(n, bad, gap, after, during)
    assert (paused.top, paused.mask, paused.first_slot) == (ref.top, ref.mask, ref.first_slot)
    assert [r.counts.tolist() for r in paused.rings] == [r.counts.tolist() for r in ref.rings]
    for now in (n + after, n + after + 0.5, n + after + 50):
        assert paused.windows(E0 + gap + now) == ref.windows(E0 + now)
        assert paused.observed_slots(E0 + gap + now) == ref.observed_slots(E0 + now)
    assert UptimeTracker.from_json(paused.to_json()) == paused


def test_while_paused_the_window_stands_still() -> None:
    tr = UptimeTracker.start(1.0, W100)
    for k in range(150):
        tr = tr.ping(E0 + k, k % 10 != 0)
    paused = tr.pause(E0 + 150)
    for later in (150.0, 151.0, 1e4, 1e6):
        assert paused.windows(E0 + later) == tr.windows(E0 + 150)
    # unplanned silence, for comparison, decays
    assert tr.uptime(E0 + 250, 100.0) == 0.0


def test_cancel_counts_the_paused_slots_as_missed() -> None:
    tr = UptimeTracker.start(1.0, W100)
    for k in range(150):
        tr = tr.ping(E0 + k, True)
    cancelled = tr.pause(E0 + 150, until=E0 + 160).cancel()
    assert cancelled.windows(E0 + 200) == tr.windows(E0 + 200)
    assert cancelled.uptime(E0 + 200, 100.0) == 0.5


def test_a_version_1_tracker_still_loads() -> None:
    tr = UptimeTracker.start(1.0, W100).ping(E0, True)
    data = tr.to_json()
    for key in ("away", "provisional", "resumed"):
        del data[key]
    data["v"] = 1
    assert UptimeTracker.from_json(data) == tr


# -- planned absence (the reducer) --------------------------------------------------------------
def test_a_worker_back_after_an_hour_stopped_cleanly_is_in_the_tier_it_left_in() -> None:
    v = fold(two_hours())
    assert v.tier == "half"
    v = fold([env(WorkerDeregistered(worker_id="w1", reason="stopped"), 7205.0)], v)
    v = judged(v, 7205.0 + 3600.0)  # an hour stopped, judged every second: the tier holds
    assert v.tier == "half"
    back = 7205.0 + 3600.0
    v = fold([reg(back, boot="b2"), *(ping(back + 1 + 10 * k, k, boot="b2") for k in range(30))], v)
    assert v.tier == "half"
    assert v.tier_history == ((at(0), PROBATION), (at(1010), "half"))
    # the window reached back over the absence: 97% of the slots before it, 100% after
    w = v.uptime.window(at(back + 300).timestamp(), 3600.0)
    assert w.slots == 360 and 0.97 < w.uptime < 0.98


def test_a_sigkilled_worker_is_judged_for_its_absence() -> None:
    v = fold(two_hours())
    v = judged(v, 7205.0 + 3600.0)  # no goodbye: the silence counts while it lasts
    assert v.tier == "none"
    back = 7205.0 + 3600.0
    v = fold([reg(back, boot="b2"), *(ping(back + 1 + 10 * k, k, boot="b2") for k in range(30))], v)
    assert v.tier == "none"
    assert v.uptime.uptime(at(back + 300).timestamp(), 3600.0) < 0.1


def test_draining_pings_count_neither_for_nor_against() -> None:
    v = fold(two_hours())
    v = fold([env(WorkerDraining(worker_id="w1", reason="upgrade"), 7205.0)], v)
    before = v.uptime.windows(at(7205).timestamp())
    v = fold([ping(7210.0 + 10 * k, 721 + k, healthy=False) for k in range(100)], v)
    v = fold([env(WorkerDeregistered(worker_id="w1", reason="done"), 8300.0)], v)
    assert v.uptime.windows(at(9000).timestamp()) == before
    assert v.tier == "half"


def test_a_ping_after_a_deregistration_resumes_the_count() -> None:
    v = fold(two_hours())
    v = fold([env(WorkerDeregistered(worker_id="w1", reason="stopped"), 7205.0)], v)
    v = fold([ping(9000.0 + 10 * k, 721 + k) for k in range(3)], v)
    assert v.lifecycle == "active" and v.uptime.away is None
    v = judged(v, 9020.0 + 3600.0)  # silent again without a goodbye: that counts
    assert v.tier == "none"


def test_a_registration_while_active_does_not_excuse_the_silence_before_it() -> None:
    v = fold(two_hours())
    v = fold([reg(9000.0, boot="b2"), ping(9001.0, 0, boot="b2")], v)
    w = v.uptime.window(at(9005).timestamp(), 3600.0)
    assert w.healthy < 0.6 * w.slots  # 1795 s of the hour were silence


def test_absence_state_survives_serialisation() -> None:
    v = fold(two_hours())
    v = fold([env(WorkerDraining(worker_id="w1", reason="x"), 7205.0)], v)
    assert from_dict(to_dict(v)) == v


# -- a silent fleet (the fold) ------------------------------------------------------------------
def _fold(windows: UptimeWindows = HOUR) -> Fold:
    return Fold(Settings().subjects, FoldConfig(windows=windows))


def _fleet(f: Fold, start: float, stop: float, boots: dict[str, str], skip=()) -> None:
    t = start
    while t < stop:
        for wid, boot in boots.items():
            if wid not in skip:
                f.apply_worker(ping(t, int(t // 10), wid, boot))
        t += 10.0


def test_a_broker_outage_moves_no_tier() -> None:
    f = _fold()
    for wid in ("a", "b"):
        f.apply_worker(reg(0.0, wid))
    _fleet(f, 10.0, 7200.0, {"a": "b1", "b": "b1"})
    tiers = {w: v.tier for w, v in f.workers.items()}
    assert tiers == {"a": "full", "b": "full"}
    changes = len(f.tier_changes)
    # nothing at all on WORKERS for 600 s (the broker was down), then the same boots go on
    _fleet(f, 7800.0, 9000.0, {"a": "b1", "b": "b1"})
    assert {w: v.tier for w, v in f.workers.items()} == tiers
    assert len(f.tier_changes) == changes
    assert f.workers["a"].uptime.uptime(at(9000).timestamp(), 3600.0) == 1.0


def test_one_workers_own_outage_still_counts() -> None:
    f = _fold()
    for wid in ("a", "b"):
        f.apply_worker(reg(0.0, wid))
    _fleet(f, 10.0, 7200.0, {"a": "b1", "b": "b1"})
    _fleet(f, 7200.0, 7800.0, {"a": "b1", "b": "b1"}, skip={"a"})  # only b is heard from
    _fleet(f, 7800.0, 9000.0, {"a": "b1", "b": "b1"})
    assert f.workers["a"].tier == "none" and f.workers["b"].tier == "full"


def test_a_worker_restarted_during_a_fleet_silence_is_judged_for_it() -> None:
    f = _fold()
    for wid in ("a", "b"):
        f.apply_worker(reg(0.0, wid))
    _fleet(f, 10.0, 7200.0, {"a": "b1", "b": "b1"})
    f.apply_worker(reg(7800.0, "a", boot="b2"))  # a was SIGKILLed and restarted
    _fleet(f, 7800.0, 9000.0, {"a": "b2", "b": "b1"})
    assert f.workers["a"].tier == "none" and f.workers["b"].tier == "full"


def test_silence_is_a_no_op_for_short_gaps_and_absent_workers() -> None:
    v = fold(two_hours())
    assert silence(v, at(7200), at(7215)) is v  # 1.5 intervals: a late ping, not an outage
    assert silence(v, at(7200), at(7300)).uptime.provisional == at(7300).timestamp()
    gone = fold([env(WorkerDeregistered(worker_id="w1", reason="x"), 7205.0)], v)
    assert silence(gone, at(7205), at(7900)) is gone
    assert silence(v, at(9000), at(9900)) is v  # not heard from since long before


def test_a_goodbye_after_a_fleet_silence_excuses_the_silence_then_pauses() -> None:
    f = _fold()
    for wid in ("a", "b"):
        f.apply_worker(reg(0.0, wid))
    _fleet(f, 10.0, 7200.0, {"a": "b1", "b": "b1"})
    f.apply_worker(env(WorkerDeregistered(worker_id="a", reason="stopped"), 7800.0))
    up = f.workers["a"].uptime
    assert up is not None and up.away is not None and up.provisional is None
    assert up.uptime(at(9000).timestamp(), 3600.0) == 1.0


def test_a_projector_restarted_mid_outage_agrees_with_one_that_was_not() -> None:
    """Views persisted while a silence is undecided, loaded into a new fold, end equal."""
    envs = [reg(0.0, w) for w in ("a", "b")]
    envs += [ping(float(t), t // 10, w) for t in range(10, 7200, 10) for w in ("a", "b")]
    envs += [ping(float(t), t // 10, w) for t in range(7800, 9000, 10) for w in ("a", "b")]
    one = _fold()
    for e in envs:
        one.apply_worker(e)
    cut = next(i for i, e in enumerate(envs) if e.time >= at(7800)) + 1  # a resumed, b not yet
    first = _fold()
    for e in envs[:cut]:
        first.apply_worker(e)
    assert first.workers["b"].uptime.provisional is not None
    saved = {w: from_dict(to_dict(v)) for w, v in first.workers.items()}
    second = Fold(Settings().subjects, FoldConfig(windows=HOUR), workers=saved, clock=first.clock)
    for e in envs[cut:]:
        second.apply_worker(e)
    assert second.workers == one.workers


def test_a_survivor_heard_from_long_after_the_silence_ended_is_judged_for_the_delay() -> None:
    f = _fold()
    for wid in ("a", "b"):
        f.apply_worker(reg(0.0, wid))
    _fleet(f, 10.0, 7200.0, {"a": "b1", "b": "b1"})
    # the broker is back at 7800: a reconnects at once, b only 600 s later (its own trouble)
    _fleet(f, 7800.0, 8400.0, {"a": "b1", "b": "b1"}, skip={"b"})
    _fleet(f, 8400.0, 9000.0, {"a": "b1", "b": "b1"})
    assert f.workers["a"].tier == "full" and f.workers["b"].tier == "none"
    w = f.workers["b"].uptime.window(at(9000).timestamp(), 3600.0)
    # its 600 s after the broker came back, less the grace (two 10 s intervals); not the outage
    assert w.slots - w.healthy == 58
