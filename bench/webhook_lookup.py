"""What the webhook service spends on terminal events of jobs that name no webhook.

For every terminal event the service reads the job's submission back (jetgrid.webhooks: the
first of the job's events that names its `jobs_seq`, one batched read of JOB_EVENTS, then a
direct get of that JOBS message) to learn whether it names a webhook. This stores `--jobs`
jobs without one (submission; `started`, naming its `jobs_seq`; `completed`) on a fresh
nats-server with jetgrid's config, then times `WebhookService.deliveries()` over their
`completed` events, one at a time (latency) and `--inflight` at once (throughput, as the
service handles a fetched batch), against the same loop doing only what the service does
before the look-up (parse the subject, decode the event): the cost if it knew at once that
the job has no webhook.

    .venv/bin/python bench/webhook_lookup.py [--jobs 2000] [--inflight 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import deployment_specs, provision_streams
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobCompleted, JobStarted, JobSubmitted, decode
from jetgrid.events.addressing import Speaker
from jetgrid.natsserver import NatsServer
from jetgrid.webhooks import WebhookService

Events = list[tuple[str, bytes]]


async def _store_jobs(bus: Bus, n: int) -> None:
    gw, worker = Speaker.service("bench"), Speaker.worker("w1", "b1")

    async def one(i: int) -> None:
        job = JobSubmitted(job_id=f"j{i}", model="echo", pool="standard", prompt="x")
        seq = (await bus.store(job, gw)).seq
        await bus.store(JobStarted(job_id=job.job_id, worker_id="w1", attempt=1, jobs_seq=seq),
                        worker)  # fmt: skip
        done = JobCompleted(job_id=job.job_id, worker_id="w1", attempt=1,
                            output={"response": "x"}, duration_s=0.01)  # fmt: skip
        await bus.store(done, worker)

    for lo in range(0, n, 100):
        await asyncio.gather(*(one(i) for i in range(lo, min(n, lo + 100))))


async def _timed(
    events: Events,
    step: Callable[[str, bytes], Awaitable[object]],
    inflight: int,
) -> tuple[float, float, float]:
    """(p50 ms, p99 ms one at a time; events per second with `inflight` at once)."""
    lat = []
    for subject, data in events:
        t = time.perf_counter()
        await step(subject, data)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    sem = asyncio.Semaphore(inflight)

    async def bounded(subject: str, data: bytes) -> None:
        async with sem:
            await step(subject, data)

    t0 = time.perf_counter()
    await asyncio.gather(*(bounded(s, d) for s, d in events))
    rate = len(events) / (time.perf_counter() - t0)
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99)], rate


async def measure(jobs: int, inflight: int) -> dict[str, tuple[float, float, float]]:
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp) / "js") as server:
        s = Settings(nats_url=server.url)
        bus = await Bus.connect(s, name="bench-webhooks")
        try:
            await provision_streams(bus.js, deployment_specs(s))
            await _store_jobs(bus, jobs)
            stored = await bus.messages(
                s.streams.job_events, subject=f"{s.subjects.prefix}.job.*.completed.*",
                limit=jobs,
            )  # fmt: skip
            events = [(m.subject, m.data) for m in stored]
            assert len(events) == jobs, len(events)
            service = WebhookService(s, bus)
            assert await service.deliveries(*events[0]) == []  # no webhook: nothing to send

            async def decode_only(subject: str, data: bytes) -> object:
                return s.subjects.parse_job_event(subject), decode(data)

            out = {
                "decode only (baseline)": await _timed(events, decode_only, inflight),
                "deliveries(), read back": await _timed(events, service.deliveries, inflight),
            }
            await service.http.aclose()
            return out
        finally:
            await bus.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--inflight", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    for r in range(args.rounds):
        figures = await measure(args.jobs, args.inflight)
        load = "/".join(f"{x:.2f}" for x in os.getloadavg())
        for name, (p50, p99, rate) in figures.items():
            print(f"round {r} {name:26s}: p50 {p50:.3f} ms p99 {p99:.3f} ms; "
                  f"{rate:,.0f} events/s at {args.inflight} in flight (load {load})",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
