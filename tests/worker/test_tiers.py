"""Tier-aware pulling: parsing the KV value, the pull gate over an injected clock, and a real
worker following its key in the tiers bucket of a real nats-server."""

from __future__ import annotations

import json

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig

from jetgrid.coordinator.settings import Settings
from jetgrid.events import WorkerHeartbeat, decode
from jetgrid.worker.tiers import PullGate, TierUpdate, parse_tier_value
from tests.helpers import job, submit, until


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"tier": "full", "factor": 1.0}', TierUpdate("full", 1.0)),
        (b'{"tier": "none", "factor": 0}', TierUpdate("none", 0.0)),
        (
            b'{"worker_id": "w1", "tier": "half", "factor": 0.5, "uptime": {"1h": 0.97}, '
            b'"observed_slots": 700, "since": "2026-01-01T00:00:00Z", "jobs_seq": 9}',
            TierUpdate("half", 0.5),
        ),
    ],
)
def test_parse_tier_value(raw: bytes, expected: TierUpdate) -> None:
    assert parse_tier_value(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"full", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"tier": "full"}', "'factor' has value None"),
        (b'{"tier": "full", "factor": "1"}', "Not a number"),
        (b'{"tier": "full", "factor": true}', "Not a number"),
        (b'{"tier": "full", "factor": 1.5}', "Must be 0..1"),
        (b'{"tier": "full", "factor": NaN}', "not a JSON number"),
        (b'{"tier": "full", "factor": ' + b"[" * 1000 + b"]" * 1000 + b"}", "nests deeper"),
        (b'{"factor": 0.5}', "'tier' has value None"),
    ],
)
def test_bad_tier_values_are_refused_with_the_reason(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tier_value(raw)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def drain(gate: PullGate, clock: Clock, seconds: float, step: float = 0.01) -> int:
    """A saturated queue: take everything the gate allows, every `step`, for `seconds`."""
    taken = 0
    for _ in range(round(seconds / step)):
        clock.t += step
        n = gate.allowance(busy=0, outstanding=0)
        gate.charge(n)
        taken += n
    return taken


@pytest.mark.parametrize(("factor", "expected"), [(1.0, 110), (0.5, 60), (0.1, 20), (0.0, 0)])
def test_a_rated_gate_takes_rate_times_factor_plus_the_burst(factor, expected) -> None:
    clock = Clock()
    gate = PullGate(concurrency=100, rate=10, burst=10, factor=factor, clock=clock)
    assert drain(gate, clock, 10.0) == pytest.approx(expected, abs=1)


def test_factor_0_stops_pulls_and_a_better_tier_brings_them_back() -> None:
    clock = Clock()
    gate = PullGate(concurrency=4, rate=10, burst=1, factor=0.5, clock=clock)
    assert gate.set_factor(0.0, "none")
    assert drain(gate, clock, 5.0) == 0
    assert gate.wait_s(0.5) == 0.5
    assert not gate.set_factor(0.0, "none")
    gate.set_factor(1.0, "full")
    assert gate.wait_s(0.5) == pytest.approx(0.1)
    assert drain(gate, clock, 2.0) == pytest.approx(20, abs=1)


def test_an_unrated_gate_fills_its_slots_at_any_factor_but_0() -> None:
    gate = PullGate(concurrency=3, factor=0.1)
    assert gate.allowance(busy=1, outstanding=0) == 2
    gate.set_factor(0.0, "none")
    assert gate.allowance(busy=0, outstanding=0) == 0
    assert gate.effective_rate is None


def test_charge_says_whether_the_budget_covered_the_delivery() -> None:
    clock = Clock()
    gate = PullGate(concurrency=4, rate=1, burst=1, factor=1.0, clock=clock)
    assert gate.charge() is True  # the full bucket's one token
    assert gate.charge() is False  # none left: a take for want of better
    clock.t += 1.0
    assert gate.charge() is True
    gate.set_factor(0.0, "none")
    clock.t += 10.0
    assert gate.charge() is False
    unrated = PullGate(concurrency=1, factor=0.1)
    assert unrated.charge() is True
    unrated.set_factor(0.0, "none")
    assert unrated.charge() is False


# -- against a real nats-server ----------------------------------------------------------------


async def put_tier(nc: NATS, s: Settings, worker_id: str, tier: str, factor: float) -> None:
    kv = await nc.jetstream().key_value(s.tiers_bucket)
    await kv.put(
        worker_id, json.dumps({"worker_id": worker_id, "tier": tier, "factor": factor}).encode()
    )


@pytest.mark.integration
async def test_a_worker_follows_its_key_stops_at_factor_0_and_keeps_pinging(
    streams, nc, start_worker, outcomes
) -> None:
    s = streams.replace(heartbeat_interval_s=0.05, pull_rate=50.0)
    js = nc.jetstream()
    await js.create_key_value(KeyValueConfig(bucket=s.tiers_bucket, history=5))
    pings: list[WorkerHeartbeat] = []

    async def on_ping(msg) -> None:
        pings.append(decode(msg.data).event)

    await nc.subscribe(s.subjects.worker_event("w1", "heartbeat"), cb=on_ping)
    w = await start_worker(settings=s, concurrency=2)
    await until(lambda: w.tier_watch is not None and w.tier_watch.attached.is_set())
    assert (w.gate.tier, w.gate.factor) == ("probation", 0.5)  # no key yet

    await put_tier(nc, s, "w1", "none", 0.0)
    await until(lambda: w.pulls_withdrawn == 1)
    await submit(nc, s, *(job(i) for i in range(5)))
    seen = len(pings)
    await until(lambda: len(pings) >= seen + 10)  # a while of pings, and no job taken
    assert w.counters.claimed == 0 and not outcomes.events
    assert pings[-1].tier_factor == 0.0 and pings[-1].healthy

    await put_tier(nc, s, "w1", "full", 1.0)
    await outcomes.wait_terminal(*(f"j{i}" for i in range(5)))
    claims = [c for j in range(5) for c in outcomes.claims(f"j{j}")]
    assert len(claims) == 5 and {c.tier_factor for c in claims} == {1.0}
    await until(lambda: pings[-1].tier_factor == 1.0)
    assert w.gate.tier == "full"

    kv = await js.key_value(s.tiers_bucket)
    await kv.delete("w1")  # gone from the bucket: back to the factor of a new worker
    await until(lambda: w.gate.factor == 0.5)
    await kv.put("w1", b"not json")  # a broken writer changes nothing
    await until(lambda: w.tier_watch is not None and w.tier_watch.bad_values == 1)
    assert w.gate.factor == 0.5


@pytest.mark.integration
async def test_without_a_bucket_a_worker_works_at_the_probation_factor_and_attaches_later(
    streams, nc, start_worker, outcomes
) -> None:
    s = streams.replace(heartbeat_interval_s=0.05)
    w = await start_worker(settings=s)
    await submit(nc, s, job(1))
    await outcomes.wait_terminal("j1")
    [claimed] = outcomes.claims("j1")
    assert claimed.tier_factor == 0.5
    assert w.tier_watch is not None and not w.tier_watch.attached.is_set()

    await nc.jetstream().create_key_value(KeyValueConfig(bucket=s.tiers_bucket, history=5))
    await put_tier(nc, s, "w1", "tenth", 0.1)
    await until(lambda: w.gate.tier == "tenth", timeout=15)
    assert w.gate.factor == 0.1
