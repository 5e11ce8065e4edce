# ruff: noqa: E501  (a benchmark script: long print lines read better unwrapped)
"""Gateway overhead: HTTP submit-and-wait vs the same jobs straight on NATS, in one run.

Starts a nats-server, one echo worker process, one gateway process (the real `jetgrid`
commands) and one bare Starlette app (one `/healthz` route returning the gateway's body, served
by gateway.server's uvicorn settings and runner), then runs the same no-op echo jobs, with the
same number in flight, via:

  nats     JetStream publish of the submission + wait for its terminal event (core NATS sub)
  nats-log the same, waiting for the terminal event as JOB_EVENTS stored it (an ordered
           consumer): what `?wait=` promises, so v1/nats-log is the gateway's own cost and
           nats-log/nats what waiting for the stored event costs any client (reported, no target)
  v1       POST /v1/jobs?wait=30                     (jetgrid's own API)
  ollama   POST /api/generate {"stream": false}      (the Ollama-compatible path)
  openai   POST /v1/chat/completions                 (the OpenAI-compatible path)
  healthz  GET /healthz on the gateway               (no job: the gateway's per-request cost)
  bare     GET /healthz on the bare Starlette app    (HTTP client + uvicorn + Starlette alone)

With `--baseline-src DIR` (another version's tree, e.g. `git archive main | tar -x -C DIR`) a
second gateway runs that version's code on the same log, adding the paths `v1-base` and
`healthz-base`. Every round runs every path (order rotated); the ratios are medians of the
per-round ratios. A paced phase then sends `--paced-jobs` jobs at `--rate`/s (open loop) via
`nats` and `v1` (and `v1-base`) and reports their p50/p99.

With `--stages`, every job of the timed rounds on the `nats`, `nats-log`, `v1` and `v1-base`
paths is also split, from JOB_EVENTS, into where its time went (medians per path): sent ->
claimed (the worker's claim, which a short job's outcome carries), claimed -> outcome (the
outcome event's own time), outcome -> stream (JOB_EVENTS' timestamp: when nats-server took it,
before its fsync), stream -> answered (negative when the answer came before the store). Every
process runs on this machine, so the clocks agree.

    .venv/bin/python bench/gateway.py [--jobs 300] [--inflight 16] [--rounds 3] [--rate 40]
        [--baseline-src DIR] [--profile FILE] [--stages] [--json]

Prints a table (or JSON with --json) and writes bench/results/gateway-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import json as _json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from jetgrid.coordinator.provision import provision_streams
from jetgrid.coordinator.settings import Settings
from jetgrid.events import TERMINAL_NAMES, JobSubmitted, decode, encode, stream_specs
from jetgrid.natsserver import NatsServer, free_port

JETGRID = str(Path(sys.executable).parent / "jetgrid")
RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"submit_wait_ratio": 0.7, "healthz_ratio": 0.8}

One = Callable[[int], Awaitable[None]]
Stamp = tuple[str, str, float, float]  # --stages: path, job id, sent, answered (wall clock, s)
STAGES = ("sent->claimed", "claimed->outcome", "outcome->stream", "stream->answered", "total")
STAGED_PATHS = ("nats", "nats-log", "v1", "v1-base")
HEALTH_PATHS = ("healthz", "bare", "healthz-base")
HEALTH_FACTOR = 10  # GET /healthz is so cheap that --jobs of them take a few ms: run 10x as many


def cpu_s(pid: int) -> float:
    """CPU seconds process `pid` has used so far, all its threads: the scheduler's nanosecond
    count (/proc/PID/stat's clock ticks, 10 ms, are too coarse for a few hundred requests)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return total / 1e9


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


async def drive(n: int, inflight: int, one: One) -> tuple[float, list[float]]:
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


async def paced(n: int, rate: float, one: One) -> list[float]:
    """Start `one(i)` at i/rate seconds (open loop, whatever is still in flight); latencies."""
    lat: list[float] = []
    t0 = time.perf_counter()

    async def at(i: int) -> None:
        await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        t = time.perf_counter()
        await one(i)
        lat.append(time.perf_counter() - t)

    await asyncio.gather(*(at(i) for i in range(n)))
    return lat


def serve_bare(port: int) -> None:
    """The baseline app: Starlette with one /healthz route, under the gateway's uvicorn settings
    and runner (gateway.server), so only the gateway's own per-request work differs."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from jetgrid.gateway import server

    async def healthz(request: object) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/healthz", healthz, methods=["GET"])])
    settings = Settings(gateway_port=port)
    srv = server.EmbeddedServer(server.uvicorn_config(app, settings))
    server.run_loop(srv.serve())


class Reply:
    """The little of httpx.Response the paths read."""

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class RawHTTP:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (Content-Length bodies only), so
    that the client's own CPU per request (httpx: about 2.5-3 ms here, more than the gateway's)
    does not cap the HTTP paths. One connection per request in flight, reused."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self, path: str) -> Reply:
        return await self.request("GET", path, b"")

    async def post(self, path: str, json: Any) -> Reply:
        return await self.request("POST", path, _json.dumps(json).encode())

    async def request(self, method: str, path: str, body: bytes) -> Reply:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        for attempt in (1, 2):
            fresh = not self.free
            conn = (
                self.free.pop()
                if self.free
                else await asyncio.open_connection("127.0.0.1", self.port)
            )
            try:
                conn[1].write(head + body)
                status, content, keep = await self._read(conn[0])
            except (OSError, asyncio.IncompleteReadError, ValueError):
                conn[1].close()
                if fresh or attempt == 2:
                    raise
                await self.aclose()  # idle ones the server closed (keep-alive ended): retry anew
                continue
            if keep:
                self.free.append(conn)
            else:
                conn[1].close()
            return Reply(status, content)
        raise AssertionError("unreachable")

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        line = await reader.readuntil(b"\r\n")
        status = int(line.split(b" ", 2)[1])
        length, keep = 0, True
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
            elif name == b"transfer-encoding":
                raise ValueError("a chunked response: RawHTTP reads Content-Length bodies only")
        return status, await reader.readexactly(length), keep

    async def aclose(self) -> None:
        for _, writer in self.free:
            writer.close()
        self.free.clear()


def start_processes(
    env: dict[str, str], ports: dict[str, int], args: argparse.Namespace
) -> list[subprocess.Popen[bytes]]:
    """One echo worker, one gateway (profiled with --profile), the bare app and, with
    --baseline-src, the other version's gateway."""
    worker = [JETGRID, "worker", "--pool", "standard", "--model", "echo", "--worker-id", "bw1"]
    gateway = [JETGRID, "gateway", "--port", str(ports["gw"])]
    if args.profile:
        gateway = [sys.executable, "-m", "cProfile", "-o", args.profile, *gateway]
    procs = [
        subprocess.Popen([*worker, "--concurrency", str(args.worker_concurrency)], env=env),
        subprocess.Popen(gateway, env=env),
        subprocess.Popen([sys.executable, __file__, "--serve-bare", str(ports["bare"])], env=env),
    ]
    if args.baseline_src:
        base_env = {**env, "PYTHONPATH": str(Path(args.baseline_src).resolve())}
        base = [JETGRID, "gateway", "--port", str(ports["base"])]
        procs.append(subprocess.Popen(base, env=base_env))
    return procs


async def wait_up(http: Any, url: str, ok: Callable[[Any], bool]) -> None:
    for _ in range(600):
        try:
            if ok(await http.get(url)):
                return
        except (httpx.HTTPError, OSError, asyncio.IncompleteReadError):
            pass
        await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def has_echo(r: Any) -> bool:
    return r.status_code == 200 and any(m["name"] == "echo" for m in r.json()["models"])


async def run(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="jetgrid-bench-gw-"))
    server = NatsServer(tmp / "store", port=0, log_file=tmp / "nats.log").start()
    settings = Settings(nats_url=server.url, subject_prefix="bench", data_dir=tmp)
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await provision_streams(js, stream_specs(settings.subjects, settings.streams))
    ports = {"gw": free_port(), "bare": free_port(), "base": free_port()}
    env = {
        **os.environ,
        "JETGRID_NATS_URL": server.url,
        "JETGRID_SUBJECT_PREFIX": "bench",
        "JETGRID_DATA_DIR": str(tmp),
    }
    procs = start_processes(env, ports, args)
    server_proc = server.proc
    assert server_proc is not None
    # Idle connections are dropped before uvicorn's 5 s keep-alive ends, or a request may be sent
    # on one the server is closing (a ReadError that is the bench's, not the gateway's).
    limits = httpx.Limits(max_connections=args.inflight * 2, keepalive_expiry=2.0)

    def client(port: int) -> Any:  # httpx.AsyncClient or RawHTTP
        if args.client == "raw":
            return RawHTTP(port)
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits)

    http, bare, base = client(ports["gw"]), client(ports["bare"]), client(ports["base"])
    results: dict[str, list[tuple[float, list[float]]]] = {}
    paced_lat: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = defaultdict(list)
    gw_cpu: dict[str, list[float]] = defaultdict(list)
    client_cpu: dict[str, list[float]] = defaultdict(list)  # this process: the HTTP/NATS client
    # The echo worker's and nats-server's: what every path shares (the box's cores are too).
    worker_cpu: dict[str, list[float]] = defaultdict(list)
    nats_cpu: dict[str, list[float]] = defaultdict(list)
    base_cpu: dict[str, list[float]] = defaultdict(list)  # --baseline-src: its gateway's
    stamps: list[Stamp] = []
    timing: list[str] = []  # --stages: the path of the timed round running now, if any

    def stamp(job_id: str, sent: float) -> None:
        if timing:
            stamps.append((timing[0], job_id, sent, time.time()))

    try:
        await wait_up(http, "/api/tags", has_echo)
        await wait_up(bare, "/healthz", lambda r: r.status_code == 200)
        if args.baseline_src:
            await wait_up(base, "/api/tags", has_echo)

        subjects = settings.subjects
        # Jobs sent straight to NATS, by job id, resolved by their terminal event as seen on a
        # core subscription (`nats`) or as JOB_EVENTS stored it (`nats-log`).
        waiting: dict[str, asyncio.Future[None]] = {}
        logged: dict[str, asyncio.Future[None]] = {}

        def resolver(waits: dict[str, asyncio.Future[None]]) -> Callable[[Msg], Awaitable[None]]:
            async def on_event(msg: Msg) -> None:
                job_id, name = subjects.parse_job_event(msg.subject)
                if name in TERMINAL_NAMES and job_id in waits:
                    fut = waits.pop(job_id)
                    if not fut.done():
                        fut.set_result(None)

            return on_event

        await nc.subscribe(subjects.job_events(), cb=resolver(waiting))

        @contextlib.asynccontextmanager
        async def following(name: str) -> AsyncIterator[None]:
            """For `nats-log`, an ordered consumer on JOB_EVENTS from its end, as the gateway's
            board reads it; only while that path runs (its deliveries cost this process CPU)."""
            if name != "nats-log":
                yield
                return
            sub = await js.subscribe(
                subjects.job_events(),
                stream=settings.streams.job_events,
                cb=resolver(logged),
                ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
                idle_heartbeat=1.0,
            )
            try:
                yield
            finally:
                await sub.unsubscribe()

        subject = subjects.submit("standard", "echo")

        def straight(waits: dict[str, asyncio.Future[None]]) -> One:
            async def via_nats(i: int) -> None:
                job_id = uuid.uuid4().hex
                fut = asyncio.get_running_loop().create_future()
                waits[job_id] = fut
                job = JobSubmitted(job_id=job_id, model="echo", pool="standard", prompt=f"job {i}")
                data = encode(job, source="bench")
                sent = time.time()
                await js.publish(subject, data, headers={"Nats-Msg-Id": job_id})
                await asyncio.wait_for(fut, 30)
                stamp(job_id, sent)

            return via_nats

        def v1(c: Any) -> One:
            async def via_v1(i: int) -> None:
                t, sent = time.perf_counter(), time.time()
                r = await c.post("/v1/jobs?wait=30", json={"model": "echo", "prompt": f"job {i}"})
                took = time.perf_counter() - t
                ok = r.status_code == 200 and r.json()["status"] == "completed"
                if not ok:
                    j = (await c.get(f"/v1/jobs/{r.json()['id']}")).json()
                    raise AssertionError(f"{r.status_code} after {took:.1f} s: {r.text}; now: {j}")
                stamp(r.json()["id"], sent)

            return via_v1

        async def via_ollama(i: int) -> None:
            body = {"model": "echo", "prompt": f"job {i}", "stream": False}
            r = await http.post("/api/generate", json=body)
            assert r.status_code == 200 and r.json()["done"], r.text

        async def via_openai(i: int) -> None:
            body = {"model": "echo", "messages": [{"role": "user", "content": f"job {i}"}]}
            r = await http.post("/v1/chat/completions", json=body)
            assert r.status_code == 200 and r.json()["choices"], r.text

        def healthz(c: Any) -> One:
            async def get(i: int) -> None:
                r = await c.get("/healthz")
                assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text

            return get

        paths: dict[str, One] = {
            "nats": straight(waiting),
            "nats-log": straight(logged),
            "v1": v1(http),
            "ollama": via_ollama,
            "openai": via_openai,
            "healthz": healthz(http),
            "bare": healthz(bare),
        }
        if args.baseline_src:
            paths |= {"v1-base": v1(base), "healthz-base": healthz(base)}
        if args.paths:
            paths = {k: v for k, v in paths.items() if k in args.paths.split(",")}
        for name, one in paths.items():  # warm up every path
            async with following(name):
                await drive(min(50, args.jobs), args.inflight, one)
        results = {k: [] for k in paths}
        names = list(paths)
        # The process serving each HTTP path, whose CPU time per request is read around it.
        server_pid = {"bare": procs[2].pid} | {
            k: procs[1].pid for k in ("v1", "ollama", "openai", "healthz")
        }
        if args.baseline_src:
            server_pid |= {"v1-base": procs[3].pid, "healthz-base": procs[3].pid}
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
                pid = server_pid.get(name)
                n = args.jobs * (HEALTH_FACTOR if name in HEALTH_PATHS else 1)
                before, gw_before = cpu_s(pid) if pid else 0.0, cpu_s(procs[1].pid)
                me_before = time.process_time()
                shared_before = cpu_s(procs[0].pid), cpu_s(server_proc.pid)
                base_before = cpu_s(procs[3].pid) if args.baseline_src else 0.0
                if args.stages and name in STAGED_PATHS:
                    timing.append(name)
                async with following(name):
                    results[name].append(await drive(n, args.inflight, paths[name]))
                timing.clear()
                client_cpu[name].append((time.process_time() - me_before) / n)
                worker_cpu[name].append((cpu_s(procs[0].pid) - shared_before[0]) / n)
                nats_cpu[name].append((cpu_s(server_proc.pid) - shared_before[1]) / n)
                if pid:
                    cpu[name].append((cpu_s(pid) - before) / n)
                # The gateway folds every job, whichever path sent it (nats: the fold alone).
                gw_cpu[name].append((cpu_s(procs[1].pid) - gw_before) / n)
                if args.baseline_src:
                    base_cpu[name].append((cpu_s(procs[3].pid) - base_before) / n)
                # Untimed: the gateway folds every job in the log, including the ones sent
                # straight to NATS; let it catch up so the next path does not pay for this one.
                await v1(http)(-1)
        for name in ("nats", "v1", "v1-base"):
            if name in paths and args.paced_jobs:
                paced_lat[name] = await paced(args.paced_jobs, args.rate, paths[name])
        stages = await stage_times(js, settings, stamps) if args.stages else {}
    finally:
        for c in (http, bare, base):
            await c.aclose()
        await nc.close()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(15)
        server.stop()
    cpus = {"worker": worker_cpu, "nats": nats_cpu, "base": base_cpu}
    return summarize(args, results, paced_lat, cpu, gw_cpu, client_cpu, cpus) | {"stages": stages}


async def stage_times(
    js: Any, settings: Settings, stamps: list[Stamp]
) -> dict[str, dict[str, float]]:
    """--stages: per path, the median milliseconds of each of STAGES over its stamped jobs (those
    whose outcome carries its claim: every short job's), read back from JOB_EVENTS."""
    sent = {job_id: (path, t0, t1) for path, job_id, t0, t1 in stamps}
    last = (await js.stream_info(settings.streams.job_events)).state.last_seq
    split: dict[str, list[list[float]]] = defaultdict(list)
    done = asyncio.Event()

    async def on_event(msg: Msg) -> None:
        job_id, name = settings.subjects.parse_job_event(msg.subject)
        if name in TERMINAL_NAMES and job_id in sent:
            env = decode(msg.data)
            claim = getattr(env.event, "claim", None)
            if claim is not None:
                path, t0, t1 = sent.pop(job_id)
                marks = (t0, claim.at.timestamp(), env.time.timestamp())
                marks += (msg.metadata.timestamp.timestamp(), t1)
                spans = [(b - a) * 1e3 for a, b in itertools.pairwise(marks)]
                split[path].append([*spans, (t1 - t0) * 1e3])
        if msg.metadata.sequence.stream >= last:
            done.set()

    sub = await js.subscribe(
        settings.subjects.job_events(),
        stream=settings.streams.job_events,
        cb=on_event,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await sub.unsubscribe()
    return {
        path: {"jobs": len(rows)}
        | {stage: statistics.median(r[k] for r in rows) for k, stage in enumerate(STAGES)}
        for path, rows in split.items()
    }


def ratio(results: dict[str, list[tuple[float, list[float]]]], a: str, b: str) -> float | None:
    """Median over rounds of a's jobs/s over b's in the same round."""
    if a not in results or b not in results:
        return None
    return statistics.median(x[0] / y[0] for x, y in zip(results[a], results[b], strict=True))


def summarize(
    args: argparse.Namespace,
    results: dict[str, list[tuple[float, list[float]]]],
    paced_lat: dict[str, list[float]],
    cpu: dict[str, list[float]],
    gw_cpu: dict[str, list[float]],
    client_cpu: dict[str, list[float]],
    others: dict[str, dict[str, list[float]]],
) -> dict[str, object]:
    paths = {}
    for name, runs in results.items():
        lat = [x for _, xs in runs for x in xs]
        paths[name] = {
            "jobs_s": statistics.median(r for r, _ in runs),
            "per_round": [round(r, 1) for r, _ in runs],
            "p50_ms": pct(lat, 0.5) * 1e3,
            "p99_ms": pct(lat, 0.99) * 1e3,
            "server_cpu_us": statistics.median(cpu[name]) * 1e6 if cpu.get(name) else None,
            "gateway_cpu_us": statistics.median(gw_cpu[name]) * 1e6 if gw_cpu.get(name) else None,
            "client_cpu_us": statistics.median(client_cpu[name]) * 1e6,
            **{
                f"{who}_cpu_us": statistics.median(xs[name]) * 1e6 if xs.get(name) else None
                for who, xs in others.items()
            },
        }
    return {
        "config": {k: v for k, v in vars(args).items() if k != "serve_bare"},
        "load_average": os.getloadavg(),
        "paths": paths,
        "submit_wait_ratio": ratio(results, "v1", "nats"),
        "healthz_ratio": ratio(results, "healthz", "bare"),
        "log_wait_ratio": ratio(results, "nats-log", "nats"),
        "submit_wait_over_log": ratio(results, "v1", "nats-log"),
        "baseline_submit_wait_ratio": ratio(results, "v1-base", "nats"),
        "baseline_healthz_ratio": ratio(results, "healthz-base", "bare"),
        "v1_vs_baseline": ratio(results, "v1", "v1-base"),
        "healthz_vs_baseline": ratio(results, "healthz", "healthz-base"),
        "paced": {
            name: {
                "rate": args.rate,
                "jobs": len(lat),
                "p50_ms": pct(lat, 0.5) * 1e3,
                "p99_ms": pct(lat, 0.99) * 1e3,
            }
            for name, lat in paced_lat.items()
        },
        "targets": TARGETS,
    }


def show(s: dict, args: argparse.Namespace) -> None:  # type: ignore[type-arg]
    load = " ".join(f"{x:.2f}" for x in s["load_average"])
    print(
        f"{args.jobs} echo jobs x {args.rounds} rounds per path, {args.inflight} in flight, one worker "
        f"(concurrency {args.worker_concurrency}), one gateway, one nats-server; load average {load}"
    )
    print(
        f"{'path':13} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU us':>8} {'gw CPU':>8} {'client':>8} {'worker':>8} {'nats':>8} {'base gw':>8}  jobs/s per round"
    )

    def us(v: float | None) -> str:
        return f"{'-':>8}" if v is None else f"{v:8.0f}"

    for name, p in s["paths"].items():
        cpus = " ".join(
            us(p[k])
            for k in (
                "server_cpu_us",
                "gateway_cpu_us",
                "client_cpu_us",
                "worker_cpu_us",
                "nats_cpu_us",
                "base_cpu_us",
            )
        )
        print(
            f"{name:13} {p['jobs_s']:8.0f} {p['p50_ms']:8.1f} {p['p99_ms']:8.1f} {cpus}  {p['per_round']}"
        )
    print(
        "(CPU us per request, medians over rounds: of the process serving the path; of the "
        "gateway, which folds every job whichever path sent it; of this client process; of the "
        "echo worker; of nats-server; of the --baseline-src gateway)"
    )
    for key, label in (
        ("submit_wait_ratio", "HTTP submit-and-wait / NATS (v1/nats)"),
        ("healthz_ratio", "GET /healthz, gateway / bare Starlette"),
        ("log_wait_ratio", "NATS waiting for the stored event / NATS"),
        ("submit_wait_over_log", "HTTP submit-and-wait / NATS, stored event"),
        ("baseline_submit_wait_ratio", "baseline: v1-base/nats"),
        ("baseline_healthz_ratio", "baseline: healthz-base/bare"),
        ("v1_vs_baseline", "v1 / v1-base"),
        ("healthz_vs_baseline", "healthz / healthz-base"),
    ):
        if s[key] is not None:
            target = TARGETS.get(key)
            want = f"  (target >= {target})" if target else ""
            print(f"{label:42} {s[key]:6.2f}x{want}")
    for name, p in s["paced"].items():
        print(
            f"paced {name:8} {p['jobs']} jobs at {p['rate']:g}/s: p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms"
        )
    if s["stages"]:
        print("where each job's time went, ms (medians over the jobs of the timed rounds):")
        print(f"{'path':13} {'jobs':>6} " + " ".join(f"{stage:>17}" for stage in STAGES))
        for name, st in s["stages"].items():
            print(f"{name:13} {st['jobs']:6} " + " ".join(f"{st[stage]:17.2f}" for stage in STAGES))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=300, help="jobs per path per round")
    ap.add_argument("--inflight", type=int, default=16)
    ap.add_argument("--worker-concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="run every path this many times")
    ap.add_argument("--rate", type=float, default=40.0, help="paced phase: jobs/s")
    ap.add_argument(
        "--paced-jobs", type=int, default=200, help="paced phase: jobs per path (0: none)"
    )
    ap.add_argument("--paths", help="comma-separated subset of the paths to run")
    ap.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="HTTP client: a minimal keep-alive one (default) or httpx (about 10x the CPU per request)",
    )
    ap.add_argument(
        "--baseline-src", help="another version's source tree to run as a second gateway"
    )
    ap.add_argument("--profile", help="run the gateway under cProfile, writing this .prof file")
    ap.add_argument(
        "--stages", action="store_true", help="also split each job's time into stages (see above)"
    )
    ap.add_argument(
        "--json", action="store_true", help="print the JSON summary instead of the table"
    )
    ap.add_argument("--out", help="write the JSON here (default bench/results/gateway-<time>.json)")
    ap.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    s = asyncio.run(run(args))
    out = Path(args.out) if args.out else RESULTS / f"gateway-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(s, indent=2))
    if args.json:
        print(json.dumps(s))
    else:
        show(s, args)


if __name__ == "__main__":
    main()
