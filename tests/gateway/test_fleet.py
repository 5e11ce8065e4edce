"""The gateway's fleet fold: WORKERS messages checked and folded with the worker read model's
reducer; availability by the read model's one rule at the time given (the wall clock, live)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jetgrid.coordinator.settings import Settings
from jetgrid.events import (
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
    encode,
)
from jetgrid.gateway.fleet import Fleet, live_models, workers_out
from jetgrid.projections.pools import served_within
from jetgrid.projections.views import worker_out

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = Settings(subject_prefix="fl", stream_prefix="FL_")
WorkerEvent = WorkerRegistered | WorkerHeartbeat | WorkerDraining | WorkerDeregistered
NAMES: dict[type[WorkerEvent], str] = {
    WorkerRegistered: "registered",
    WorkerHeartbeat: "heartbeat",
    WorkerDraining: "draining",
    WorkerDeregistered: "deregistered",
}


def reg(
    wid: str, models: tuple[str, ...] = ("echo",), pools: tuple[str, ...] = ("standard",)
) -> WorkerRegistered:
    return WorkerRegistered(
        worker_id=wid,
        pools=list(pools),
        models=list(models),
        backend="echo",
        concurrency=2,
        heartbeat_interval_s=1.0,
    )


def ping(wid: str, n: int, **kw: Any) -> WorkerHeartbeat:
    fields: dict[str, Any] = {"healthy": True, "interval_s": 1.0, "in_flight": 0, **kw}
    return WorkerHeartbeat(worker_id=wid, n=n, **fields)


def fleet(
    *events: tuple[WorkerEvent, float], at: float = 0.0, subject_worker: str | None = None
) -> Fleet:
    """A fleet (no NATS) fed `events` at their times (seconds after T0); its clock reads `at`."""
    f = Fleet(None, SETTINGS, clock=lambda: T0 + timedelta(seconds=at))
    for i, (ev, s) in enumerate(events):
        t = T0 + timedelta(seconds=s)
        wid = subject_worker or ev.worker_id
        subject = SETTINGS.subjects.worker_event(wid, NAMES[type(ev)])
        f.fold(subject, encode(ev, source="t", id=f"e{i}", time=t), t)
    return f


@pytest.mark.parametrize(
    ("events", "at", "availability"),
    [
        ([(reg("a"), 0)], 0, "online"),
        ([(reg("a"), 0), (ping("a", 1), 1)], 3, "online"),  # 2 intervals
        ([(reg("a"), 0), (ping("a", 1), 1)], 3.5, "stale"),
        ([(reg("a"), 0), (ping("a", 1), 1)], 6, "stale"),  # 5 intervals
        ([(reg("a"), 0), (ping("a", 1), 1)], 6.5, "offline"),
        ([(reg("a"), 0)], 31, "offline"),
        ([(reg("a"), 0), (WorkerDraining(worker_id="a"), 0.5)], 1, "draining"),
        ([(reg("a"), 0), (WorkerDeregistered(worker_id="a"), 0.5)], 1, "offline"),
        # A ping saying the backend accepts nothing is no lifecycle event: the worker is still
        # online (the old gateway fold called it draining); pool status leaves it out of warm
        # and cold capacity instead (tests/projections/test_pools.py).
        ([(reg("a"), 0), (ping("a", 1, accepting=False), 1)], 1, "online"),
    ],
)
def test_availability_is_the_read_models_rule_at_the_time_given(
    events: list[tuple[WorkerEvent, float]], at: float, availability: str
) -> None:
    (out,) = fleet(*events, at=at).workers()
    assert out["availability"] == availability


def test_live_models_also_need_recent_wall_clock_events() -> None:
    f = fleet(
        (reg("a", models=("echo", "llama3.2:1b")), 0),
        (reg("b", models=("echo",), pools=("fast",)), 0.5),
        (ping("a", 1), 1),
        at=2,
    )
    assert f.live_models() == {"echo": {"standard", "fast"}, "llama3.2:1b": {"standard"}}
    assert [v.worker_id for v in f.live()] == ["a", "b"]
    # The whole fleet went quiet: nothing in the log changes, the wall clock moves on.
    assert live_models(f.views.values(), T0 + timedelta(seconds=60)) == {}


def test_a_message_the_projector_would_reject_changes_nothing() -> None:
    f = fleet((reg("a"), 0), subject_worker="b")  # published under another worker's subject
    assert f.views == {}


def test_worker_out_has_the_shared_shape() -> None:
    f = fleet((reg("a"), 0), (ping("a", 1, completed=3, failed=1, in_flight=1, tier_factor=0.5), 1))
    (out,) = f.workers()
    assert set(out) == {
        "id", "availability", "pools", "models", "backend", "concurrency", "in_flight",
        "last_ping", "healthy", "nvml", "gpus", "tier", "tier_factor", "tier_since", "uptime",
        "share", "jobs", "registered", "lifecycle",
    }  # fmt: skip
    assert out["jobs"] == {"completed": 3, "failed": 1} and out["in_flight"] == 1
    assert set(out["uptime"]) == {"1h", "24h"} and out["tier"] is None
    assert out["tier_factor"] == 0.5  # what the worker's last ping said it applies
    # The same WorkerOut as the projector's views give, but for the tier and job counts.
    view = f.views["a"]
    assert out == worker_out(view, f.clock(), tier_factor=0.5, jobs=out["jobs"])
    assert workers_out(f.views.values(), f.clock()) == [out]


def test_served_remembered_answers_what_the_rule_says_as_time_and_views_change() -> None:
    now = [0.0]
    f = Fleet(None, SETTINGS, clock=lambda: T0 + timedelta(seconds=now[0]))

    def feed(ev: WorkerEvent, s: float) -> None:
        t = T0 + timedelta(seconds=s)
        subject = SETTINGS.subjects.worker_event(ev.worker_id, NAMES[type(ev)])
        f.fold(subject, encode(ev, source="t", id=f"e{s}", time=t), t)

    def check(window: float = 10.0) -> None:
        for pool, model in (("standard", "echo"), ("standard", "other"), ("gpu", "echo")):
            want = served_within(f.views.values(), pool, model, f.clock(), window)
            assert f.served(pool, model, window) == want, (now[0], pool, model)

    feed(reg("a"), 0)
    for now[0] in (0.0, 1.0, 9.9, 10.0, 10.1, 30.0):  # in, at and past the window
        check()
    feed(reg("a", models=("other",)), 31)  # the same worker now serves another model
    for now[0] in (31.0, 32.0, 45.0):
        check()
    feed(reg("b", pools=("gpu",)), 46)
    for now[0] in (46.0, 50.0, 60.0):
        check()
        check(window=100.0)
