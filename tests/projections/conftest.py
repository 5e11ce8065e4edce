"""Fixtures for projector tests: a writer of synthetic WORKERS / JOBS / JOB_EVENTS history, and
read-model stores: SQLite always, PostgreSQL where it is installed.

`store_url` is parametrised over both backends, so a test that takes it runs once per backend:
a SQLAlchemy async URL for a fresh, empty database (a SQLite file, or a new database on a
throwaway PostgreSQL server started once per session with jetgrid.pgserver). Without the
PostgreSQL binaries the PostgreSQL case is skipped, saying why.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from jetgrid.coordinator.provision import ensure_tiers_bucket
from jetgrid.coordinator.settings import Settings
from jetgrid.events import (
    JobClaimed,
    JobCompleted,
    JobFailed,
    JobStarted,
    JobSubmitted,
    WorkerHeartbeat,
    WorkerRegistered,
    encode,
)
from jetgrid.natsserver import free_port
from jetgrid.pgserver import PostgresServer, PostgresUnavailable, postgres_bindir
from jetgrid.projections.store import Store


class Log:
    """Publishes events with chosen event times (an hour in the past by default) and awaits acks."""

    def __init__(self, settings: Settings, nc: NATS) -> None:
        self.settings = settings
        self.js = nc.jetstream()
        self.t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        self._ids = itertools.count()
        self.futures: list[Any] = []

    def at(self, s: float) -> datetime:
        return self.t0 + timedelta(seconds=s)

    async def raw(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> int:
        ack = await self.js.publish(subject, data, headers=headers)
        return ack.seq

    async def worker(self, event: Any, t: float, *, id: str | None = None, name: str) -> int:
        subject = self.settings.subjects.worker_event(event.worker_id, name)
        data = encode(
            event, source=f"jetgrid/worker/{event.worker_id}", id=id or self._id(), time=self.at(t)
        )
        return await self.raw(subject, data)

    def _id(self) -> str:
        return f"e{next(self._ids)}"

    async def register(self, wid: str, t: float = 0.0, interval: float = 1.0, **kw: Any) -> int:
        ev = WorkerRegistered(
            worker_id=wid, pools=["standard"], models=["echo"], backend="echo", concurrency=2,
            heartbeat_interval_s=interval, boot_id=kw.pop("boot_id", "b1"), **kw,
        )  # fmt: skip
        return await self.worker(ev, t, name="registered")

    async def ping(
        self, wid: str, n: int, t: float, healthy: bool = True, *, id: str | None = None, **kw: Any
    ) -> int:
        ev = WorkerHeartbeat(
            worker_id=wid, n=n, healthy=healthy, interval_s=kw.pop("interval_s", 1.0),
            in_flight=0, boot_id=kw.pop("boot_id", "b1"), **kw,
        )  # fmt: skip
        return await self.worker(ev, t, id=id, name="heartbeat")

    async def pings(self, wid: str, start: float, count: int, miss: set[int] | None = None) -> None:
        """`count` pings a second apart from `start` (counter n = start + i); the i in `miss`
        are never sent."""
        miss = miss or set()
        pending = []
        for i in range(count):
            if i in miss:
                continue
            n = int(start) + i
            ev = WorkerHeartbeat(
                worker_id=wid, n=n, healthy=True, interval_s=1.0, in_flight=0, boot_id="b1"
            )
            subject = self.settings.subjects.worker_event(wid, "heartbeat")
            data = encode(ev, source="t", id=self._id(), time=self.at(start + i))
            pending.append(await self.js.publish_async(subject, data))
        await self.js.publish_async_completed()

    async def job(
        self, job_id: str, wid: str, t: float, outcome: str = "completed", pool: str = "standard"
    ) -> None:
        """A job's submission, claim, start and terminal event at t, t+0.1, t+0.2, t+0.5."""
        subj = self.settings.subjects
        sub = JobSubmitted(job_id=job_id, model="echo", pool=pool, prompt="hi")
        seq = await self.raw(
            subj.submit(pool, "echo"), encode(sub, source="t", id=job_id, time=self.at(t))
        )
        events: list[tuple[Any, float, str]] = [
            (JobClaimed(job_id=job_id, worker_id=wid, attempt=1, jobs_seq=seq), 0.1, "claimed"),
            (JobStarted(job_id=job_id, worker_id=wid, attempt=1), 0.2, "started"),
        ]
        if outcome == "completed":
            events.append(
                (
                    JobCompleted(
                        job_id=job_id, worker_id=wid, attempt=1, output="hi", duration_s=0.3
                    ),
                    0.5,
                    "completed",
                )
            )
        elif outcome == "failed":
            events.append(
                (
                    JobFailed(
                        job_id=job_id,
                        worker_id=wid,
                        attempt=1,
                        reason="boom",
                        error_type="permanent",
                    ),
                    0.5,
                    "failed",
                )
            )
        for ev, dt, name in events:
            await self.raw(
                subj.job_event(job_id, name, wid),  # as a worker says it: under its own id
                encode(ev, source="t", id=f"{job_id}:{name}", time=self.at(t + dt)),
            )


@pytest.fixture
async def log(streams: Settings, nc: NATS) -> Log:
    await ensure_tiers_bucket(nc.jetstream(), streams.tiers_bucket)
    return Log(streams, nc)


@pytest.fixture
async def make_store(tmp_path: Any) -> AsyncIterator[Any]:
    """Stores on fresh SQLite files under tmp_path; closed at teardown."""
    stores: list[Store] = []
    names = itertools.count()

    def make(name: str | None = None) -> Store:
        store = Store(f"sqlite+aiosqlite:///{tmp_path / (name or f'db{next(names)}')}.db")
        stores.append(store)
        return store

    yield make
    for s in stores:
        await s.close()


_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session (skips if PostgreSQL is not installed)."""
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql to run these)")
    # Not under pytest's tmp dir: that is private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="jetgrid-pg-"))
    root.chmod(0o711)  # the server's own user must be able to reach its directory
    server = PostgresServer(root / "pg", free_port())
    try:
        server.start()
    except PostgresUnavailable as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL would not start here: {exc}")
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def postgres_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A SQLAlchemy async URL (postgresql+asyncpg) of a new, empty database; dropped after."""
    import asyncpg

    name = f"jetgrid_test_{next(_databases)}"
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield postgres_server.url(name)
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh read-model database URL, once per backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'projections.db'}"
    return str(request.getfixturevalue("postgres_url"))
