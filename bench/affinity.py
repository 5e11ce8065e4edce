"""Warm before cold, measured: the share of jobs that ran on a worker with their model loaded,
and the p95 queue wait, with the affinity rule on and off, in one run on this machine.

Setup: a real nats-server; two fake Ollama servers (tests/backends/fake_ollama.py), each with
room for ONE loaded model (loading another evicts it, as VRAM would) and a cold-load cost of
--load-delay seconds; worker A's server has m1 loaded, worker B's has m2; both workers serve
both models. Jobs for m1 and m2 arrive interleaved: first a backlog of --backlog jobs at
once, then --jobs more at --rate jobs/s. A job counts as warm when Ollama reported no load for it
(load_duration under 1 ms). Queue wait is `started` time minus submit time.

Policies:
  affinity   jetgrid's rule (coordinator/affinity.py) with the pool thresholds below
  baseline   the same workers blind to what is loaded: every worker pulls every model

    .venv/bin/python bench/affinity.py [--jobs 300 --rate 30 --backlog 40 --load-delay 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import provision_streams
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobSubmitted, decode, encode, stream_specs
from jetgrid.natsserver import NatsServer
from jetgrid.worker.agent import Worker, WorkerOptions
from jetgrid.worker.backends.ollama import OllamaBackend

ROOT = Path(__file__).resolve().parent.parent


def _fake_module() -> Any:
    path = ROOT / "tests" / "backends" / "fake_ollama.py"
    spec = importlib.util.spec_from_file_location("bench_fake_ollama", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_fake_ollama"] = mod
    spec.loader.exec_module(mod)
    return mod


class Blind:
    """An Ollama backend that hides what is loaded: the worker treats every model as warm."""

    def __init__(self, inner: OllamaBackend) -> None:
        self.inner = inner
        self.name = inner.name

    def serves(self, model: str) -> bool:
        return self.inner.serves(model)

    async def start(self) -> None:
        await self.inner.start()

    async def run(self, job: Any, ctx: Any) -> Any:
        return await self.inner.run(job, ctx)

    async def close(self) -> None:
        await self.inner.close()


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[18] if len(xs) >= 20 else max(xs)


async def scenario(
    nats_url: str, policy: str, n: int, args: argparse.Namespace, fake: Any, tmp: Path
) -> dict[str, Any]:
    pools = tmp / f"pools-{n}.toml"
    pools.write_text(
        f'[[pool]]\nname = "standard"\ncold_wait_s = {args.cold_wait}\n'
        f"cold_backlog = {args.cold_backlog}\nack_wait_s = 30\n"
    )
    settings = Settings(
        nats_url=nats_url,
        subject_prefix=f"b{n}",
        stream_prefix=f"B{n}_",
        pools_file=pools,
        heartbeat_interval_s=1.0,
    )
    nc = (await Bus.connect(settings, name="bench-affinity")).nc
    js = nc.jetstream()
    await provision_streams(js, stream_specs(settings.subjects, settings.streams))
    servers = []
    for loaded in ("m1:1b", "m2:1b"):
        s = fake.FakeOllama(max_loaded=1, load_delay_s=args.load_delay, token_delay_s=args.token)
        s.add("m1:1b", "m2:1b")
        s.add(loaded, loaded=True)
        await s.start()
        servers.append(s)
    workers, tasks = [], []
    for wid, server in zip("ab", servers, strict=True):
        backend: Any = OllamaBackend(server.url, ["m1:1b", "m2:1b"], refresh_s=1.0)
        if policy == "baseline":
            backend = Blind(backend)
        w = Worker(
            settings,
            WorkerOptions(
                pool="standard", models=("m1:1b", "m2:1b"), worker_id=wid,
                concurrency=args.concurrency,
            ),
            backend,
        )  # fmt: skip
        workers.append(w)
        tasks.append(asyncio.create_task(w.run()))
    for w in workers:
        await asyncio.wait_for(w.ready.wait(), 30)

    submitted: dict[str, float] = {}
    claimed: dict[str, float] = {}
    done: dict[str, dict[str, Any]] = {}
    all_done = asyncio.Event()
    total = args.backlog + args.jobs

    async def on_event(msg: Any) -> None:
        _, name = settings.subjects.parse_job_event(msg.subject)
        if name not in ("started", "completed", "failed"):
            return
        env = decode(msg.data)
        job_id = env.event.job_id
        if name == "started":  # the claim (events.lifecycle.JobStarted)
            claimed.setdefault(job_id, time.time())
        else:
            done[job_id] = {"name": name, "worker": env.event.worker_id, "ev": env.event}
            if len(done) >= total:
                all_done.set()

    sub = await nc.subscribe(settings.subjects.job_events(), cb=on_event)

    async def submit(i: int) -> None:
        # m1's share of jobs, spread evenly (Bresenham) so the mix is the same at every moment.
        m1 = int((i + 1) * args.m1_share) > int(i * args.m1_share)
        model = "m1:1b" if m1 else "m2:1b"
        job = JobSubmitted(
            job_id=f"j{i}", model=model, pool="standard",
            prompt=" ".join(["word"] * args.words),
        )  # fmt: skip
        submitted[job.job_id] = time.time()
        await js.publish(
            settings.subjects.submit("standard", model),
            encode(job, source="bench", id=job.job_id),
            headers={"Nats-Msg-Id": job.job_id},
        )

    t0 = time.perf_counter()
    for i in range(args.backlog):
        await submit(i)
    for k in range(args.jobs):
        target = t0 + k / args.rate
        await asyncio.sleep(max(0.0, target - time.perf_counter()))
        await submit(args.backlog + k)
    await asyncio.wait_for(all_done.wait(), args.timeout)
    elapsed = time.perf_counter() - t0

    await sub.unsubscribe()
    for w in workers:
        w.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    for s in servers:
        await s.stop()
    await nc.close()

    completed = [d for d in done.values() if d["name"] == "completed"]
    warm = [d for d in completed if d["ev"].usage.get("load_duration", 0) < 1_000_000]
    waits = [claimed[j] - submitted[j] for j in done if j in claimed]
    return {
        "policy": policy,
        "jobs": total,
        "completed": len(completed),
        "warm_share": len(warm) / max(len(completed), 1),
        "cold_loads": sum(s.loads for s in servers),
        "p50_wait_s": statistics.median(waits),
        "p95_wait_s": p95(waits),
        "elapsed_s": elapsed,
        "jobs_per_s": total / elapsed,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=300, help="jobs arriving at --rate")
    ap.add_argument("--rate", type=float, default=30.0, help="arrivals per second (both models)")
    ap.add_argument("--backlog", type=int, default=40, help="jobs already waiting at the start")
    ap.add_argument("--load-delay", type=float, default=1.0, help="seconds a cold load costs")
    ap.add_argument("--token", type=float, default=0.002, help="seconds per generated word")
    ap.add_argument("--words", type=int, default=10, help="words per prompt (and response)")
    ap.add_argument("--concurrency", type=int, default=2, help="jobs each worker runs at once")
    ap.add_argument("--cold-wait", type=float, default=5.0, help="pool cold_wait_s")
    ap.add_argument("--cold-backlog", type=int, default=50, help="pool cold_backlog")
    ap.add_argument("--m1-share", type=float, default=0.5, help="fraction of jobs for m1")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    args = ap.parse_args()

    fake = _fake_module()
    with tempfile.TemporaryDirectory(prefix="jetgrid-bench-") as tmp:
        server = NatsServer(Path(tmp) / "nats", port=0, log_file=Path(tmp) / "nats.log")
        server.start()
        try:
            rows = [
                await scenario(server.url, policy, n, args, fake, Path(tmp))
                for n, policy in enumerate(("affinity", "baseline"))
            ]
        finally:
            server.stop()
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(
        f"{args.backlog} jobs waiting, then {args.jobs} at {args.rate:g}/s, "
        f"{args.m1_share:.0%} m1 / {1 - args.m1_share:.0%} m2; "
        f"2 workers x {args.concurrency} slots; cold load {args.load_delay:g} s; "
        f"cold_wait_s={args.cold_wait:g} cold_backlog={args.cold_backlog}"
    )
    print(f"{'policy':10} {'warm share':>10} {'cold loads':>10} {'p50 wait':>9} "
          f"{'p95 wait':>9} {'jobs/s':>7}")  # fmt: skip
    for r in rows:
        print(
            f"{r['policy']:10} {r['warm_share']:>10.1%} {r['cold_loads']:>10} "
            f"{r['p50_wait_s']:>8.3f}s {r['p95_wait_s']:>8.3f}s {r['jobs_per_s']:>7.1f}"
        )
    aff = rows[0]
    verdict = "meets" if aff["warm_share"] >= 0.95 else "MISSES"
    print(f"affinity {verdict} the >= 95% warm target ({aff['warm_share']:.1%})")


if __name__ == "__main__":
    asyncio.run(main())
