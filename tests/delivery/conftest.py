"""Helpers for the delivery tests: pools files, subprocess workers, reading the log back."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobSubmitted, decode, decode_submission, encode
from jetgrid.projections.jobs import JobView, apply

JETGRID = str(Path(sys.executable).parent / "jetgrid")


def write_pools(path: Path, **fields: Any) -> Path:
    """A pools file with one pool, `standard`, with `fields` set."""
    lines = ["[[pool]]", 'name = "standard"']
    for k, v in fields.items():
        lines.append(f"{k} = {v!r}".replace("'", '"').replace("(", "[").replace(")", "]"))
    path.write_text("\n".join(lines) + "\n")
    return path


def job(i: int | str, **kw: Any) -> JobSubmitted:
    fields: dict[str, Any] = dict(job_id=f"j{i}", model="echo", pool="standard", prompt=f"p{i}")
    fields.update(kw)
    return JobSubmitted(**fields)


async def submit(js: JetStreamContext, s: Settings, j: JobSubmitted) -> int:
    ack = await js.publish(
        s.subjects.submit(j.pool, j.model, j.priority),
        encode(j, source="test", id=j.job_id),
        headers={"Nats-Msg-Id": j.job_id},
    )
    return ack.seq


def worker_env(s: Settings, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "JETGRID_NATS_URL": s.nats_url,
        "JETGRID_SUBJECT_PREFIX": s.subject_prefix,
        "JETGRID_STREAM_PREFIX": s.stream_prefix,
        "JETGRID_HEARTBEAT_INTERVAL_S": "0.5",
        "JETGRID_STREAM_REPLICAS": str(s.stream_replicas),
    }
    if s.pools_file:
        env["JETGRID_POOLS_FILE"] = str(s.pools_file)
    env.update(extra)
    return env


async def spawn_worker(
    s: Settings, worker_id: str, *args: str, log: Path | None = None, **env: str
) -> asyncio.subprocess.Process:
    """`jetgrid worker` as its own process (so it can be SIGKILLed or SIGTERMed). Its output
    goes to a pipe, or to `log` for long runs (a pipe nobody reads fills up and blocks it)."""
    # a small local file opened once per process start; not worth a thread
    out = open(log, "ab") if log else asyncio.subprocess.PIPE  # noqa: ASYNC230
    try:
        return await asyncio.create_subprocess_exec(
            JETGRID, "worker", "--pool", "standard", "--model", "echo", "--worker-id", worker_id,
            *args,
            env=worker_env(s, **env),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


@pytest.fixture
async def procs() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Subprocesses a test starts; any still running at teardown are killed."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for p in started:
        if p.returncode is None:
            p.kill()
            await p.wait()


async def read_stream(
    js: JetStreamContext,
    stream: str,
    subject: str = ">",
    *,
    batch: int = 2000,
    within_s: float = 30.0,
) -> list[Any]:
    """Every message of `stream` on `subject`, in log order (an ephemeral, unacked reader).

    Reads exactly as many messages as the consumer had pending when it was made; a fetch that
    times out (a loaded machine, a cluster electing a leader) is tried again, and if the log
    cannot be read whole within `within_s` this raises rather than return part of it: a
    partial read would look like lost events."""
    if (await js.stream_info(stream)).state.messages == 0:
        return []
    sub = await js.pull_subscribe(
        subject,
        stream=stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.ALL,
            inactive_threshold=30,
            mem_storage=True,
        ),
    )
    out: list[Any] = []
    try:
        expected = (await sub.consumer_info()).num_pending
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while len(out) < expected:
            try:
                out += await sub.fetch(min(batch, expected - len(out)), timeout=1.0)
            except Exception as exc:
                if loop.time() > deadline:
                    raise AssertionError(
                        f"read {len(out)} of {expected} messages of {stream} on {subject}: {exc!r}"
                    ) from exc
    finally:
        await sub.unsubscribe()
    return out


async def job_views(js: JetStreamContext, s: Settings) -> dict[str, JobView]:
    """The read model: JOBS then JOB_EVENTS folded with the job reducer."""
    views: dict[str, JobView] = {}
    for m in await read_stream(js, s.streams.jobs):
        md = m.metadata
        try:
            env = decode_submission(
                m.data, subject=m.subject, subjects=s.subjects,
                seq=md.sequence.stream, stream_time=md.timestamp,
            )  # fmt: skip
        except Exception:
            continue
        views[env.event.job_id] = apply(views.get(env.event.job_id), env)
    for m in await read_stream(js, s.streams.job_events):
        try:
            env = decode(m.data).at(m.metadata.sequence.stream, m.subject)
        except Exception:
            continue
        jid = env.event.job_id
        views[jid] = apply(views.get(jid), env)
    return views


async def count_subjects(js: JetStreamContext, stream: str, subject: str) -> dict[str, int]:
    info = await js.stream_info(stream, subjects_filter=subject)
    return dict(info.state.subjects or {})


async def until(cond: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> None:
    """Wait until `cond()` (sync or async) is truthy. An error from `cond` (NATS failing over,
    say) counts as "not yet"; the last one is reported if time runs out."""
    last: list[BaseException] = []

    async def loop() -> None:
        while True:
            try:
                r = cond()
                if asyncio.iscoroutine(r):
                    r = await r
            except Exception as exc:
                last[:] = [exc]
                r = False
            if r:
                return
            await asyncio.sleep(every)

    try:
        await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"condition not met within {timeout} s (last error: {last})") from None


async def patiently(op: Callable[[], Any], within_s: float = 30.0) -> Any:
    """`await op()`, tried again while it fails (the client reconnecting after a node restart,
    a stream electing a leader) for up to `within_s`; then its last error is raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            return await op()
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


class Kit:
    """The helpers above, handed to tests as a fixture (test modules cannot import conftest)."""

    job = staticmethod(job)
    submit = staticmethod(submit)
    write_pools = staticmethod(write_pools)
    spawn_worker = staticmethod(spawn_worker)
    worker_env = staticmethod(worker_env)
    read_stream = staticmethod(read_stream)
    job_views = staticmethod(job_views)
    count_subjects = staticmethod(count_subjects)
    until = staticmethod(until)
    patiently = staticmethod(patiently)
    JETGRID = JETGRID


@pytest.fixture
def kit() -> type[Kit]:
    return Kit


@pytest.fixture
def own_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A nats-server of this test's own (fixed free port, temp store), so it can be restarted."""
    from jetgrid.natsserver import NatsServer, free_port

    server = NatsServer(
        tmp_path / "store", port=free_port(), log_file=tmp_path / "nats-server.log"
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real 3-node JetStream cluster on loopback, shared by the tests of this directory."""
    from jetgrid.natsserver import NatsCluster

    base = tmp_path_factory.mktemp("cluster")
    c = NatsCluster(base, size=3, log_dir=base).start()
    yield c
    c.stop()


async def run_gateway(s: Settings):  # type: ignore[no-untyped-def]
    """The gateway under uvicorn on a free port: (server, task, base URL)."""
    from jetgrid.gateway.server import make_server, wait_started

    server = make_server(s.replace(gateway_port=0))
    task = asyncio.create_task(server.serve())
    port = await wait_started(server, task)
    return server, task, f"http://127.0.0.1:{port}"


Kit.run_gateway = staticmethod(run_gateway)  # type: ignore[attr-defined]
