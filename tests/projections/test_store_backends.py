"""The read-model databases the projections run on answer through SQLAlchemy async, on SQLite
and on a real PostgreSQL server (the same URL-only switch the projection store makes)."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import create_async_engine

pytestmark = pytest.mark.integration

metadata = MetaData()
checkpoints = Table(
    "checkpoints", metadata,
    Column("projection", String(64), primary_key=True), Column("seq", Integer, nullable=False),
)  # fmt: skip


async def test_a_store_url_takes_a_transaction_and_reads_it_back(store_url: str) -> None:
    engine = create_async_engine(store_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(insert(checkpoints), [{"projection": "jobs", "seq": 42}])
        async with engine.connect() as conn:
            rows = (await conn.execute(select(checkpoints.c.seq))).scalars().all()
        assert rows == [42]
        assert engine.dialect.name == store_url.split("+", 1)[0]
    finally:
        await engine.dispose()
