# ruff: noqa: E501  (a benchmark script: long print lines read better unwrapped)
"""Projector capacity: how many workers pinging at 1 Hz can one projector follow with < 1 s lag?

For each worker count N: a fresh set of streams, one `jetgrid projector` process, and one
pinger process that publishes N pings every second on absolute deadlines (event time = now,
straight to WORKERS with publish_async, like N workers would). After a warm-up, the bench polls
the projector's SQLite checkpoint every 20 ms; a second's lag is the time from the end of that
second's publishing to the moment the committed WORKERS checkpoint covers it.

    .venv/bin/python bench/projector_capacity.py [--counts 1000,2000,3000] [--duration 20]

N is sustained when the p99 lag is under 1 s and the lag does not grow over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


async def pinger(url: str, prefix: str, n: int, duration: float) -> None:
    """N pings a second for `duration` seconds; prints one JSON line per second."""
    import nats

    from jetgrid.events import GpuTelemetry, WorkerHeartbeat, WorkerRegistered, encode
    from jetgrid.events.subjects import Subjects

    subj = Subjects(prefix)
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=20_000)
    gpu = GpuTelemetry(
        index=0,
        uuid="GPU-0",
        name="NVIDIA H100",
        memory_used_mb=1000.0,
        memory_total_mb=81559.0,
        utilization_pct=37.0,
        temperature_c=55.0,
        power_w=250.0,
    )
    for w in range(n):
        ev = WorkerRegistered(
            worker_id=f"w{w}",
            pools=["standard"],
            models=["echo"],
            backend="echo",
            concurrency=4,
            heartbeat_interval_s=1.0,
            boot_id="b",
        )
        await js.publish_async(subj.worker_event(f"w{w}", "registered"), encode(ev, source="b"))
    await js.publish_async_completed()
    subjects = [subj.worker_event(f"w{w}", "heartbeat") for w in range(n)]
    t0 = time.monotonic() + 0.5
    k = 0
    while time.monotonic() - t0 < duration:
        deadline = t0 + k
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        now = datetime.now(UTC)
        futs = []
        for w in range(n):
            ev = WorkerHeartbeat(
                worker_id=f"w{w}",
                n=k,
                healthy=True,
                interval_s=1.0,
                in_flight=0,
                nvml=True,
                gpus=[gpu],
                boot_id="b",
            )
            futs.append(await js.publish_async(subjects[w], encode(ev, source="b", time=now)))
        await js.publish_async_completed()
        last = max(f.result().seq for f in futs)
        late = time.monotonic() - deadline
        print(json.dumps({"k": k, "seq": last, "done": time.time(), "publish_s": late}), flush=True)
        k += 1
    await nc.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def checkpoint(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            row = con.execute("SELECT seq FROM checkpoints WHERE stream = 'WORKERS'").fetchone()
            return row[0] if row else 0
        finally:
            con.close()
    except sqlite3.Error:
        return 0


async def run_one(url: str, n: int, duration: float, tmp: Path, warmup: float) -> dict:
    prefix = f"cap{n}"
    env = {
        **os.environ,
        "JETGRID_NATS_URL": url,
        "JETGRID_SUBJECT_PREFIX": prefix,
        "JETGRID_STREAM_PREFIX": f"CAP{n}_",
        "JETGRID_DB_URL": f"sqlite+aiosqlite:///{tmp / f'cap{n}.db'}",
    }
    jetgrid = os.path.join(os.path.dirname(sys.executable), "jetgrid")
    prov = await asyncio.create_subprocess_exec(
        jetgrid, "provision", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    await prov.wait()
    proj = await asyncio.create_subprocess_exec(
        jetgrid, "projector", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    ping = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--pinger",
        str(n),
        "--url",
        url,
        "--prefix",
        prefix,
        "--duration",
        str(duration),
        stdout=asyncio.subprocess.PIPE,
    )
    db = tmp / f"cap{n}.db"
    bursts: list[dict] = []
    lags: dict[int, float] = {}

    async def read() -> None:
        assert ping.stdout is not None
        async for line in ping.stdout:
            bursts.append(json.loads(line))

    reader = asyncio.create_task(read())
    cpu_mark: tuple[int, float] | None = None
    while ping.returncode is None or any(b["k"] not in lags for b in bursts):
        if cpu_mark is None and bursts and bursts[-1]["k"] >= warmup:
            cpu_mark = (bursts[-1]["seq"], cpu_seconds(proj.pid))
        seq = await asyncio.to_thread(checkpoint, db)
        now = time.time()
        for b in bursts:
            if b["k"] not in lags and seq >= b["seq"]:
                lags[b["k"]] = now - b["done"]
        if ping.returncode is None:
            try:
                await asyncio.wait_for(ping.wait(), 0.02)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(0.02)
            if bursts and now - bursts[-1]["done"] > 30:
                break  # it will not catch up
    await reader
    cpu_per_ping = None
    if cpu_mark is not None and bursts and bursts[-1]["seq"] > cpu_mark[0]:
        cpu_per_ping = (cpu_seconds(proj.pid) - cpu_mark[1]) / (bursts[-1]["seq"] - cpu_mark[0])
    proj.terminate()
    await proj.wait()
    measured = [lags.get(b["k"], float("inf")) for b in bursts if b["k"] >= warmup]
    slow_pub = max((b["publish_s"] for b in bursts if b["k"] >= warmup), default=0)
    ok = sorted(measured)
    p99 = ok[min(len(ok) - 1, int(0.99 * len(ok)))] if ok else float("inf")
    half = len(measured) // 2
    growing = (
        bool(measured)
        and statistics.mean(measured[half:]) > statistics.mean(measured[:half]) + 0.25
    )
    return {
        "workers": n,
        "seconds": len(measured),
        "lag_p50": statistics.median(ok) if ok else None,
        "lag_p99": p99,
        "lag_max": max(ok) if ok else None,
        "publish_late_max_s": slow_pub,
        "cpu_per_ping_us": None if cpu_per_ping is None else cpu_per_ping * 1e6,
        "sustained": p99 < 1.0 and not growing,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--counts", default="500,1000,2000,3000,4000,5000")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument(
        "--all", action="store_true", help="Run every count, even after one is not sustained."
    )
    ap.add_argument("--pinger", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pinger:
        await pinger(args.url, args.prefix, args.pinger, args.duration)
        return
    from jetgrid.natsserver import NatsServer

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        server = NatsServer(tmp / "nats", conf=HERE / "nats-bench.conf", port=0).start()
        try:
            best = 0
            for n in (int(c) for c in args.counts.split(",")):
                r = await run_one(server.url, n, args.duration, tmp, args.warmup)
                print(
                    f"{n:6d} workers at 1 Hz: lag p50 {r['lag_p50']:.3f} s, p99 {r['lag_p99']:.3f} s, max {r['lag_max']:.3f} s over {r['seconds']} s; pinger late by up to {r['publish_late_max_s']:.2f} s; projector CPU {r['cpu_per_ping_us'] or 0:.0f} us/ping (a free core: ~{1e6 / (r['cpu_per_ping_us'] or 1e9):,.0f} pings/s) -> {'sustained' if r['sustained'] else 'NOT sustained'}",
                    flush=True,
                )
                if r["sustained"]:
                    best = n
                elif not args.all:
                    break
            print(f"largest sustained: {best} workers pinging at 1 Hz (one projector, lag < 1 s)")
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
