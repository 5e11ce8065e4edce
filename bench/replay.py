# ruff: noqa: E501  (a benchmark script: long print lines read better unwrapped)
"""Replay speed: jetgrid's read-model rebuild beside a raw nats-py pipeline, in one run.

Fills a fresh nats-server with a mixed log (pings from many workers, plus jobs: submission,
claimed, started, completed), then times, over the same three streams:

  raw      ordered consumers -> executemany of (stream, seq, subject, data) rows into SQLite in
           1,000-row transactions (DESIGN section 11's baseline; no decoding, no folding)
  jetgrid  projections.replay.replay: decode, fold workers and jobs, write views + checkpoints

    .venv/bin/python bench/replay.py [--workers 500] [--seconds 360] [--jobs 5000]

Times raw before and after the replay, and prints events/s for each and the ratio to the mean of
the two raw runs (target >= 0.7; the one to the raw run before alone too), by wall-clock time
and by this process's CPU time (the second moves much less with other load on the machine; nats-server's
own CPU, the same for both pipelines, is in neither).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
from nats.js.api import DeliverPolicy
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table
from sqlalchemy.ext.asyncio import create_async_engine

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import provision_streams
from jetgrid.coordinator.settings import Settings
from jetgrid.events import (
    GpuTelemetry,
    JobClaimed,
    JobCompleted,
    JobStarted,
    JobSubmitted,
    WorkerHeartbeat,
    WorkerRegistered,
    encode,
    stream_specs,
)
from jetgrid.natsserver import NatsServer
from jetgrid.projections.folder import stream_filters
from jetgrid.projections.replay import replay
from jetgrid.projections.store import Store

CONF = Path(__file__).resolve().parent / "nats-bench.conf"
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)  # in the past: within max_future_s of any run
GPU = GpuTelemetry(
    index=0, uuid="GPU-0", name="NVIDIA H100", memory_used_mb=1000.0, memory_total_mb=81559.0,
    utilization_pct=37.0, temperature_c=55.0, power_w=250.0, ecc_errors=0, xid_errors=0,
)  # fmt: skip


async def fill(settings: Settings, nc, workers: int, seconds: int, jobs: int) -> int:
    """Publish the mixed log; returns the number of messages."""
    js = nc.jetstream(publish_async_max_pending=4000)
    subj = settings.subjects
    # A fixed start and fixed event ids, so the same arguments give the same log and the same
    # digest on any day and with any version of jetgrid: a speed-up must leave it unchanged.
    # Each message carries its id as Nats-Msg-Id, as every event a jetgrid process stores does
    # (coordinator.bus.Bus.store).
    t0 = T0
    n = 0

    async def publish(subject: str, data: bytes, msg_id: str) -> None:
        await js.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id})

    for w in range(workers):
        ev = WorkerRegistered(
            worker_id=f"w{w}", pools=["standard"], models=["echo"], backend="echo",
            concurrency=4, heartbeat_interval_s=1.0, boot_id="b",
        )  # fmt: skip
        await publish(
            subj.worker_event(f"w{w}", "registered"),
            encode(ev, source="b", id=f"r{w}", time=t0),
            f"r{w}",
        )
        n += 1
    job_every = max(1, seconds * workers // max(1, jobs))
    k = 0
    for s in range(seconds):
        t = t0 + timedelta(seconds=s + 1)
        for w in range(workers):
            if (s * 7 + w) % 53 == 0:  # about 2% missed pings, so tiers move
                continue
            ev = WorkerHeartbeat(
                worker_id=f"w{w}", n=s, healthy=True, interval_s=1.0, in_flight=1,
                nvml=True, gpus=[GPU], boot_id="b",
            )  # fmt: skip
            await publish(
                subj.worker_event(f"w{w}", "heartbeat"),
                encode(ev, source="b", id=f"p{w}-{s}", time=t),
                f"p{w}-{s}",
            )
            n += 1
            k += 1
            if k % job_every == 0:
                jid = f"j{k}"
                sub = JobSubmitted(job_id=jid, model="echo", pool="standard", prompt="hi")
                await publish(
                    subj.submit("standard", "echo"), encode(sub, source="b", id=jid, time=t), jid
                )
                for ev2, name in (
                    (JobClaimed(job_id=jid, worker_id=f"w{w}", attempt=1, jobs_seq=1), "claimed"),
                    (JobStarted(job_id=jid, worker_id=f"w{w}", attempt=1), "started"),
                    (
                        JobCompleted(
                            job_id=jid, worker_id=f"w{w}", attempt=1, output="hi", duration_s=0.1
                        ),
                        "completed",
                    ),
                ):
                    await publish(
                        subj.job_event(jid, name),
                        encode(ev2, source="b", id=f"{jid}-{name}", time=t),
                        f"{jid}-{name}",
                    )
                n += 4
    await js.publish_async_completed()
    return n


async def raw_pipeline(settings: Settings, nc, db: Path) -> tuple[int, float]:
    """Ordered consumers -> executemany into SQLite, 1,000 rows per transaction."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    md = MetaData()
    raw = Table(
        "raw", md, Column("stream", String(32), primary_key=True),
        Column("seq", Integer, primary_key=True), Column("subject", String(256)),
        Column("data", LargeBinary),
    )  # fmt: skip
    async with engine.begin() as conn:
        await conn.run_sync(md.create_all)
    js = nc.jetstream()
    total = 0
    t0 = time.perf_counter()
    for logical, (stream, subject) in stream_filters(settings).items():
        last = (await js.stream_info(stream)).state.last_seq
        rows: list[dict] = []
        done = asyncio.Event()
        queue: asyncio.Queue[list[dict]] = asyncio.Queue()

        async def cb(msg, logical=logical, last=last, rows=rows, queue=queue, done=done) -> None:
            seq = msg.metadata.sequence.stream
            rows.append({"stream": logical, "seq": seq, "subject": msg.subject, "data": msg.data})
            if len(rows) >= 1000 or seq >= last:
                queue.put_nowait(rows[:])
                rows.clear()
            if seq >= last:
                done.set()

        sub = await js.subscribe(
            subject, stream=stream, cb=cb, ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL, pending_msgs_limit=-1, pending_bytes_limit=-1,
        )  # fmt: skip
        written = 0
        while written < last:
            chunk = await queue.get()
            async with engine.begin() as conn:
                await conn.execute(raw.insert(), chunk)
            written = chunk[-1]["seq"]
            total += len(chunk)
        await sub.unsubscribe()
    seconds = time.perf_counter() - t0
    await engine.dispose()
    return total, seconds


async def timed_raw(settings: Settings, nc, db: Path, when: str) -> tuple[int, float, float]:
    """One raw run: (messages, seconds, this process's CPU seconds), printed."""
    cpu0 = time.process_time()
    n, s = await raw_pipeline(settings, nc, db)
    cpu = time.process_time() - cpu0
    print(
        f"raw      ordered consumer -> executemany SQLite : {n / s:8,.0f} events/s ({n:,} in {s:.1f} s, {when} the replay)"
    )
    return n, s, cpu


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workers", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=360)
    ap.add_argument("--jobs", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "nats", conf=CONF, port=0)
        server.start()
        try:
            settings = Settings(nats_url=server.url, subject_prefix="bench", stream_prefix="B_")
            nc = await nats.connect(server.url)
            await provision_streams(
                nc.jetstream(), stream_specs(settings.subjects, settings.streams)
            )
            t = time.perf_counter()
            n = await fill(settings, nc, args.workers, args.seconds, args.jobs)
            print(f"log: {n:,} messages ({args.workers} workers x {args.seconds} s of 1 Hz pings + "
                  f"jobs x 4 events), published in {time.perf_counter() - t:.1f} s")  # fmt: skip
            # raw runs before and after the replay, and the replay is compared with their mean:
            # the speed of a shared machine drifts by tens of per cent within seconds, and a
            # baseline on each side of the run cancels a steady drift.
            raws = [await timed_raw(settings, nc, Path(tmp) / "raw-before.db", "before")]
            store = Store(f"sqlite+aiosqlite:///{Path(tmp) / 'replay.db'}")
            cpu0 = time.process_time()
            res = await replay(settings, store, Bus(nc, settings))
            replay_cpu = time.process_time() - cpu0
            await store.close()
            print(
                f"jetgrid  replay into the read models           : {res.messages / res.seconds:8,.0f} events/s ({res.messages:,} in {res.seconds:.1f} s)"
            )
            raws.append(await timed_raw(settings, nc, Path(tmp) / "raw-after.db", "after"))
            raw_rate = statistics.mean(n / s for n, s, _ in raws)
            raw_cpu = statistics.mean(c / n for n, _, c in raws)
            rate = res.messages / res.seconds
            print(
                f"ratio jetgrid/raw: {rate / raw_rate:.2f} (target >= 0.7; to the mean of the raw runs before and after; to the one before alone: {rate / (raws[0][0] / raws[0][1]):.2f})"
            )
            print(
                f"CPU time of this process: raw {raw_cpu * 1e6:.1f} us/event, jetgrid {replay_cpu / res.messages * 1e6:.1f} us/event (replay and digest); ratio by CPU {raw_cpu / (replay_cpu / res.messages):.2f}"
            )
            print(f"digest sha256:{res.digest}")
            with contextlib.suppress(Exception):
                await nc.close()
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
