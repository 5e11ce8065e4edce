"""The fleet fold: latest registration and ping per worker; liveness from event time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jetgrid.events import (
    Envelope,
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
)
from jetgrid.gateway.fleet import FleetState, live_models, worker_out

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def env(event, s: float) -> Envelope:  # type: ignore[no-untyped-def]
    return Envelope(id=f"e{s}", source="t", time=T0 + timedelta(seconds=s), event=event)


def reg(wid: str, models=("echo",), pools=("standard",)) -> WorkerRegistered:  # type: ignore[no-untyped-def]
    return WorkerRegistered(
        worker_id=wid,
        pools=list(pools),
        models=list(models),
        backend="echo",
        concurrency=2,
        heartbeat_interval_s=1.0,
    )


def ping(wid: str, n: int, **kw) -> WorkerHeartbeat:  # type: ignore[no-untyped-def]
    fields = {"healthy": True, "interval_s": 1.0, "in_flight": 0, **kw}
    return WorkerHeartbeat(worker_id=wid, n=n, **fields)


def fold(*events: Envelope) -> FleetState:
    state = FleetState()
    for e in events:
        state.apply(e)
    return state


@pytest.mark.parametrize(
    ("events", "availability"),
    [
        ([env(reg("a"), 0)], "online"),
        ([env(reg("a"), 0), env(ping("a", 1), 1)], "online"),
        ([env(reg("a"), 0), env(ping("a", 1), 1), env(reg("b"), 4.5)], "stale"),  # 3.5 s > 3x1
        ([env(reg("a"), 0), env(reg("b"), 31)], "offline"),
        ([env(reg("a"), 0), env(WorkerDraining(worker_id="a"), 0.5)], "draining"),
        ([env(reg("a"), 0), env(WorkerDeregistered(worker_id="a"), 0.5)], "offline"),
        ([env(reg("a"), 0), env(ping("a", 1, accepting=False), 1)], "draining"),
    ],
)
def test_availability_is_judged_by_event_time(events, availability) -> None:  # type: ignore[no-untyped-def]
    state = fold(*events)
    assert state.availability(state.workers["a"]) == availability


def test_live_models_also_need_recent_wall_clock_events() -> None:
    state = fold(
        env(reg("a", models=("echo", "llama3.2:1b")), 0),
        env(reg("b", models=("echo",), pools=("fast",)), 0.5),
        env(ping("a", 1), 1),
    )
    assert live_models(state, T0 + timedelta(seconds=2)) == {
        "echo": {"standard", "fast"},
        "llama3.2:1b": {"standard"},
    }
    assert live_models(state, T0 + timedelta(seconds=60)) == {}  # the whole fleet went quiet


def test_worker_out_has_the_shared_shape() -> None:
    state = fold(env(reg("a"), 0), env(ping("a", 1, completed=3, failed=1, in_flight=1), 1))
    out = worker_out(state, state.workers["a"])
    assert set(out) == {
        "id", "availability", "pools", "models", "backend", "concurrency", "in_flight",
        "last_ping", "healthy", "nvml", "gpus", "tier", "tier_factor", "uptime", "jobs",
    }  # fmt: skip
    assert out["jobs"] == {"completed": 3, "failed": 1} and out["in_flight"] == 1
    assert out["uptime"] == {"1h": None, "24h": None} and out["tier"] is None
