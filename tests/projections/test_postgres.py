"""The same store on PostgreSQL: runs when JETGRID_TEST_POSTGRES_URL names a server, e.g.
``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres`` (each test makes its own database)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from events import WORKERS
from projections.runner import Projector, replay
from projections.store import Store
from projections.views import tiers_view, workers_out

PG = os.environ.get("JETGRID_TEST_POSTGRES_URL")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not PG, reason="set JETGRID_TEST_POSTGRES_URL to run against PostgreSQL"),
]


@pytest.fixture
async def pg_store() -> AsyncIterator[Store]:
    assert PG is not None
    name = f"jetgrid_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(PG, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    store = Store(make_url(PG).set(database=name).render_as_string(hide_password=False))
    yield store
    await store.close()
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE "{name}"'))
    await admin.dispose()


async def test_postgres_gives_the_sqlite_digest_live_and_replayed(
    log, nc, make_store, pg_store
) -> None:
    for w in range(3):
        await log.register(f"w{w}")
        await log.pings(f"w{w}", 1, 130, miss=set(range(2, 130, 4 + 5 * w)))
    for j in range(6):
        await log.job(f"j{j}", f"w{j % 3}", 5 + j, "failed" if j == 2 else "completed")
    on_sqlite = await replay(log.settings, make_store(), nc)
    live = Projector(log.settings, pg_store, nc, batch_max=50)
    await live.start()
    try:
        await live.wait_caught_up()
    finally:
        await live.stop()
    assert await pg_store.digest() == on_sqlite.digest
    assert (await pg_store.positions())[WORKERS] == on_sqlite.positions[WORKERS]
    workers = await workers_out(pg_store)
    assert {w["id"] for w in workers} == {"w0", "w1", "w2"}
    assert sum(w["jobs"]["completed"] for w in workers) == 5
    assert "probation" in (await tiers_view(pg_store))["tiers"]
