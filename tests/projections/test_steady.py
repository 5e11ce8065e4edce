"""The steady-ping path gives exactly the reducer's view, and is taken for plain pings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jetgrid.coordinator.tiers import DEFAULT_POLICY, TierPolicy
from jetgrid.events import (
    Envelope,
    GpuTelemetry,
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
)
from jetgrid.events.workers import ModelInfo
from jetgrid.projections import steady
from jetgrid.projections import workers as wr
from jetgrid.projections.uptime import UptimeWindows

T0 = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
WINDOWS = (UptimeWindows((8.0, 30.0)), UptimeWindows((30.0, 8.0)), wr.DEFAULT_WINDOWS)
POLICIES = (
    DEFAULT_POLICY,
    TierPolicy.from_string("gold=0.9:1,silver=0.5:0.5,0:0", probation_slots=3),
    TierPolicy.from_string("gold=0.9:1,silver=0.5:0.5,0:0", probation_slots=0, hysteresis=0.05),
)
GPU = GpuTelemetry(index=0, uuid="GPU-0", name="H100", memory_used_mb=1.0, memory_total_mb=2.0)

# One step of a history: (kind, dt in tenths of a second, counter step, healthy)
KINDS = ["ping"] * 30 + [
    "late", "early", "same_n", "dup_id", "no_boot", "reboot", "interval", "reg", "reg_other",
    "late_reg", "drain", "dereg", "silence",
]  # fmt: skip
step = st.tuples(
    st.sampled_from(KINDS),
    st.integers(0, 25),
    st.integers(1, 3),
    st.sampled_from([True] * 5 + [False]),
)


def _ping(wid: str, n: int, boot: str | None, interval: float, healthy: bool) -> Any:
    return WorkerHeartbeat(
        worker_id=wid, n=n, healthy=healthy, interval_s=interval, in_flight=1, boot_id=boot,
        gpus=[GPU], nvml=True, models_loaded=[ModelInfo(name="m")] if n % 2 else [],
        pools=[f"p{n % 3}"] if n % 5 else [],
    )  # fmt: skip


def _events(
    steps: list[tuple[Any, ...]], wid: str, bootless: bool = False
) -> list[tuple[str, Envelope | None]]:
    """Envelopes (or a fleet silence, None) from generated steps: mostly pings on time from one
    boot, with late, early, repeated and duplicate ones, reboots, interval changes, lifecycle
    events and fleet silences among them."""
    out: list[tuple[str, Envelope | None]] = []
    t, n, last_id, boots, interval = 0.0, 0, "e0", 1, 1.0
    for i, (kind, dt, dn, healthy) in enumerate(steps):
        t += dt / 10
        when = T0 + timedelta(seconds=t)
        eid = f"e{i}"
        boot: str | None = None if bootless else f"b{boots}"
        if kind == "reboot":
            boots += 1
            boot = f"b{boots}"
        elif kind == "interval":
            interval = 3.0 - interval
        elif kind == "no_boot":
            boot = None
        elif kind == "reg_other":
            boot = f"b{boots + 1}"  # a registration that names a boot no ping comes from
        if kind in ("reg_other", "late_reg"):
            when -= timedelta(seconds=3)
        if kind in ("reg", "reg_other", "late_reg", "drain", "dereg", "silence"):
            ev2: Any
            if kind.startswith("reg") or kind == "late_reg":
                ev2 = WorkerRegistered(
                    worker_id=wid, pools=["p"], models=["m"], backend="echo", concurrency=1,
                    heartbeat_interval_s=interval, boot_id=boot,
                )  # fmt: skip
            elif kind == "drain":
                ev2 = WorkerDraining(worker_id=wid, reason="r")
            elif kind == "dereg":
                ev2 = WorkerDeregistered(worker_id=wid, reason="r")
            else:
                out.append((kind, None))
                continue
            out.append((kind, Envelope(id=eid, source="t", time=when, event=ev2)))
        else:
            if kind != "same_n":
                n += dn
            ping_n = max(0, n - 5) if kind == "late" else n
            if kind in ("late", "early"):
                when -= timedelta(seconds=3)
            if kind == "dup_id":
                eid = last_id
            ev = _ping(wid, ping_n, boot, interval, healthy)
            out.append((kind, Envelope(id=eid, source="t", time=when, event=ev)))
        last_id = eid
    return out


@settings(max_examples=300)
@given(
    st.lists(step, min_size=1, max_size=120),
    st.sampled_from(range(len(WINDOWS))),
    st.sampled_from(range(len(POLICIES))),
    st.booleans(),
    st.booleans(),
)
def test_the_steady_path_is_the_reducer(
    steps, w: int, p: int, registered_first: bool, bootless: bool
) -> None:
    windows, policy = WINDOWS[w], POLICIES[p]
    if registered_first:
        steps = [("reg", 0, 1, True), *steps]
    view: wr.WorkerView | None = None
    clock = T0
    for kind, env in _events(steps, "w1", bootless):
        if env is None:  # a fleet silence of 30 s, then a re-judgement, as the fold does
            if view is not None:
                view = wr.silence(view, clock, clock + timedelta(seconds=30))
                clock += timedelta(seconds=30)
                view = wr.refresh(view, clock, policy, windows)
            continue
        clock = max(clock, env.time)
        want = wr.apply(view, env, policy, windows)
        fast = steady.steady_ping(view, env, policy, windows)
        assert fast is None or fast == want, kind
        assert steady.apply(view, env, policy, windows) == want
        view = want


def test_plain_pings_take_the_steady_path_through_probation_and_after() -> None:
    policy = POLICIES[1]
    windows = WINDOWS[0]
    reg = WorkerRegistered(
        worker_id="w1", pools=["p"], models=["m"], backend="echo", concurrency=1,
        heartbeat_interval_s=1.0, boot_id="b1",
    )  # fmt: skip
    view = wr.apply(None, Envelope(id="r", source="t", time=T0, event=reg), policy, windows)
    taken = 0
    tiers = set()
    for n in range(1, 60):
        healthy = n % 7 != 0 and not 30 <= n < 40
        when = T0 + timedelta(seconds=n)
        env = Envelope(id=f"p{n}", source="t", time=when, event=_ping("w1", n, "b1", 1.0, healthy))
        fast = steady.steady_ping(view, env, policy, windows)
        want = wr.apply(view, env, policy, windows)
        if fast is not None:
            taken += 1
            assert fast == want
        view = want
        tiers.add(view.tier)
    assert taken >= 57  # all but the first ping after the registration (it sets the phase)
    assert {"probation", "gold", "silver"} <= tiers
