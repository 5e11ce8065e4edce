"""The same store on PostgreSQL: a throwaway server (Debian's PostgreSQL binaries, started once
per session by the `postgres_server` fixture; skipped, saying why, where they are missing), a
fresh database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from jetgrid.events import WORKERS
from jetgrid.projections.replay import replay
from jetgrid.projections.runner import Projector
from jetgrid.projections.store import Store
from jetgrid.projections.views import tiers_view, workers_out

pytestmark = pytest.mark.integration


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[Store]:
    store = Store(postgres_url)
    yield store
    await store.close()


async def test_postgres_gives_the_sqlite_digest_live_and_replayed(
    log, nc, bus, make_store, pg_store
) -> None:
    for w in range(3):
        await log.register(f"w{w}")
        await log.pings(f"w{w}", 1, 130, miss=set(range(2, 130, 4 + 5 * w)))
    for j in range(6):
        await log.job(f"j{j}", f"w{j % 3}", 5 + j, "failed" if j == 2 else "completed")
    on_sqlite = await replay(log.settings, make_store(), bus)
    live = Projector(log.settings, pg_store, bus, batch_max=50)
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
