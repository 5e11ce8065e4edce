"""A worker's pings on a real nats-server: stored on WORKERS, with telemetry, on a simulated
schedule, and with the tier factor it works at."""

from __future__ import annotations

import asyncio

import pytest

from jetgrid.events import JobSubmitted, WorkerHeartbeat, WorkerRegistered, decode, encode
from jetgrid.worker.agent import Worker, WorkerOptions
from jetgrid.worker.backends import EchoBackend
from jetgrid.worker.simulate import UptimeSchedule
from jetgrid.worker.telemetry import FakeProbe, cpu_reading, unhealthy_reading

pytestmark = pytest.mark.integration


async def collect(nc, subject: str) -> tuple[list[WorkerHeartbeat], asyncio.Event]:
    pings: list[WorkerHeartbeat] = []
    more = asyncio.Event()

    async def on_msg(msg) -> None:
        pings.append(decode(msg.data).event)
        more.set()

    await nc.subscribe(subject, cb=on_msg)
    return pings, more


async def wait_count(pings: list, more: asyncio.Event, n: int, timeout: float = 15) -> None:
    async def loop() -> None:
        while len(pings) < n:
            more.clear()
            await more.wait()

    await asyncio.wait_for(loop(), timeout)


async def test_a_simulated_worker_misses_and_fails_pings_on_its_schedule(
    streams, nc, start_worker
) -> None:
    s = streams.replace(heartbeat_interval_s=0.05, pull_rate=5.0)
    pings, more = await collect(nc, s.subjects.worker_event("sim", "heartbeat"))
    w = await start_worker(
        settings=s, worker_id="sim", simulate_uptime=0.8, simulate_seed=3, concurrency=2
    )
    await wait_count(pings, more, 40)
    schedule = UptimeSchedule(0.8, seed=3)
    for p in pings:
        outcome = schedule.ping_outcome(p.n)
        assert outcome != "missed", p.n
        assert p.healthy == (outcome == "healthy")
        assert (p.problems == []) == p.healthy
        assert p.interval_s == 0.05 and p.boot_id == w.boot_id
        assert p.models == ["echo"] and p.in_flight == 0 and p.tier_factor == 0.5
        assert p.nvml is False and p.nvml_error  # this machine: no NVML, said plainly
    ns = [p.n for p in pings]
    assert ns == sorted(ns) and len(set(ns)) == len(ns)
    assert {schedule.ping_outcome(n) for n in range(ns[-1])} == {"healthy", "missed", "unhealthy"}
    missed = [n for n in range(ns[-1]) if schedule.ping_outcome(n) == "missed"]
    assert not set(missed) & set(ns)

    # what went to core NATS is what the WORKERS stream stored
    js = nc.jetstream()
    sub = await js.subscribe(s.subjects.worker_event("sim", "*"), stream=s.streams.workers)
    first = decode((await sub.next_msg(timeout=5)).data).event
    assert isinstance(first, WorkerRegistered) and first.pull_rate == 5.0
    stored = decode((await sub.next_msg(timeout=5)).data).event
    assert stored == pings[0]
    await sub.unsubscribe()


async def test_a_gpu_going_bad_mid_run_gives_unhealthy_pings_and_the_worker_lives_on(
    streams, nc, outcomes
) -> None:
    s = streams.replace(heartbeat_interval_s=0.05)
    pings, more = await collect(nc, s.subjects.worker_event("gpu", "heartbeat"))
    probe = FakeProbe(
        lambda n: cpu_reading() if n < 3 else unhealthy_reading("GPU 0 did not answer NVML")
    )
    w = Worker(s, WorkerOptions(pool="standard", models=("echo",), worker_id="gpu"),
               EchoBackend(), probe=probe)  # fmt: skip
    task = asyncio.create_task(w.run())
    try:
        await wait_count(pings, more, 8)
        assert [p.healthy for p in pings[:3]] == [True] * 3
        assert all(not p.healthy and p.problems == ["GPU 0 did not answer NVML"] for p in pings[3:])
        job = JobSubmitted(job_id="after", model="echo", pool="standard", prompt="still here")
        await nc.jetstream().publish(
            s.subjects.submit("standard", "echo"), encode(job, source="test", id="after")
        )
        await outcomes.wait_terminal("after")
    finally:
        w.stop()
        await asyncio.wait_for(task, 10)
    assert probe.closed
