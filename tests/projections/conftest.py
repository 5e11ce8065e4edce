"""Read-model stores for the projections' tests: SQLite always, PostgreSQL where it is installed.

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
from pathlib import Path

import pytest

from jetgrid.natsserver import free_port
from jetgrid.pgserver import PostgresServer, PostgresUnavailable, postgres_bindir

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
