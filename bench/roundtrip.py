"""Round trip: jetgrid (submit -> worker -> `completed` event) vs a raw nats-py work queue.

One run, one fresh nats-server (the repo's nats.conf, so ``sync_interval: always``, connected to
as its `admin` user; a temporary store directory on a free port), both sides measured against it:

* jetgrid: `jetgrid provision`, then W ``jetgrid worker --backend echo`` processes on one
  (pool, model). The client publishes JobSubmitted envelopes (``events.encode``, ``Nats-Msg-Id``
  = job id) with ``publish_async`` and sees each job's terminal event on a core NATS wildcard
  subscription made before submitting. Every output is checked against
  ``worker.backends.echo.expected_output(job)`` after the clock stops.
* raw: the same payload bytes on a Limits stream with one durable pull consumer, served by W
  ``bench/raw_worker.py`` processes (C tasks of ``fetch(1)`` each; every result stored with an
  awaited ``js.publish``, then ``ack()``); the client sees each stored result the same way.

Each round, per side: a warm-up, a throughput phase (N jobs submitted at once; jobs/s from the
first submit to the last result; submit-to-result latency), and a latency phase at a moderate
fixed rate (--rate jobs/s, paced). Rounds alternate which side goes first; ratios are medians of
the per-round (paired) ratios. Also: the CPU each process spent per job, stored messages per
job, the peak RSS (VmHWM) of every worker and of a gateway started at the end on the same log.

    .venv/bin/python bench/roundtrip.py [--jobs N] [--workers W] [--concurrency C] [--rate R]
                                        [--quick] [--rounds K] [--json] [--profile DIR]
                                        [--worker-variant V] [--store-dir DIR]

See bench/README.md for what the figures mean and the figures measured so far.

Prints a table (or JSON with --json) and writes bench/results/roundtrip-<time>.json.
Exit status 1 if any result is missing or wrong (and, with --check, if a target is missed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from jetgrid.events import JobCompleted, JobSubmitted, StreamNames, Subjects, decode, encode
from jetgrid.natsserver import NatsServer, free_port, nats_server_binary
from jetgrid.worker.backends.echo import expected_output

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
POOL, MODEL = "standard", "echo"
CONF = REPO / "nats.conf"
TICK = os.sysconf("SC_CLK_TCK")
TARGET_THROUGHPUT = 0.8  # jetgrid / raw jobs/s, DESIGN section 11
TARGET_LATENCY = 1.5  # jetgrid / raw p50 at a fixed moderate load


def log(*parts: object) -> None:
    print("[roundtrip]", *parts, file=sys.stderr, flush=True)


# -- processes -------------------------------------------------------------------------------
def proc_status_kib(pid: int, key: str) -> int | None:
    """A `VmHWM`-style field of /proc/<pid>/status, in KiB (None if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


class Proc:
    """A child process in its own session, its output in a log file; stop() never leaks it."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.p = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.hwm_kib: int | None = None
        self.exit_line: str | None = None

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def read_hwm(self) -> int | None:
        value = proc_status_kib(self.pid, "VmHWM")
        if value is not None:
            self.hwm_kib = value
        return self.hwm_kib

    def stop(self, timeout: float = 10.0) -> None:
        """Record the peak RSS, then SIGTERM (a clean drain), then SIGKILL if it lingers."""
        if self.alive():
            self.read_hwm()
            with contextlib.suppress(ProcessLookupError):
                self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.p.kill()
                self.p.wait()
        self._log.close()
        lines = [ln for ln in self.tail(5).splitlines() if ln.strip()]
        self.exit_line = lines[-1] if lines else None


def jetgrid_argv(*args: str) -> list[str]:
    """`jetgrid ...` as the console script runs it."""
    script = Path(sys.executable).parent / "jetgrid"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "jetgrid.cli", *args]


# -- measuring -------------------------------------------------------------------------------
def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def latency_summary(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {
        "p50": round(percentile(s, 50), 3),
        "p90": round(percentile(s, 90), 3),
        "p99": round(percentile(s, 99), 3),
        "max": round(s[-1], 3) if s else float("nan"),
        "mean": round(statistics.fmean(s), 3) if s else float("nan"),
    }


@dataclass
class Collector:
    """Core-NATS callback that timestamps each result; all checking happens after the clock."""

    pending: set[str] = field(default_factory=set)
    got: dict[str, tuple[float, str, bytes]] = field(default_factory=dict)
    duplicates: int = 0
    strays: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    job_index: int = -2  # the subject token that holds the job id (the result filter's first *)

    def arm(self, ids: list[str]) -> None:
        self.pending = set(ids)
        self.got = {}
        self.duplicates = self.strays = 0
        self.done.clear()

    async def on_msg(self, msg: Msg) -> None:
        t = time.perf_counter()
        job_id = msg.subject.split(".")[self.job_index]
        if job_id in self.got:
            self.duplicates += 1
        elif job_id in self.pending:
            self.got[job_id] = (t, msg.subject, msg.data)
            if len(self.got) == len(self.pending):
                self.done.set()
        else:
            self.strays += 1


@dataclass
class Side:
    """One system under test: where jobs go, where results come from, how to check them."""

    name: str
    nc: NATS
    submit_subject: str
    result_subjects: list[str]
    check: Callable[[str, str, bytes], str | None]  # (job id, subject, data) -> error or None
    consumer: tuple[str, str] = ("", "")  # (stream, durable) the workers pull from
    streams: list[str] = field(default_factory=list)  # where its jobs and results are stored
    submitted: int = 0
    procs: list[Proc] = field(default_factory=list)
    collector: Collector = field(default_factory=Collector)

    async def subscribe(self) -> None:
        for subject in self.result_subjects:
            self.collector.job_index = subject.split(".").index("*")
            await self.nc.subscribe(subject, cb=self.collector.on_msg, pending_msgs_limit=-1)
        await self.nc.flush()


class Jobs:
    """The payloads: JobSubmitted envelopes, encoded once, the same bytes for both sides."""

    def __init__(self, prompt_bytes: int) -> None:
        self.by_id: dict[str, JobSubmitted] = {}
        self.payload: dict[str, bytes] = {}
        self.filler = ("the quick brown fox jumps over the lazy dog " * 64)[:prompt_bytes]

    def make(self, tag: str, n: int) -> list[str]:
        ids = []
        for i in range(n):
            job_id = f"{tag}-{i:06d}"
            job = JobSubmitted(
                job_id=job_id,
                model=MODEL,
                pool=POOL,
                prompt=f"{job_id} {self.filler}",
                submitter="bench",
            )
            self.by_id[job_id] = job
            self.payload[job_id] = encode(job, source="jetgrid/bench", id=job_id)
            ids.append(job_id)
        return ids


async def run_phase(
    side: Side,
    jobs: Jobs,
    ids: list[str],
    *,
    rate: float | None,
    limit_s: float,
    server: NatsServer,
    measure: bool = True,
) -> dict[str, Any]:
    """Submit `ids` (all at once, or paced at `rate`/s) and wait for every result."""
    js = side.nc.jetstream()
    col = side.collector
    col.arm(ids)
    sent: dict[str, float] = {}
    futures = []
    acked_at: list[float] = []
    pids = [p.pid for p in side.procs]
    server_pid = server.proc.pid if server.proc else 0
    cpu0 = [proc_cpu_s(pid) for pid in pids]
    srv0, own0, mach0 = proc_cpu_s(server_pid), time.process_time(), machine_cpu()
    t0 = time.perf_counter()
    side.submitted += len(ids)
    for i, job_id in enumerate(ids):
        if rate:
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        sent[job_id] = time.perf_counter()
        futures.append(
            await js.publish_async(
                side.submit_subject, jobs.payload[job_id], headers={"Nats-Msg-Id": job_id}
            )
        )
    t_submitted = time.perf_counter()
    stored = asyncio.create_task(js.publish_async_completed())  # every submission's pub ack
    stored.add_done_callback(lambda _: acked_at.append(time.perf_counter()))
    try:
        await asyncio.wait_for(col.done.wait(), limit_s)
    except TimeoutError:
        missing = sorted(set(ids) - set(col.got))
        raise RuntimeError(
            f"{side.name}: {len(missing)} of {len(ids)} results missing after {limit_s:.0f} s "
            f"(first: {missing[:3]}); {await describe(side)}"
        ) from None
    t_last = max(t for t, _, _ in col.got.values())
    cpu1 = [proc_cpu_s(pid) for pid in pids]
    srv1, own1, mach1 = proc_cpu_s(server_pid), time.process_time(), machine_cpu()
    await stored
    pub_errors = [repr(f.exception()) for f in futures if f.exception() is not None]
    errors = []
    for job_id in ids:
        _, subject, data = col.got[job_id]
        err = side.check(job_id, subject, data)
        if err:
            errors.append(err)
    if not measure:
        return {"errors": errors + pub_errors}
    n = len(ids)
    elapsed = t_last - t0
    per_job_ms = 1000.0 / n
    total = max(1, mach1[1] - mach0[1])
    busy = (mach1[0] - mach0[0]) / total
    ours_s = (sum(cpu1) - sum(cpu0)) + (srv1 - srv0) + (own1 - own0)
    # CPU that neither this side's workers, the server nor this client used: other processes on
    # the machine (the other side's idle workers are a fraction of a percent).
    foreign = max(0.0, busy - ours_s * TICK / total)
    return {
        "jobs": n,
        "rate": rate,
        "elapsed_s": round(elapsed, 4),
        "submit_s": round(t_submitted - t0, 4),
        "submissions_stored_s": round(acked_at[0] - t0, 4),
        "jobs_per_s": round(n / elapsed, 1),
        "latency_ms": latency_summary([(col.got[j][0] - sent[j]) * 1000 for j in ids]),
        "cpu_ms_per_job": {
            "workers": round((sum(cpu1) - sum(cpu0)) * per_job_ms, 4),
            "nats_server": round((srv1 - srv0) * per_job_ms, 4),
            "client": round((own1 - own0) * per_job_ms, 4),
        },
        "machine_busy_pct": round(100 * busy, 1),
        "foreign_busy_pct": round(100 * foreign, 1),
        "duplicates": col.duplicates,
        "errors": errors + pub_errors,
    }


async def describe(side: Side) -> str:
    """The consumer's state and each worker's liveness, for a failure message."""
    parts = []
    with contextlib.suppress(Exception):
        ci = await side.nc.jetstream().consumer_info(*side.consumer)
        parts.append(
            f"consumer {side.consumer[1]}: num_pending={ci.num_pending} "
            f"ack_pending={ci.num_ack_pending} waiting={ci.num_waiting} "
            f"redelivered={ci.num_redelivered} delivered={ci.delivered.consumer_seq}"
        )
    parts += [f"{p.name} {'alive' if p.alive() else 'exited'}" for p in side.procs]
    return "; ".join(parts)


# -- the two sides ---------------------------------------------------------------------------
def check_jetgrid(jobs: Jobs) -> Callable[[str, str, bytes], str | None]:
    def check(job_id: str, subject: str, data: bytes) -> str | None:
        try:
            env = decode(data)
        except Exception as exc:
            return f"{job_id}: undecodable result on {subject}: {exc}"
        ev = env.event
        if not isinstance(ev, JobCompleted):
            return f"{job_id}: {env.type} instead of completed: {ev!r}"
        if ev.job_id != job_id:
            return f"{job_id}: completed event names job {ev.job_id}"
        want = expected_output(jobs.by_id[job_id])
        if ev.output != want:
            return f"{job_id}: output {ev.output!r} != expected {want!r}"
        return None

    return check


def check_raw(jobs: Jobs) -> Callable[[str, str, bytes], str | None]:
    def check(job_id: str, subject: str, data: bytes) -> str | None:
        return None if data == jobs.payload[job_id] else f"{job_id}: raw result differs"

    return check


async def wait_ready(sub: Any, procs: list[Proc], limit_s: float) -> None:
    """Wait until every process has announced itself on `sub` (subject token -2 is its id)."""
    want = {p.name for p in procs}
    seen: set[str] = set()
    deadline = time.monotonic() + limit_s
    while not want <= seen:
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited early (status {p.p.returncode}):\n{p.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready after {limit_s:.0f} s: {sorted(want - seen)}")
        with contextlib.suppress(nats.errors.TimeoutError):
            msg = await sub.next_msg(timeout=0.2)
            seen.add(msg.subject.rsplit(".", 2)[-2])
    await sub.unsubscribe()


@dataclass(frozen=True)
class JetgridNames:
    """The jetgrid side's subject and stream prefixes (the public contract, DESIGN section 2)."""

    subject_prefix: str
    stream_prefix: str

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.subject_prefix)

    @property
    def streams(self) -> StreamNames:
        return StreamNames(self.stream_prefix)

    def flags(self, url: str) -> list[str]:
        return [
            "--nats-url", url,
            "--stream-prefix", self.stream_prefix,
            "--subject-prefix", self.subject_prefix,
        ]  # fmt: skip


async def start_jetgrid(
    url: str, tag: str, args: argparse.Namespace, jobs: Jobs, logs: Path
) -> tuple[Side, JetgridNames, ConsumerConfig]:
    """`jetgrid provision`, then W `jetgrid worker` processes; ready once each has pinged.

    The workers create their pool consumer themselves, as in production; its config is returned
    so that the raw side can use the same delivery settings.
    """
    names = JetgridNames(subject_prefix=f"bj{tag}", stream_prefix=f"BJ{tag}_")
    subj = names.subjects
    prov = await asyncio.create_subprocess_exec(
        *jetgrid_argv("provision", *names.flags(url)),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(prov.communicate(), 60)
    if prov.returncode != 0:
        raise RuntimeError(f"jetgrid provision failed:\n{out.decode(errors='replace')}")
    nc = await nats.connect(url, name="bench-jetgrid-client")
    side = Side(
        name="jetgrid",
        nc=nc,
        submit_subject=subj.submit(POOL, MODEL),
        # Terminal events only: the client has no use for claimed/started, and a failed job
        # must surface as an error rather than as a timeout.
        # (said by a worker under its own id: the last token)
        result_subjects=[f"{subj.prefix}.job.*.{name}.*" for name in ("completed", "failed")],
        check=check_jetgrid(jobs),
    )
    await side.subscribe()
    ready = await nc.subscribe(f"{subj.prefix}.worker.*.heartbeat")  # sent once it pulls
    await nc.flush()
    for i in range(1, args.workers + 1):
        wid = f"jw{tag}-{i}"
        profile = args.profile / f"jetgrid-{wid}.prof" if args.profile else None
        flags = [
            *names.flags(url),
            "--pool", POOL, "--model", MODEL, "--backend", "echo",
            "--concurrency", str(args.concurrency), "--worker-id", wid,
        ]  # fmt: skip
        if args.worker_variant or profile:  # `jetgrid worker` with a change and/or profiled
            argv = [
                sys.executable, str(BENCH / "whatif_worker.py"),
                "--variant", args.worker_variant or "none",
                *(["--cpu-profile", str(profile)] if profile else []),
                "worker", *flags,
            ]  # fmt: skip
        else:
            argv = jetgrid_argv("worker", *flags)
        side.procs.append(Proc(wid, argv, logs / f"{wid}.log"))
    await wait_ready(ready, side.procs, limit_s=60)
    js = nc.jetstream()
    pool = [
        ci
        for ci in await js.consumers_info(names.streams.jobs)
        if side.submit_subject in (ci.config.filter_subject, *(ci.config.filter_subjects or []))
    ]
    if len(pool) != 1:
        raise RuntimeError(f"expected one pool consumer on {names.streams.jobs}, found {pool}")
    side.consumer = (names.streams.jobs, pool[0].name)
    side.streams = [names.streams.jobs, names.streams.job_events]
    return side, names, pool[0].config


async def start_raw(
    url: str,
    tag: str,
    args: argparse.Namespace,
    jobs: Jobs,
    logs: Path,
    like: ConsumerConfig,
    duplicate_window_s: float,
) -> Side:
    """A Limits stream, one durable pull consumer, W bench/raw_worker.py processes.

    Stream and consumer take jetgrid's settings (`like`: ack wait, max deliver, max ack pending;
    file storage, the same duplicate window), so that only the client libraries' work differs.
    """
    prefix, stream, consumer = f"raw{tag}", f"RAW{tag}", "workers"
    nc = await nats.connect(url, name="bench-raw-client")
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=stream,
            subjects=[f"{prefix}.jobs.>", f"{prefix}.results.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=duplicate_window_s,
            max_msgs_per_subject=-1,
        )
    )
    await js.add_consumer(
        stream,
        ConsumerConfig(
            durable_name=consumer,
            filter_subject=f"{prefix}.jobs.>",
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=like.ack_wait,
            max_deliver=like.max_deliver,
            max_ack_pending=like.max_ack_pending,
        ),
    )
    side = Side(
        name="raw",
        nc=nc,
        submit_subject=f"{prefix}.jobs.{POOL}.{MODEL}",
        result_subjects=[f"{prefix}.results.*.done"],
        check=check_raw(jobs),
        consumer=(stream, consumer),
        streams=[stream],
    )
    await side.subscribe()
    ready = await nc.subscribe(f"{prefix}.ready.*.up")
    await nc.flush()
    for i in range(1, args.workers + 1):
        wid = f"rw{tag}-{i}"
        prof = ["--cpu-profile", str(args.profile / f"raw-{wid}.prof")] if args.profile else []
        argv = [
            sys.executable, str(BENCH / "raw_worker.py"), *prof,
            "--nats-url", url, "--stream", stream, "--consumer", consumer,
            "--result-prefix", f"{prefix}.results", "--concurrency", str(args.concurrency),
            "--worker-id", wid, "--ready-subject", f"{prefix}.ready.{wid}.up",
        ]  # fmt: skip
        side.procs.append(Proc(wid, argv, logs / f"{wid}.log"))
    await wait_ready(ready, side.procs, limit_s=60)
    return side


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def measure_gateway(
    url: str, names: JetgridNames, logs: Path, events_in_log: int
) -> dict[str, Any]:
    """Start `jetgrid gateway` on the jetgrid side's log, wait until it has folded the whole log,
    run one job through it (POST /v1/jobs?wait=), then read its peak RSS and stop it."""
    port = free_port()
    argv = jetgrid_argv(
        "gateway", "--port", str(port), *names.flags(url),
    )  # fmt: skip
    t0 = time.perf_counter()
    gw = Proc("gateway", argv, logs / "gateway.log")
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if not gw.alive():
                raise RuntimeError(f"gateway exited early:\n{gw.tail()}")
            if time.perf_counter() - t0 > 120:
                raise RuntimeError(f"gateway not ready after 120 s:\n{gw.tail()}")
            with contextlib.suppress(OSError, ValueError):
                status, _ = await asyncio.to_thread(http_json, "GET", f"{base}/readyz", None, 2)
                if status == 200:
                    break
            await asyncio.sleep(0.05)
        ready_s = time.perf_counter() - t0
        job = {"model": MODEL, "pool": POOL, "prompt": "hello through the gateway"}
        t1 = time.perf_counter()
        status, out = await asyncio.to_thread(http_json, "POST", f"{base}/v1/jobs?wait=10", job)
        rt_ms = (time.perf_counter() - t1) * 1000
        want = expected_output(JobSubmitted(job_id="x", **job))
        ok = status == 200 and isinstance(out, dict) and out.get("output") == want
        hwm = gw.read_hwm()
    finally:
        gw.stop()
    return {
        "ready_s": round(ready_s, 3),
        "events_folded": events_in_log,
        "job_via_http_ok": ok,
        "job_via_http_ms": round(rt_ms, 2),
        "http_status": status,
        "peak_rss_mib": round(hwm / 1024, 1) if hwm else None,
    }


# -- orchestration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerSetup:
    """How to run and reach the server: its config, values for the config's $VARIABLES
    (throw-away secrets for this run only) and the unrestricted user everything connects as."""

    conf: Path | None  # None: NatsServer's own open config
    env: dict[str, str]
    user: str | None
    password: str | None
    describe: str

    def url(self, server: NatsServer) -> str:
        if not self.user:
            return server.url
        return f"nats://{self.user}:{self.password}@{server.host}:{server.port}"


def server_setup(conf_arg: str) -> ServerSetup:
    """The repo's nats.conf (default) or `open`. A config with users gets a random password for
    each ``$VARIABLE`` it names, and everything connects as its `admin` user (no permissions
    block), since the benchmark uses its own stream and subject prefixes."""
    if conf_arg == "open":
        return ServerSetup(None, {}, None, None, "NatsServer's open config (no users)")
    conf = Path(conf_arg).resolve()
    text = conf.read_text()
    env = {v: secrets.token_hex(16) for v in sorted(set(re.findall(r"\$([A-Za-z_]\w*)", text)))}
    sync = re.search(r"sync_interval:\s*always", text) is not None
    label = f"{conf.name} (sync_interval: {'always' if sync else 'NOT always'}"
    m = re.search(r'user:\s*"?admin"?\s*,\s*password:\s*(?:\$(\w+)|"([^"]*)")', text)
    if m:
        password = env[m.group(1)] if m.group(1) else m.group(2)
        return ServerSetup(conf, env, "admin", password, label + ", as user admin)")
    if re.search(r"\busers\s*[:=\[]", text):
        raise RuntimeError(f"{conf} has users but no `admin` to connect as; try --conf open")
    return ServerSetup(conf, env, None, None, label + ")")


async def bench(args: argparse.Namespace, store: Path, logs: Path) -> dict[str, Any]:
    setup = server_setup(args.conf)
    server = NatsServer(store / "nats", conf=setup.conf, port=0, log_file=logs / "nats-server.log")
    sides: list[Side] = []
    result: dict[str, Any] = {}
    load0 = loadavg()
    if load0 > 1.0:
        log(f"load average is {load0:.2f}: other processes share this machine; figures will vary")
    try:
        saved = {k: os.environ.get(k) for k in setup.env}
        os.environ.update(setup.env)  # for nats-server only: restored as soon as it runs
        try:
            server.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        url = setup.url(server)
        log(f"nats-server {server.url}, store {store} ({fs_type(store)}), {setup.describe}")
        tag = uuid.uuid4().hex[:6]
        jobs = Jobs(args.prompt_bytes)
        jg, names, pool_cfg = await start_jetgrid(url, tag, args, jobs, logs)
        sides.append(jg)
        jobs_stream = await jg.nc.jetstream().stream_info(names.streams.jobs)
        window = float(jobs_stream.config.duplicate_window or 120)
        raw = await start_raw(url, tag, args, jobs, logs, pool_cfg, window)
        sides.append(raw)
        log(f"{len(jg.procs)} jetgrid + {len(raw.procs)} raw workers ready")
        rounds: list[dict[str, Any]] = []
        for r in range(1, args.rounds + 1):
            order = [jg, raw] if r % 2 else [raw, jg]  # alternate who goes first
            this: dict[str, Any] = {"first": order[0].name}
            for side in order:
                this[side.name] = await run_side(side, jobs, r, args, server)
            rounds.append(this)
        # Peak RSS: read before anything is stopped (Proc.stop reads it again, just before TERM).
        rss = {
            side.name: {p.name: round((p.read_hwm() or 0) / 1024, 1) for p in side.procs}
            for side in sides
        }
        server_hwm = proc_status_kib(server.proc.pid, "VmHWM") if server.proc else None
        # With sync_interval: always every stored message is one fsync (strace shows exactly
        # one fsync per message), so stored messages per job is the disk work per job.
        stored: dict[str, float] = {}
        for side in sides:
            n = 0
            for name in side.streams:
                n += (await side.nc.jetstream().stream_info(name)).state.messages
            stored[side.name] = round(n / max(1, side.submitted), 2)
        gateway = None
        if not args.no_gateway:
            js = jg.nc.jetstream()
            n_events = 0
            for name in (names.streams.jobs, names.streams.job_events):
                n_events += (await js.stream_info(name)).state.messages
            log(f"starting a gateway on the jetgrid log ({n_events} events to fold)")
            try:
                gateway = await measure_gateway(url, names, logs, n_events)
            except Exception as exc:  # keep the round-trip figures; report the gateway's failure
                log(f"gateway step failed: {exc}")
                gateway = {"error": str(exc).splitlines()[0][:300], "events_folded": n_events}
        for side in sides:
            for p in side.procs:
                p.stop()
        result = summarise(args, rounds, rss, server_hwm, gateway, sides, store, load0)
        result["machine"]["conf"] = setup.describe
        for name, per_job in stored.items():
            result["summary"][name]["stored_msgs_per_job"] = per_job
    finally:
        for side in sides:
            for p in side.procs:
                p.stop()
            with contextlib.suppress(Exception):
                await side.nc.close()
        server.stop()
    return result


async def run_side(
    side: Side, jobs: Jobs, r: int, args: argparse.Namespace, server: NatsServer
) -> dict[str, Any]:
    warm = await run_phase(
        side, jobs, jobs.make(f"r{r}w", args.warmup), rate=None, limit_s=60,
        server=server, measure=False,
    )  # fmt: skip
    if warm["errors"]:
        raise RuntimeError(f"{side.name} warm-up failed: {warm['errors'][:3]}")
    thr = await run_phase(
        side, jobs, jobs.make(f"r{r}t", args.jobs), rate=None,
        limit_s=max(60.0, args.jobs / 50), server=server,
    )  # fmt: skip
    log(
        f"round {r} {side.name:8} throughput: {thr['jobs_per_s']:8.1f} jobs/s  "
        f"p50 {thr['latency_ms']['p50']:.1f} ms  p99 {thr['latency_ms']['p99']:.1f} ms  "
        f"(all stored in {thr['submissions_stored_s']:.2f} s)"
    )
    await asyncio.sleep(0.3)  # let the tail of the burst settle before the paced phase
    lat = await run_phase(
        side, jobs, jobs.make(f"r{r}l", args.latency_jobs), rate=args.rate,
        limit_s=args.latency_jobs / args.rate + 60, server=server,
    )  # fmt: skip
    log(
        f"round {r} {side.name:8} at {args.rate:g}/s:  p50 {lat['latency_ms']['p50']:.2f} ms  "
        f"p90 {lat['latency_ms']['p90']:.2f} ms  p99 {lat['latency_ms']['p99']:.2f} ms"
    )
    return {"throughput": thr, "latency": lat}


def fs_type(path: Path) -> str:
    """File system type of `path` (fsync costs nothing on tmpfs, a lot on a real disk)."""
    best, kind = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mount = parts[1]
            if str(path.resolve()).startswith(mount) and len(mount) > len(best):
                best, kind = mount, parts[2]
    return kind


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def code_fingerprint() -> dict[str, str]:
    """sha256 (12 hex) of the files whose speed is measured: figures belong to that code."""
    out = {}
    worker = ("agent", "pulling", "jobs", "outcomes", "cancels", "puller")  # the per-job path
    files = [f"worker/{m}.py" for m in worker] + ["events/codec.py", "bench/raw_worker.py"]
    for rel in files:
        with contextlib.suppress(OSError):
            out[rel] = hashlib.sha256((REPO / rel).read_bytes()).hexdigest()[:12]
    return out


def med(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summarise(
    args: argparse.Namespace,
    rounds: list[dict[str, Any]],
    rss: dict[str, dict[str, float]],
    server_hwm: int | None,
    gateway: dict[str, Any] | None,
    sides: list[Side],
    store: Path,
    loadavg_before: float,
) -> dict[str, Any]:
    def pick(side: str, phase: str, *path: str) -> list[float]:
        out = []
        for rd in rounds:
            v: Any = rd[side][phase]
            for key in path:
                v = v[key]
            out.append(v)
        return out

    summary: dict[str, Any] = {}
    for name in ("jetgrid", "raw"):
        summary[name] = {
            "jobs_per_s": med(pick(name, "throughput", "jobs_per_s")),
            "burst_p50_ms": med(pick(name, "throughput", "latency_ms", "p50")),
            "burst_p99_ms": med(pick(name, "throughput", "latency_ms", "p99")),
            "paced_p50_ms": med(pick(name, "latency", "latency_ms", "p50")),
            "paced_p90_ms": med(pick(name, "latency", "latency_ms", "p90")),
            "paced_p99_ms": med(pick(name, "latency", "latency_ms", "p99")),
            "worker_cpu_ms_per_job": med(pick(name, "throughput", "cpu_ms_per_job", "workers")),
            "server_cpu_ms_per_job": med(pick(name, "throughput", "cpu_ms_per_job", "nats_server")),
            "client_cpu_ms_per_job": med(pick(name, "throughput", "cpu_ms_per_job", "client")),
            "machine_busy_pct": med(pick(name, "throughput", "machine_busy_pct")),
            "foreign_busy_pct": med(pick(name, "throughput", "foreign_busy_pct")),
        }
    j, r = summary["jetgrid"], summary["raw"]
    # Paired: each round measures both sides back to back, so a ratio per round cancels most of
    # what other processes on the machine do; the headline is the median of those ratios.
    thr_rounds = [
        round(a / b, 3)
        for a, b in zip(
            pick("jetgrid", "throughput", "jobs_per_s"),
            pick("raw", "throughput", "jobs_per_s"),
            strict=True,
        )
    ]
    lat_rounds = [
        round(a / b, 3)
        for a, b in zip(
            pick("jetgrid", "latency", "latency_ms", "p50"),
            pick("raw", "latency", "latency_ms", "p50"),
            strict=True,
        )
    ]
    thr_ratio, lat_ratio = med(thr_rounds), med(lat_rounds)
    errors = {
        f"round{i}.{name}.{phase}": rd[name][phase]["errors"][:5]
        for i, rd in enumerate(rounds, 1)
        for name in ("jetgrid", "raw")
        for phase in ("throughput", "latency")
        if rd[name][phase]["errors"]
    }
    exits = {p.name: p.exit_line for s in sides for p in s.procs}
    return {
        "bench": "roundtrip",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "nats_py": importlib.metadata.version("nats-py"),
            "nats_server": server_version(),
            "store_fs": fs_type(store),
            "conf": None,
            "loadavg_before": loadavg_before,
            "loadavg_after": loadavg(),
        },
        "code": code_fingerprint(),
        "config": {
            "jobs": args.jobs,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "rate": args.rate,
            "latency_jobs": args.latency_jobs,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "prompt_bytes": args.prompt_bytes,
            "worker_variant": args.worker_variant,
            "payload_bytes": None,
        },
        "summary": summary,
        "ratios": {
            "throughput_jetgrid_over_raw": thr_ratio,
            "throughput_ratio_per_round": thr_rounds,
            "throughput_ratio_of_medians": round(j["jobs_per_s"] / r["jobs_per_s"], 3),
            "throughput_target": TARGET_THROUGHPUT,
            "throughput_ok": thr_ratio >= TARGET_THROUGHPUT,
            "paced_p50_jetgrid_over_raw": lat_ratio,
            "paced_p50_ratio_per_round": lat_rounds,
            "latency_target": TARGET_LATENCY,
            "latency_ok": lat_ratio <= TARGET_LATENCY,
        },
        "peak_rss_mib": {**rss, "nats_server": round((server_hwm or 0) / 1024, 1)},
        "gateway": gateway,
        "rounds": rounds,
        "worker_exit_lines": exits,
        "errors": errors,
    }


def server_version() -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run(
            [nats_server_binary(), "--version"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip().removeprefix("nats-server: ")
    return "?"


def table(res: dict[str, Any]) -> str:
    s, ra, c = res["summary"], res["ratios"], res["config"]
    j, r = s["jetgrid"], s["raw"]
    w = 31

    def row(label: str, a: Any, b: Any, extra: str = "") -> str:
        return f"  {label:<{w}} {a:>10} {b:>10}  {extra}"

    def ms(v: float) -> str:
        return f"{v:.2f}"

    rss = res["peak_rss_mib"]
    lines = [
        f"jetgrid round trip vs raw nats-py JetStream work queue ({res['date']})",
        f"  N={c['jobs']} jobs, W={c['workers']} worker processes x C={c['concurrency']}, "
        f"paced phase {c['latency_jobs']} jobs at {c['rate']:g}/s, {c['rounds']} round(s), "
        f"payload {c['payload_bytes']} B",
        f"  {res['machine']['cpus']} CPUs, Python {res['machine']['python']}, nats-py "
        f"{res['machine']['nats_py']}, nats-server {res['machine']['nats_server']}, "
        f"store on {res['machine']['store_fs']}, {res['machine']['conf']}",
        "",
        "  medians over rounds; ratios are medians of per-round (paired) ratios",
        row("", "jetgrid", "raw", "jetgrid/raw"),
        row(
            "throughput (jobs/s)",
            f"{j['jobs_per_s']:.0f}",
            f"{r['jobs_per_s']:.0f}",
            f"{ra['throughput_jetgrid_over_raw']:.2f}x  (target >= {TARGET_THROUGHPUT}x: "
            f"{'ok' if ra['throughput_ok'] else 'MISSED'})",
        ),
        row("  burst submit->result p50 (ms)", ms(j["burst_p50_ms"]), ms(r["burst_p50_ms"])),
        row("  burst submit->result p99 (ms)", ms(j["burst_p99_ms"]), ms(r["burst_p99_ms"])),
        row(
            f"paced {c['rate']:g}/s p50 (ms)",
            ms(j["paced_p50_ms"]),
            ms(r["paced_p50_ms"]),
            f"{ra['paced_p50_jetgrid_over_raw']:.2f}x  (target <= {TARGET_LATENCY}x: "
            f"{'ok' if ra['latency_ok'] else 'MISSED'})",
        ),
        row(f"paced {c['rate']:g}/s p90 (ms)", ms(j["paced_p90_ms"]), ms(r["paced_p90_ms"])),
        row(f"paced {c['rate']:g}/s p99 (ms)", ms(j["paced_p99_ms"]), ms(r["paced_p99_ms"])),
        row("CPU/job, all workers (ms)", ms(j["worker_cpu_ms_per_job"]),
            ms(r["worker_cpu_ms_per_job"])),
        row("CPU/job, nats-server (ms)", ms(j["server_cpu_ms_per_job"]),
            ms(r["server_cpu_ms_per_job"])),
        row("CPU/job, bench client (ms)", ms(j["client_cpu_ms_per_job"]),
            ms(r["client_cpu_ms_per_job"])),
        row("stored messages (fsyncs) / job", j.get("stored_msgs_per_job", "?"),
            r.get("stored_msgs_per_job", "?")),
        row("machine CPU busy, burst (%)", j["machine_busy_pct"], r["machine_busy_pct"]),
        row("  of which other processes (%)", j["foreign_busy_pct"], r["foreign_busy_pct"],
            f"load avg {res['machine']['loadavg_before']} -> {res['machine']['loadavg_after']}"),
        "",
        "  peak RSS (VmHWM, MiB):",
    ]  # fmt: skip
    for name in ("jetgrid", "raw"):
        lines.append(f"    {name:8} " + ", ".join(f"{k} {v}" for k, v in rss[name].items()))
    lines.append(f"    nats-server {rss['nats_server']}")
    gw = res.get("gateway")
    if gw and "error" in gw:
        lines.append(f"    gateway  FAILED: {gw['error']}")
    elif gw:
        lines.append(
            f"    gateway  {gw['peak_rss_mib']} (after folding {gw['events_folded']} events in "
            f"{gw['ready_s']:.2f} s; one job via POST /v1/jobs?wait: "
            f"{'ok' if gw['job_via_http_ok'] else 'FAILED'}, {gw['job_via_http_ms']:.1f} ms)"
        )
    lines += [
        "",
        "  per round ('other' = CPU that other processes on the machine used meanwhile):",
        "    round  first    jobs/s jg / raw  ratio   paced p50 ms jg / raw  ratio"
        "   other % jg / raw",
    ]
    for i, rd in enumerate(res["rounds"], 1):
        tr, lr = ra["throughput_ratio_per_round"][i - 1], ra["paced_p50_ratio_per_round"][i - 1]
        jt, rt = rd["jetgrid"]["throughput"], rd["raw"]["throughput"]
        jl, rl = rd["jetgrid"]["latency"]["latency_ms"], rd["raw"]["latency"]["latency_ms"]
        lines.append(
            f"    {i:>5}  {rd['first']:<8} {jt['jobs_per_s']:>6.0f} / {rt['jobs_per_s']:<6.0f} "
            f"{tr:>5.2f}   {jl['p50']:>8.2f} / {rl['p50']:<8.2f}    {lr:>5.2f}"
            f"   {jt['foreign_busy_pct']:>5.1f} / {rt['foreign_busy_pct']:<5.1f}"
        )
    if res["errors"]:
        lines += ["", f"  ERRORS: {res['errors']}"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="jetgrid round trip vs a raw nats-py JetStream work queue, in one run.",
    )
    ap.add_argument("--jobs", "-n", type=int, help="jobs in the throughput phase [3000]")
    ap.add_argument("--workers", "-w", type=int, default=2, help="worker processes per side [2]")
    ap.add_argument("--concurrency", "-c", type=int, default=4, help="jobs per worker [4]")
    ap.add_argument("--rate", type=float, default=200.0, help="paced phase, jobs/s [200]")
    ap.add_argument("--latency-jobs", type=int, help="jobs in the paced phase [400]")
    ap.add_argument("--warmup", type=int, help="warm-up jobs per side and round [50]")
    ap.add_argument("--rounds", type=int, help="rounds, alternating who goes first [3]")
    ap.add_argument("--prompt-bytes", type=int, default=64, help="filler in each prompt [64]")
    ap.add_argument("--quick", action="store_true", help="N=300, 200 paced jobs: < 20 s")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--out", type=Path, help="results file [bench/results/roundtrip-<t>.json]")
    ap.add_argument("--no-gateway", action="store_true", help="skip the gateway RSS step")
    ap.add_argument("--store-dir", type=Path, help="parent of the temporary NATS store [/tmp]")
    ap.add_argument(
        "--conf",
        default=str(CONF),
        help="nats-server config, or `open` for NatsServer's open one [the repo's nats.conf]",
    )
    ap.add_argument(
        "--profile",
        type=Path,
        help="run every worker under cProfile (CPU time), .prof files into DIR",
    )
    ap.add_argument(
        "--worker-variant",
        choices=("none", "no-started", "no-keepalive", "uvloop"),
        help="A/B experiment: run jetgrid workers via bench/whatif_worker.py with this change",
    )
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument("--keep", action="store_true", help="keep the store and logs")
    args = ap.parse_args(argv)
    quick = args.quick
    args.jobs = args.jobs or (300 if quick else 3000)
    args.latency_jobs = args.latency_jobs or (200 if quick else 400)
    args.rounds = args.rounds or (1 if quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (20 if quick else 50)
    for name in ("jobs", "workers", "concurrency", "latency_jobs", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.rate <= 0:
        ap.error("--rate must be > 0")
    if args.profile:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="jetgrid-roundtrip-", dir=args.store_dir))
    logs = work / "logs"
    logs.mkdir()

    def on_term(signum: int, frame: object) -> None:  # run the finally blocks on SIGTERM too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.perf_counter()
    try:
        res = asyncio.run(bench(args, work, logs))
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    except Exception as exc:
        log(f"FAILED: {exc}")
        log(f"logs kept in {logs}")
        args.keep = True
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["config"]["payload_bytes"] = payload_size(args)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    out = args.out or RESULTS / f"roundtrip-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(table(res))
        print(f"\n  ({res['wall_s']} s; JSON in {out})")
    if res["errors"] or (res.get("gateway") or {}).get("error"):
        return 1
    if args.check and not (res["ratios"]["throughput_ok"] and res["ratios"]["latency_ok"]):
        return 1
    return 0


def payload_size(args: argparse.Namespace) -> int:
    jobs = Jobs(args.prompt_bytes)
    return len(jobs.payload[jobs.make("r1t", 1)[0]])


if __name__ == "__main__":
    sys.exit(main())
