"""Shared fixtures: one real nats-server per test session, isolated per test by name.

Each test gets its own subject prefix and stream prefix, so tests never see each other's events
even though they share the server.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import provision_streams
from jetgrid.coordinator.settings import Settings
from jetgrid.events import (
    TERMINAL_NAMES,
    Envelope,
    InvalidEvent,
    Taken,
    claim_of,
    decode,
    stream_specs,
)
from jetgrid.natsserver import NatsServer
from jetgrid.worker.agent import Worker, WorkerOptions
from jetgrid.worker.backends import Backend, EchoBackend

_counter = itertools.count(1)

# Property tests check behaviour, not speed: on a shared 2-core machine a per-example deadline
# only measures the neighbours' load.
hypothesis.settings.register_profile("jetgrid", deadline=None)
hypothesis.settings.load_profile("jetgrid")


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    store = tmp_path_factory.mktemp("nats-store")
    server = NatsServer(store, port=0, log_file=store / "nats-server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(nats_server: NatsServer, tmp_path: Path) -> Settings:
    n = next(_counter)
    return Settings(
        nats_url=nats_server.url,
        subject_prefix=f"t{n}",
        stream_prefix=f"T{n}_",
        data_dir=tmp_path / "data",
        heartbeat_interval_s=0.5,
    )


@pytest.fixture
async def nc(settings: Settings) -> AsyncIterator[NATS]:
    conn = await nats.connect(settings.nats_url)
    yield conn
    await conn.close()


@pytest.fixture
def bus(settings: Settings, nc: NATS) -> Bus:
    """The test's connection, as the adapter every component publishes through."""
    return Bus(nc, settings)


@pytest.fixture
async def streams(settings: Settings, nc: NATS) -> Settings:
    """Provision the test's streams; returns the settings that name them."""
    await provision_streams(nc.jetstream(), stream_specs(settings.subjects, settings.streams))
    return settings


@pytest.fixture
async def start_worker(streams: Settings) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start in-process workers (echo backend unless given); all are drained at teardown."""
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(
        *models: str,
        pool: str = "standard",
        worker_id: str | None = None,
        concurrency: int = 1,
        backend: Backend | None = None,
        settings: Settings | None = None,
        **options: Any,
    ) -> Worker:
        agent = Worker(
            settings or streams,
            WorkerOptions(
                pool=pool,
                models=models or ("echo",),
                worker_id=worker_id or f"w{len(started) + 1}",
                concurrency=concurrency,
                **options,
            ),
            backend or EchoBackend(),
        )
        task = asyncio.create_task(agent.run())
        started.append((agent, task))
        ready = asyncio.create_task(agent.ready.wait())
        await asyncio.wait({ready, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        assert agent.ready.is_set(), "worker did not become ready"
        return agent

    yield start
    for agent, _ in started:
        agent.stop()
    tasks = {t for _, t in started}
    if tasks:
        _, stuck = await asyncio.wait(tasks, timeout=20)
        if stuck:  # say where each one hangs before failing, so a rare hang can be read
            for task in asyncio.all_tasks():
                task.print_stack()
            raise AssertionError(
                f"workers did not stop within 20 s: {[repr(a) for a, _ in started]}"
            )


@pytest.fixture
async def outcomes(streams: Settings, nc: NATS) -> AsyncIterator[Outcomes]:
    """Collects every job event of the test's prefix as it is published."""
    collector = Outcomes()
    sub = await nc.subscribe(streams.subjects.job_events(), cb=collector.on_msg)
    yield collector
    await sub.unsubscribe()


class Outcomes:
    """Job events seen on core NATS, by job id; `wait_for` blocks until a condition holds."""

    def __init__(self) -> None:
        self.events: dict[str, list[Envelope]] = defaultdict(list)
        self._changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        try:
            env = decode(msg.data).at(None, msg.subject)
        except InvalidEvent:  # a hostile message published by the test itself
            return
        job_id = getattr(env.event, "job_id", None)
        if job_id is None:  # a worker event published on a job's subject, by the test itself
            return
        self.events[job_id].append(env)
        self._changed.set()

    def terminal(self, job_id: str) -> list[Envelope]:
        # `rejected` ends only the submission it names (another one may hold the id and still
        # run: projections.jobs), so it is not a job's outcome here.
        names = TERMINAL_NAMES - {"rejected"}
        return [e for e in self.events[job_id] if e.type.rsplit(".", 1)[-1] in names]

    def names(self, job_id: str) -> list[str]:
        return [e.type.rsplit(".", 1)[-1] for e in self.events[job_id]]

    def said(self, job_id: str) -> list[str]:
        """The job's event names without `started`, which a first run says only once it has
        lasted started_after_s (worker.outcomes): what a test about anything else compares."""
        return [n for n in self.names(job_id) if n != "started"]

    def claims(self, job_id: str) -> list[Taken]:
        """The job's claims, wherever they are said (a `started`, or an outcome carrying its
        run's claim: events.claim_of), in the order seen."""
        return [t for e in self.events[job_id] if (t := claim_of(e.event, e.time)) is not None]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 15.0) -> None:
        async def loop() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def wait_terminal(self, *job_ids: str, timeout: float = 15.0) -> None:
        await self.wait_for(lambda: all(self.terminal(j) for j in job_ids), timeout)


@pytest.fixture
async def gateway(streams: Settings) -> AsyncIterator[str]:
    """The gateway under uvicorn on a free port; yields its base URL."""
    from jetgrid.gateway.server import serving

    async with serving(streams.replace(gateway_port=0)) as url:
        yield url
