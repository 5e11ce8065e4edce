"""The worker read model: a pure reducer, its rules for odd input, availability and tiers."""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetgrid.coordinator.tiers import DEFAULT_POLICY, PROBATION, TierPolicy
from jetgrid.events import (
    Envelope,
    GpuTelemetry,
    JobClaimed,
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
)
from jetgrid.events.errors import ConfigError
from jetgrid.events.workers import ModelInfo
from jetgrid.projections.uptime import UptimeWindows
from jetgrid.projections.view_json import from_dict, to_dict
from jetgrid.projections.views import worker_out
from jetgrid.projections.workers import (
    WorkerView,
    apply,
    apply_all,
    availability,
    clock_ticks,
    is_live,
    refresh,
    worker_id_of,
)

T0 = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
WIN = UptimeWindows((100.0, 1000.0))
POLICY = DEFAULT_POLICY
_ids = itertools.count()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def env(event, t: float, id: str | None = None) -> Envelope:
    return Envelope(id=id or f"e{next(_ids)}", source="test", time=at(t), event=event)


def reg(t: float, wid: str = "w1", interval: float = 1.0, boot: str = "b1", **kw) -> Envelope:
    fields = dict(
        worker_id=wid,
        pools=["standard"],
        models=["llama3.2:1b"],
        backend="echo",
        concurrency=4,
        heartbeat_interval_s=interval,
        hostname="gpu-1",
        boot_id=boot,
    )
    fields.update(kw)
    return env(WorkerRegistered(**fields), t)


def ping(
    t: float,
    n: int,
    healthy: bool = True,
    wid: str = "w1",
    interval: float = 1.0,
    boot: str | None = "b1",
    id: str | None = None,
    **kw,
) -> Envelope:
    event = WorkerHeartbeat(
        worker_id=wid,
        n=n,
        healthy=healthy,
        interval_s=interval,
        in_flight=kw.pop("in_flight", 0),
        boot_id=boot,
        **kw,
    )
    return env(event, t, id)


def fold(envs, policy: TierPolicy = POLICY, windows: UptimeWindows = WIN) -> WorkerView:
    view = None
    for e in envs:
        view = apply(view, e, policy, windows)
    assert view is not None
    return view


def pings(start: float, count: int, n0: int = 0, bad: set[int] = frozenset(), **kw):
    return [ping(start + k, n0 + k, healthy=(n0 + k) not in bad, **kw) for k in range(count)]


# -- registration and unknown workers -----------------------------------------------------------
def test_registration_fills_the_view() -> None:
    v = fold([reg(0.0)])
    assert (v.worker_id, v.registered, v.registrations) == ("w1", True, 1)
    assert (v.pools, v.models, v.backend, v.concurrency) == (
        ("standard",),
        ("llama3.2:1b",),
        "echo",
        4,
    )
    assert (v.hostname, v.heartbeat_interval_s, v.boot_id) == ("gpu-1", 1.0, "b1")
    assert (v.first_seen, v.last_seen, v.registered_at) == (at(0), at(0), at(0))
    assert (v.lifecycle, v.tier, v.tier_history) == ("active", PROBATION, ((at(0), PROBATION),))
    assert v.last_ping is None and v.uptime is None


def test_ping_from_an_unknown_worker_creates_an_unregistered_view() -> None:
    v = fold([ping(5.0, 0, pools=["fast"], models=["m"], interval=2.0)])
    assert (v.registered, v.pools, v.models, v.heartbeat_interval_s) == (
        False,
        ("fast",),
        ("m",),
        2.0,
    )
    assert v.backend is None and v.pings == 1
    assert availability(v, at(5.0)) == "online"
    later = apply(v, reg(6.0, interval=2.0), POLICY, WIN)
    assert later.registered and later.pools == ("standard",)
    assert later.first_seen == at(5.0)


def test_lifecycle_event_from_an_unknown_worker() -> None:
    v = fold([env(WorkerDeregistered(worker_id="ghost", reason="bye"), 1.0)])
    assert (v.registered, v.lifecycle, v.reason) == (False, "deregistered", "bye")
    assert availability(v, at(1.0)) == "offline"


# -- duplicates ---------------------------------------------------------------------------------
def test_the_same_envelope_twice_changes_nothing() -> None:
    v = fold([reg(0.0), *pings(1.0, 5)])
    dup = ping(3.0, 2, id="repeat")
    once = apply(v, dup, POLICY, WIN)
    assert apply(once, dup, POLICY, WIN) is once
    r = reg(10.0)
    with_reg = apply(once, r, POLICY, WIN)
    assert apply(with_reg, r, POLICY, WIN) is with_reg


def test_a_republished_ping_with_the_same_boot_and_counter_changes_nothing() -> None:
    v = fold([reg(0.0), *pings(1.0, 5)])
    assert apply(v, ping(5.0, 4, id="other-id"), POLICY, WIN) is v
    assert apply(v, ping(5.0, 4, boot="b2"), POLICY, WIN) is not v  # another boot: a new ping


def test_ping_counters_catch_duplicates_beyond_the_recent_ids() -> None:
    v = fold([reg(0.0), *pings(1.0, 300)])
    assert apply(v, ping(100.0, 99, id="again"), POLICY, WIN) is v  # 200 pings ago
    assert apply(v, ping(40.0, 39, id="late"), POLICY, WIN) is v  # 260 behind: dropped by rule
    missing = fold([reg(0.0), *[p for p in pings(1.0, 300) if p.event.n != 99]])
    filled = apply(missing, ping(100.0, 99), POLICY, WIN)
    assert (filled.pings, filled.late_pings) == (missing.pings + 1, 1)
    no_boot = fold([reg(0.0), *pings(1.0, 5, boot=None)])
    assert apply(no_boot, ping(3.0, 2, boot=None), POLICY, WIN).pings == 6  # only ids can tell


# -- out of order -------------------------------------------------------------------------------
def test_late_ping_counts_into_its_slot_but_does_not_move_last_ping() -> None:
    events = [reg(0.0), *pings(1.0, 30)]
    in_order = fold(events)
    late = events[:]
    late.append(late.pop(10))  # ping n=9 arrives after n=29
    v = fold(late)
    assert v.last_ping == in_order.last_ping and v.last_ping.n == 29
    assert (v.pings, v.healthy_pings, v.late_pings) == (30, 30, 1)
    assert v.uptime.window(at(31).timestamp(), 100.0) == in_order.uptime.window(
        at(31).timestamp(), 100.0
    )
    assert v.last_seen == at(30)


def test_older_registration_does_not_overwrite_newer_details() -> None:
    v = fold([reg(10.0, concurrency=8), reg(5.0, concurrency=2)])
    assert (v.concurrency, v.registered_at, v.registrations) == (8, at(10), 2)


@given(st.permutations(range(6)))
def test_lifecycle_does_not_depend_on_arrival_order(order: list[int]) -> None:
    events = [
        reg(0.0),
        ping(1.0, 0),
        env(WorkerDraining(worker_id="w1"), 2.0),
        ping(3.0, 1),
        env(WorkerDeregistered(worker_id="w1"), 4.0),
        ping(9.0, 2),  # back after deregistering
    ]
    v = fold([events[i] for i in order])
    assert (v.lifecycle, v.reason, v.last_seen, v.registered) == ("active", None, at(9.0), True)
    assert (v.draining_at, v.deregistered_at) == (at(2.0), at(4.0))
    assert v.last_ping.n == 2


# -- availability -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0.0, "online"),
        (2.0, "online"),
        (4.0, "online"),
        (4.01, "stale"),
        (10.0, "stale"),
        (10.01, "offline"),
        (3600.0, "offline"),
        (-5.0, "online"),
    ],
)
def test_availability_by_age_in_intervals(age: float, expected: str) -> None:
    v = fold([reg(0.0, interval=2.0), ping(1.0, 0, interval=2.0)])
    assert availability(v, at(1.0 + age)) == expected


@pytest.mark.parametrize(
    ("age", "expected"), [(0.0, "draining"), (5.0, "draining"), (5.01, "offline")]
)
def test_draining_worker_is_draining_while_heard_from(age: float, expected: str) -> None:
    v = fold([reg(0.0), ping(1.0, 0), env(WorkerDraining(worker_id="w1", reason="sigterm"), 2.0)])
    assert (v.lifecycle, v.reason) == ("draining", "sigterm")
    assert availability(v, at(2.0 + age)) == expected
    assert apply(v, ping(3.0, 1), POLICY, WIN).lifecycle == "draining"  # still pings while draining


def test_deregistered_is_offline_until_it_pings_again() -> None:
    v = fold([reg(0.0), ping(1.0, 0), env(WorkerDeregistered(worker_id="w1"), 2.0)])
    assert availability(v, at(2.0)) == "offline"
    back = apply(v, ping(30.0, 0, boot="b2"), POLICY, WIN)
    assert (back.lifecycle, availability(back, at(30.0))) == ("active", "online")
    again = apply(v, reg(20.0, boot="b2"), POLICY, WIN)
    assert (again.lifecycle, availability(again, at(20.5))) == ("active", "online")


# One table for the one rule: interval 2 s, last event at t = 1; draining and deregistration
# (when given) are said at t = 1 too.
@pytest.mark.parametrize(
    ("said", "age", "expected", "live"),
    [
        (None, 0.0, "online", True),
        (None, 4.0, "online", True),  # 2 intervals
        (None, 4.5, "stale", True),
        (None, 10.0, "stale", True),  # 5 intervals
        (None, 10.5, "offline", False),
        ("draining", 0.0, "draining", False),
        ("draining", 10.0, "draining", False),
        ("draining", 10.5, "offline", False),
        ("deregistered", 0.0, "offline", False),
        ("deregistered", 3600.0, "offline", False),
    ],
)
def test_availability_table(said: str | None, age: float, expected: str, live: bool) -> None:
    events = [reg(0.0, interval=2.0), ping(1.0, 0, interval=2.0)]
    if said == "draining":
        events.append(env(WorkerDraining(worker_id="w1"), 1.0))
    elif said == "deregistered":
        events.append(env(WorkerDeregistered(worker_id="w1"), 1.0))
    v = fold(events)
    assert (availability(v, at(1.0 + age)), is_live(v, at(1.0 + age))) == (expected, live)


def test_registered_worker_that_never_pinged() -> None:
    v = fold([reg(0.0, interval=5.0)])
    assert [availability(v, at(s)) for s in (10.0, 11.0, 26.0)] == ["online", "stale", "offline"]


# -- uptime and tiers ---------------------------------------------------------------------------
def test_tier_history_through_probation_and_decay() -> None:
    v = fold([reg(0.0), *pings(1.0, 200)])  # pings at 1..200 s; slot k holds ping n=k
    # probation until 100 complete slots: the ping at 101 s closes slot 99
    assert v.tier_history == ((at(0), PROBATION), (at(101), "full"))
    assert v.tier == "full" and v.tier_since == at(101)
    assert (v.pings, v.healthy_pings) == (200, 200)
    # silence: with a 100-slot window the uptime loses 1% per slot after the last ping
    for tick in clock_ticks(at(200), at(240), 1.0):
        v = refresh(v, tick, POLICY, WIN)
    assert v.tier_history[1:] == (
        (at(101), "full"),
        (at(203), "half"),  # 98/100
        (at(207), "tenth"),  # 94/100
        (at(212), "none"),  # 89/100
    )
    assert v.as_of == at(212)
    s = worker_out(v, at(240), tier=v.tier, tier_factor=POLICY.factor(v.tier))
    assert (s["availability"], s["uptime"], s["tier"], s["tier_factor"]) == (
        "offline",
        {"100s": 0.61, "1000s": 200 / 239},
        "none",
        0.0,
    )


def test_refresh_is_a_no_op_when_the_tier_holds_or_time_goes_back() -> None:
    v = fold([reg(0.0), *pings(1.0, 150)])
    assert refresh(v, at(151), POLICY, WIN) is v
    assert refresh(v, at(10), POLICY, WIN) is v


def test_unhealthy_pings_lower_the_tier() -> None:
    bad = {k for k in range(200) if k % 20 == 0}  # 5% unhealthy
    v = fold([reg(0.0), *pings(1.0, 200, bad=bad)])
    assert v.tier == "half"
    assert (v.pings, v.healthy_pings) == (200, 190)


def test_interval_change_restarts_uptime_and_probation() -> None:
    v = fold([reg(0.0), *pings(1.0, 150)])
    assert v.tier == "full"
    v = apply(v, ping(152.0, 150, interval=2.0), POLICY, WIN)
    assert (v.uptime.interval, v.tier) == (2.0, PROBATION)
    assert v.tier_history[-1] == (at(152), PROBATION)


def test_reboot_reanchors_the_slot_grid() -> None:
    first = [reg(0.0), *pings(1.0, 120)]
    # the new boot pings half a second off the old phase, with jitter across the old slot edges
    second = [reg(130.2, boot="b2")] + [
        ping(130.5 + k + (0.05 if k % 2 else -0.05), k, boot="b2") for k in range(120)
    ]
    v = fold(first + second)
    w = v.uptime.window(at(250).timestamp(), 100.0)  # slots 149..248: both boots
    assert w.uptime == 1.0
    assert v.tier == "full"


def test_stored_windows_must_match_the_configured_ones() -> None:
    v = fold([reg(0.0), ping(1.0, 0)])
    with pytest.raises(ConfigError, match="replay"):
        apply(v, ping(2.0, 1), POLICY, UptimeWindows((3600.0,)))


# -- purity, determinism, persistence -----------------------------------------------------------
def _log(seed: int) -> list[Envelope]:
    """A messy log: two workers, duplicates, late pings, a drain, a reboot."""
    rnd = random.Random(seed)
    events = [reg(0.0), reg(0.5, wid="w2", interval=2.0)]
    for k in range(300):
        events.append(ping(1.0 + k, k, healthy=rnd.random() > 0.03))
        if k % 2 == 0:
            events.append(
                ping(
                    1.0 + k,
                    k // 2,
                    wid="w2",
                    interval=2.0,
                    gpus=[GpuTelemetry(index=0, uuid="GPU-1", name="H100", memory_used_mb=1024.0)],
                    nvml=True,
                )
            )
    events += [events[5], events[40], events[41]]  # duplicates, long after the originals
    events.append(env(WorkerDraining(worker_id="w2"), 305.0))
    events.append(reg(320.0, boot="b9"))
    events += pings(321.0, 50, boot="b9")
    i = rnd.randrange(10, 200)
    events.append(events.pop(i))  # one late ping
    events.insert(3, env(JobClaimed(job_id="j1", worker_id="w1", attempt=1, jobs_seq=1), 1.0))
    return events


def test_replaying_the_same_log_gives_equal_state() -> None:
    log = _log(7)
    a = apply_all({}, log, POLICY, WIN)
    b = apply_all({}, log, POLICY, WIN)
    assert a == b and set(a) == {"w1", "w2"}
    dump = lambda views: json.dumps({k: to_dict(v) for k, v in views.items()}, sort_keys=True)  # noqa: E731
    assert dump(a) == dump(b)
    assert a["w2"].lifecycle == "draining"
    assert a["w1"].boot_id == "b9" and a["w1"].late_pings == 1


def test_serialisation_round_trips_and_continues_identically() -> None:
    log = _log(3)
    views = apply_all({}, log[:400], POLICY, WIN)
    restored = {k: from_dict(json.loads(json.dumps(to_dict(v)))) for k, v in views.items()}
    assert restored == views
    assert apply_all(restored, log[400:], POLICY, WIN) == apply_all(views, log[400:], POLICY, WIN)


def test_apply_does_not_touch_its_input() -> None:
    v = fold([reg(0.0), *pings(1.0, 10)])
    before = to_dict(v)
    apply(v, ping(11.0, 10), POLICY, WIN)
    refresh(v, at(500), POLICY, WIN)
    assert to_dict(v) == before


def test_last_ping_keeps_accepting_and_model_names() -> None:
    v = fold(
        [
            reg(0.0),
            ping(
                1.0, 0, accepting=False,
                models_loaded=[ModelInfo(name="llama3.2:1b", size_vram_bytes=10)],
                models_available=[ModelInfo(name="llama3.2:1b"), ModelInfo(name="qwen:7b")],
            ),
        ]
    )  # fmt: skip
    assert v.last_ping is not None and v.last_ping.accepting is False
    assert v.last_ping.models_loaded == ("llama3.2:1b",)
    assert v.last_ping.models_available == ("llama3.2:1b", "qwen:7b")
    assert from_dict(json.loads(json.dumps(to_dict(v)))) == v


def test_empty_model_lists_are_not_stored_and_old_views_load() -> None:
    v = fold([reg(0.0), ping(1.0, 0)])
    stored = to_dict(v)
    assert "models_loaded" not in stored["last_ping"]
    assert "models_available" not in stored["last_ping"]
    assert from_dict(stored) == v  # a view stored before the fields existed reads back


@pytest.mark.parametrize("data", [{}, {"v": 2}, {"v": 1, "worker_id": "w"}])
def test_from_dict_rejects_foreign_data(data) -> None:
    with pytest.raises(ValueError, match=r"(?i)worker view"):
        from_dict(data)


def test_wrong_events_are_programming_errors() -> None:
    v = fold([reg(0.0)])
    claimed = env(JobClaimed(job_id="j1", worker_id="w1", attempt=1, jobs_seq=1), 1.0)
    assert worker_id_of(claimed) is None and worker_id_of(reg(0.0, wid="w7")) == "w7"
    with pytest.raises(TypeError, match=r"jetgrid\.job\.claimed"):
        apply(v, claimed, POLICY, WIN)
    with pytest.raises(ValueError, match="w2"):
        apply(v, ping(1.0, 0, wid="w2"), POLICY, WIN)


# -- reading ------------------------------------------------------------------------------------
def test_the_worker_document_is_plain_json_with_the_latest_gpu_telemetry() -> None:
    gpu = GpuTelemetry(index=0, uuid="GPU-1", name="H100", responsive=False, error="GPU is lost")
    v = fold([reg(0.0), ping(1.0, 0, healthy=False, nvml=True, gpus=[gpu], in_flight=2)])
    # slot 0 (0.5 s to 1.5 s) is still in progress at 1.2 s
    s = worker_out(v, at(1.2), tier=v.tier, tier_factor=POLICY.factor(v.tier))
    assert json.loads(json.dumps(s)) == s
    assert s["gpus"][0]["error"] == "GPU is lost" and not s["gpus"][0]["responsive"]
    assert (s["in_flight"], s["availability"], s["registered"]) == (2, "online", True)
    assert (s["healthy"], s["nvml"], s["last_ping"]) == (False, True, "2026-11-22T12:00:01.000000Z")
    assert s["uptime"] == {"100s": None, "1000s": None}
    assert s["tier"] == PROBATION and s["tier_factor"] == 0.5
    stored = to_dict(v)
    assert (stored["last_ping"]["gpu_count"], stored["last_ping"]["gpus_unresponsive"]) == (1, 1)
    assert stored["first_seen"] == "2026-11-22T12:00:00.000000Z"


def test_clock_ticks() -> None:
    assert clock_ticks(None, at(5), 1.0) == []
    assert clock_ticks(at(5), at(5), 1.0) == []
    assert clock_ticks(at(0.5), at(3.2), 1.0) == [at(1), at(2), at(3)]
    assert clock_ticks(at(1), at(2), 1.0) == [at(2)]
    assert clock_ticks(at(0), at(25), 10.0) == [at(10), at(20)]
