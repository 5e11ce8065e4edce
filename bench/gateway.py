"""Gateway overhead: HTTP submit-and-wait vs the same jobs straight on NATS, in one run.

Starts a nats-server, one echo worker process and one gateway process (the real `jetgrid`
commands), then runs the same number of no-op echo jobs, with the same number in flight, via:

  nats    JetStream publish of the submission + wait for its terminal event (core NATS sub)
  v1      POST /v1/jobs?wait=30                     (jetgrid's own API)
  ollama  POST /api/generate {"stream": false}      (the Ollama-compatible path)
  openai  POST /v1/chat/completions                 (the OpenAI-compatible path)
  floor   GET /healthz                              (HTTP client + server alone, no job)

and prints jobs/s, p50 and p99 per path, plus each HTTP path's ratio to `nats`.

    .venv/bin/python bench/gateway.py [--jobs 600] [--inflight 16] [--worker-concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import nats

from jetgrid.coordinator.provision import provision_streams
from jetgrid.coordinator.settings import Settings
from jetgrid.events import TERMINAL_NAMES, JobSubmitted, encode, stream_specs
from jetgrid.natsserver import NatsServer, free_port

JETGRID = str(Path(sys.executable).parent / "jetgrid")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


async def drive(n: int, inflight: int, one) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    """Run `one(i)` n times with `inflight` at once; (jobs/s, latencies)."""
    lat: list[float] = []
    it = iter(range(n))

    async def loop() -> None:
        for i in it:
            t = time.perf_counter()
            await one(i)
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(inflight)))
    return n / (time.perf_counter() - t0), lat


def start_processes(
    env: dict[str, str], port: int, concurrency: int
) -> list[subprocess.Popen[bytes]]:
    """One echo worker and one gateway, as the real `jetgrid` commands."""
    worker = [JETGRID, "worker", "--pool", "standard", "--model", "echo", "--worker-id", "bw1"]
    return [
        subprocess.Popen([*worker, "--concurrency", str(concurrency)], env=env),
        subprocess.Popen([JETGRID, "gateway", "--port", str(port)], env=env),
    ]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=600)
    ap.add_argument("--inflight", type=int, default=16)
    ap.add_argument("--worker-concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="alternate the paths this many times")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="jetgrid-bench-gw-"))
    server = NatsServer(tmp / "store", port=0, log_file=tmp / "nats.log").start()
    settings = Settings(nats_url=server.url, subject_prefix="bench", data_dir=tmp)
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await provision_streams(js, stream_specs(settings.subjects, settings.streams))
    port = free_port()
    env = {**os.environ, "JETGRID_NATS_URL": server.url, "JETGRID_SUBJECT_PREFIX": "bench"}
    procs = start_processes(env, port, args.worker_concurrency)
    base = f"http://127.0.0.1:{port}"
    http = httpx.AsyncClient(
        base_url=base, timeout=60, limits=httpx.Limits(max_connections=args.inflight * 2)
    )
    try:
        for _ in range(300):  # the gateway is up and lists the worker's model
            try:
                tags = (await http.get("/api/tags")).json()
                if any(m["name"] == "echo" for m in tags["models"]):
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise SystemExit("gateway or worker did not come up")

        subjects = settings.subjects
        waiting: dict[str, asyncio.Future[None]] = {}

        async def on_event(msg) -> None:  # type: ignore[no-untyped-def]
            job_id, name = subjects.parse_job_event(msg.subject)
            if name in TERMINAL_NAMES and job_id in waiting:
                fut = waiting.pop(job_id)
                if not fut.done():
                    fut.set_result(None)

        await nc.subscribe(subjects.job_events(), cb=on_event)
        subject = subjects.submit("standard", "echo")

        async def via_nats(i: int) -> None:
            job_id = uuid.uuid4().hex
            fut = asyncio.get_running_loop().create_future()
            waiting[job_id] = fut
            job = JobSubmitted(job_id=job_id, model="echo", pool="standard", prompt=f"job {i}")
            await js.publish(subject, encode(job, source="bench"), headers={"Nats-Msg-Id": job_id})
            await asyncio.wait_for(fut, 30)

        async def via_v1(i: int) -> None:
            r = await http.post("/v1/jobs?wait=30", json={"model": "echo", "prompt": f"job {i}"})
            assert r.status_code == 200 and r.json()["status"] == "completed", r.text

        async def via_ollama(i: int) -> None:
            r = await http.post(
                "/api/generate", json={"model": "echo", "prompt": f"job {i}", "stream": False}
            )
            assert r.status_code == 200 and r.json()["done"], r.text

        async def via_openai(i: int) -> None:
            body = {"model": "echo", "messages": [{"role": "user", "content": f"job {i}"}]}
            r = await http.post("/v1/chat/completions", json=body)
            assert r.status_code == 200 and r.json()["choices"], r.text

        async def floor(i: int) -> None:
            r = await http.get("/healthz")
            assert r.status_code == 200

        paths = {
            "nats": via_nats,
            "v1": via_v1,
            "ollama": via_ollama,
            "openai": via_openai,
            "floor": floor,
        }
        for one in paths.values():  # warm up every path
            await drive(min(50, args.jobs), args.inflight, one)
        results: dict[str, list[tuple[float, list[float]]]] = {k: [] for k in paths}
        names = list(paths)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
                one = paths[name]
                results[name].append(await drive(args.jobs, args.inflight, one))
                # Untimed: the gateway folds every job in the log, including the ones sent
                # straight to NATS; let it catch up so the next path does not pay for this one.
                await via_v1(-1)
    finally:
        await http.aclose()
        await nc.close()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(15)
        server.stop()

    print(
        f"{args.jobs} echo jobs x {args.rounds} rounds per path, {args.inflight} in flight, "
        f"one worker (concurrency {args.worker_concurrency}), one gateway, one nats-server"
    )
    print(f"{'path':8} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs nats':>8}")
    summary = {}
    for name, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        lat = [x for _, xs in runs for x in xs]
        summary[name] = (rate, pct(lat, 0.5) * 1e3, pct(lat, 0.99) * 1e3)
    for name, (rate, p50, p99) in summary.items():
        ratio = rate / summary["nats"][0]
        print(f"{name:8} {rate:8.0f} {p50:8.1f} {p99:8.1f} {ratio:8.2f}x")
    v1 = summary["v1"]
    for name in ("ollama", "openai"):
        r, p50, _ = summary[name]
        print(f"{name} path vs /v1: {r / v1[0]:.2f}x the jobs/s, p50 {p50 - v1[1]:+.1f} ms")
    print(
        json.dumps(
            {
                k: dict(zip(("jobs_s", "p50_ms", "p99_ms"), v, strict=True))
                for k, v in summary.items()
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
