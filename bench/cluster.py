"""Jobs/s and submit-to-result latency: a 3-node JetStream cluster (R3) vs one node (R1).

    .venv/bin/python bench/cluster.py [--jobs 2000] [--rate 100] [--seconds 5] [--workers 2]

Both setups run in the same process, one after the other, with the same subprocess echo
workers (`jetgrid worker --concurrency 16`), the repository's nats.conf (sync_interval: always)
and the same load: first a burst of --jobs submissions as fast as the client can publish them
(jobs/s = jobs / time from first submit to last `completed`), then --rate jobs/s for --seconds
(p50/p99 of the time from publish to receiving the job's `completed` event).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _common import Bus, Settings, pct, provision, spawn_worker, tmpdir

from jetgrid.events import JobSubmitted, encode
from jetgrid.natsserver import NatsCluster, NatsServer


async def run_load(s: Settings, jobs: int, rate: float, seconds: float, workers: int) -> dict:
    await provision(s)
    procs = [await spawn_worker(s, f"bw{i}", "--concurrency", "16") for i in range(workers)]
    nc = (await Bus.connect(s, name="bench")).nc
    js = nc.jetstream()
    done: dict[str, float] = {}
    ready = asyncio.Event()
    target = {"n": 0}

    async def on_done(msg) -> None:  # type: ignore[no-untyped-def]
        done[s.subjects.parse_job_event(msg.subject)[0]] = time.perf_counter()
        if len(done) >= target["n"]:
            ready.set()

    await nc.subscribe(f"{s.subject_prefix}.job.*.completed.*", cb=on_done)
    subject = s.subjects.submit("standard", "echo")

    async def submit(job_id: str) -> float:
        body = encode(JobSubmitted(job_id=job_id, model="echo", pool="standard", prompt=job_id),
                      source="bench", id=job_id)  # fmt: skip
        t = time.perf_counter()
        await js.publish(subject, body, headers={"Nats-Msg-Id": job_id})
        return t

    # warm up: workers registered and pulling
    target["n"] = 20
    await asyncio.gather(*(submit(f"warm{i}") for i in range(20)))
    await asyncio.wait_for(ready.wait(), 60)
    done.clear()
    ready.clear()

    # 1. throughput: a burst, 200 publishes in flight
    target["n"] = jobs
    sem = asyncio.Semaphore(200)

    async def bounded(i: int) -> float:
        async with sem:
            return await submit(f"t{i}")

    t0 = time.perf_counter()
    await asyncio.gather(*(bounded(i) for i in range(jobs)))
    await asyncio.wait_for(ready.wait(), 300)
    throughput = jobs / (max(done.values()) - t0)
    done.clear()
    ready.clear()

    # 2. latency at a fixed, moderate rate
    n = int(rate * seconds)
    target["n"] = n
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        sent[f"l{i}"] = await submit(f"l{i}")
    await asyncio.wait_for(ready.wait(), 120)
    lat = [1000 * (done[k] - sent[k]) for k in sent]
    for p in procs:
        p.terminate()
    for p in procs:
        await p.wait()
    await nc.close()
    return {"jobs_per_s": throughput, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "n": n}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    results = {}
    with NatsServer(tmpdir("single") / "store") as single:
        s = Settings(nats_url=single.url, subject_prefix="bench", stream_replicas=1)
        results["1 node, R1"] = await run_load(s, a.jobs, a.rate, a.seconds, a.workers)
    with NatsCluster(tmpdir("cluster"), size=3) as cluster:
        s = Settings(nats_url=cluster.url, subject_prefix="bench", stream_replicas=3)
        results["3 nodes, R3"] = await run_load(s, a.jobs, a.rate, a.seconds, a.workers)
    base = results["1 node, R1"]
    print(f"{a.jobs} jobs burst; {a.rate:g} jobs/s for {a.seconds:g} s; {a.workers} workers x 16")
    print(f"{'setup':14} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'jobs/s vs 1 node':>17}")
    for name, r in results.items():
        print(f"{name:14} {r['jobs_per_s']:8.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
              f"{r['jobs_per_s'] / base['jobs_per_s']:16.2f}x")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
