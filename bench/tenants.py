"""Fair share between tenants, measured: a small tenant's queue wait alone and under another
tenant's flood 20 times its load, and the fleet's throughput against one shared queue.

Setup: a fresh nats-server; --workers in-process workers (echo backend, --job-s seconds a job,
--slots jobs at once each), so the fleet runs at most workers x slots / job-s jobs a second.
The small tenant submits --small jobs/s for --seconds; the big one --ratio times as many, which
must exceed the fleet's capacity (a flood: its backlog grows the whole time). Queue wait is the
time from the submit to the worker's claim (or start) event. Without preemption a job cannot
start before a slot frees: "slot p95" is the p95 over the small tenant's jobs of the time from
its submit to the next job's completion anywhere in the fleet (the earliest any scheduler could
start it; 0 while slots are idle), and "over p95" the p95 of what each job waited beyond that
floor (the scheduling's own share). Scenarios, one after the other:

  alone    the small tenant alone, in a fair-share pool
  fair     small + flood, fair-share pool (each tenant its own queue; coordinator.share)
  shared   small + flood, a pool without fair share (one FIFO queue per model, as before)

Targets (issue 15): under the flood the small tenant's p95 wait is within 2x of its p95 alone,
and the fleet's throughput during the flood is within 10% of the shared queue's.

With --spread, job lengths vary (uniform within job-s x (1 +- spread)), so slots free at
scattered times rather than a worker's together, as with real jobs of unequal lengths.

    .venv/bin/python bench/tenants.py [--workers 2 --slots 3 --job-s 0.1 --small 3 --ratio 20]
                                      [--spread 0.5] [--reserve 1] [--runs 3]

--reserve R gives the fair-share pool ``reserve_slots = R`` (headroom: R of each worker's
--concurrency slots only for tenants under their share; coordinator.share.headroom).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import provision_streams
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobSubmitted, decode, encode, stream_specs
from jetgrid.events.addressing import Speaker, address
from jetgrid.natsserver import NatsServer
from jetgrid.worker.agent import Worker, WorkerOptions
from jetgrid.worker.backends.echo import EchoBackend

BENCH = Speaker.service("bench")


def pct(values: list[float], p: float) -> float | None:
    vs = sorted(values)
    return vs[min(len(vs) - 1, round(p / 100 * (len(vs) - 1)))] if vs else None


async def scenario(
    url: str, n: int, name: str, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    pools = tmp / f"pools-{n}.toml"
    fair = name != "shared"
    reserve = f"reserve_slots = {args.reserve}\n" if fair and args.reserve else ""
    pools.write_text(
        f'[[pool]]\nname = "standard"\nfair_share = {"true" if fair else "false"}\n{reserve}'
    )
    s = Settings(nats_url=url, subject_prefix=f"t{n}", stream_prefix=f"T{n}_", pools_file=pools)
    nc = (await Bus.connect(s, name="bench-tenants")).nc
    js = nc.jetstream()
    await provision_streams(js, stream_specs(s.subjects, s.streams))
    taken: dict[str, float] = {}
    done: dict[str, float] = {}

    async def on_msg(msg: Any) -> None:
        _, ev = s.subjects.parse_job_event(msg.subject)
        if ev in ("claimed", "started"):
            taken.setdefault(decode(msg.data).event.job_id, time.time())
        elif ev == "completed":
            done.setdefault(decode(msg.data).event.job_id, time.time())

    await nc.subscribe(s.subjects.job_events(), cb=on_msg)
    opts = [
        WorkerOptions(pool="standard", models=("echo",), worker_id=f"w{i}", concurrency=args.slots)
        for i in range(args.workers)
    ]
    workers = [Worker(s, o, EchoBackend(latency_s=args.job_s)) for o in opts]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    for w in workers:
        await asyncio.wait_for(w.ready.wait(), 30)
    submitted: dict[str, float] = {}
    tenants = {"small": args.small} if name == "alone" else {
        "small": args.small, "big": args.small * args.ratio}  # fmt: skip

    lengths = random.Random(n)  # the same job lengths in every scenario's order of submits

    async def submit(job_id: str, tenant: str) -> None:
        spread = args.job_s * args.spread * (2 * lengths.random() - 1)
        job = JobSubmitted(job_id=job_id, model="echo", pool="standard", prompt="hi",
                           input={"sleep": args.job_s + spread} if args.spread else None,
                           submitter=tenant, tenant=tenant if fair else None)  # fmt: skip
        addr = address(job, s.subjects, BENCH)
        submitted[job_id] = time.time()
        await js.publish(addr.subject, encode(job, source=BENCH.source, id=addr.msg_id),
                         headers={"Nats-Msg-Id": addr.msg_id})  # fmt: skip

    async def arrivals(tenant: str, rate: float) -> None:
        t0 = time.perf_counter()
        for k in range(int(rate * args.seconds)):
            await asyncio.sleep(max(0.0, t0 + k / rate - time.perf_counter()))
            await submit(f"{tenant}-{k}", tenant)

    start = time.time()
    await asyncio.gather(*(arrivals(t, r) for t, r in tenants.items()))
    end = time.time()
    small = [j for j in submitted if j.startswith("small")]
    deadline = time.time() + args.drain_timeout
    while any(j not in taken for j in small) and time.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    for w in workers:
        w.stop()
    await asyncio.wait(tasks, timeout=30)
    await nc.close()
    waits = [taken[j] - submitted[j] for j in small if j in taken]
    ends = sorted(done.values())
    slot_of = {j: _slot_wait(submitted[j], ends, busy=name != "alone") for j in small}
    slot_waits = list(slot_of.values())
    # What the scheduling adds to the floor, job by job (a job taken before its slot's
    # completion event arrived counts 0).
    over = [max(0.0, taken[j] - submitted[j] - w) for j in small
            if j in taken and (w := slot_of[j]) is not None]  # fmt: skip
    in_window = sum(1 for t in done.values() if start <= t <= end)
    return {
        "scenario": name,
        "small_jobs": len(small),
        "small_taken": len(waits),
        "small_p50_s": pct(waits, 50),
        "small_p95_s": pct(waits, 95),
        "slot_p95_s": pct([w for w in slot_waits if w is not None], 95),
        "over_p95_s": pct(over, 95),
        "jobs_submitted": len(submitted),
        "throughput_per_s": in_window / (end - start),
        "seconds": end - start,
    }


def _slot_wait(at: float, ends: list[float], *, busy: bool) -> float | None:
    """Seconds from `at` to the first completion after it (a slot frees); 0 when the fleet
    has idle slots (the small tenant alone), None when nothing completes after it."""
    if not busy:
        return 0.0
    i = bisect.bisect_right(ends, at)
    return ends[i] - at if i < len(ends) else None


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f} ms"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slots", "--concurrency", type=int, default=3,
                    help="jobs each worker runs at once")  # fmt: skip
    ap.add_argument("--reserve", type=int, default=0,
                    help="reserve_slots of the fair-share pool (headroom); 0: none")  # fmt: skip
    ap.add_argument("--runs", type=int, default=1, help="repeat; print each run and the medians")
    ap.add_argument("--job-s", type=float, default=0.1, help="seconds a job runs")
    ap.add_argument("--small", type=float, default=3.0, help="the small tenant's jobs/s")
    ap.add_argument("--ratio", type=float, default=20.0, help="the big tenant's load / small's")
    ap.add_argument("--spread", type=float, default=0.0,
                    help="job lengths uniform in job-s x (1 +- spread); 0: all equal")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--drain-timeout", type=float, default=120.0)
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    args = ap.parse_args()
    runs = [await _run(args) for _ in range(max(1, args.runs))]
    if args.json:
        for rows in runs:
            for r in rows:
                print(json.dumps(r))
        return
    capacity = args.workers * args.slots / args.job_s
    print(f"{args.workers} workers x {args.slots} slots (reserve {args.reserve}), "
          f"{args.job_s:g} s a job (+-{args.spread:.0%}) (capacity "
          f"{capacity:g} jobs/s); small tenant {args.small:g} jobs/s, big {args.ratio:g}x, "
          f"{args.seconds:g} s; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'scenario':8} {'small p50':>10} {'small p95':>10} {'slot p95':>10} "
          f"{'over p95':>10} {'taken':>7} {'jobs/s':>7}")  # fmt: skip
    for i, rows in enumerate(runs):
        for r in rows:
            _row(r, f"{r['scenario']}" + (f"#{i + 1}" if len(runs) > 1 else ""))
    ratios, tputs = [], []
    for alone, fair, shared in runs:
        ratios.append((fair["small_p95_s"] or 0) / max(alone["small_p95_s"] or 0, 1e-3))
        tputs.append(fair["throughput_per_s"] / max(shared["throughput_per_s"], 1e-9))
    med = f"median of {len(runs)} runs: " if len(runs) > 1 else ""
    alone_p95 = statistics.median(r[0]["small_p95_s"] or 0 for r in runs)
    fair_p95 = statistics.median(r[1]["small_p95_s"] or 0 for r in runs)
    ratio, tput = statistics.median(ratios), statistics.median(tputs)
    print(f"{med}small tenant's p95 alone {_ms(alone_p95)}, under the flood {_ms(fair_p95)}: "
          f"{ratio:.2f}x (target <= 2x): {'meets' if ratio <= 2 else 'MISSES'}")  # fmt: skip
    print(f"{med}throughput fair / shared queue: {tput:.1%} (target >= 90%): "
          f"{'meets' if tput >= 0.9 else 'MISSES'}")  # fmt: skip


async def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One run: the three scenarios on a fresh nats-server."""
    with tempfile.TemporaryDirectory(prefix="jetgrid-bench-tenants-") as tmp:
        server = NatsServer(Path(tmp) / "nats", port=0, log_file=Path(tmp) / "nats.log")
        server.start()
        try:
            return [
                await scenario(server.url, n, name, args, Path(tmp))
                for n, name in enumerate(("alone", "fair", "shared"))
            ]
        finally:
            server.stop()


def _row(r: dict[str, Any], name: str) -> None:
    taken = f"{r['small_taken']:>3}/{r['small_jobs']:<3}"
    print(f"{name:8} {_ms(r['small_p50_s']):>10} {_ms(r['small_p95_s']):>10} "
          f"{_ms(r['slot_p95_s']):>10} {_ms(r['over_p95_s']):>10} {taken} "
          f"{r['throughput_per_s']:>7.1f}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
