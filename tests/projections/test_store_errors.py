"""The store raises jetgrid errors only: no SQLAlchemy error reaches its callers."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jetgrid.events import ConfigError, JetgridError
from jetgrid.projections.errors import ReadModelError, ReadModelUnavailable
from jetgrid.projections.fold import WORKERS, Changes, FoldConfig
from jetgrid.projections.jobs import JobView
from jetgrid.projections.store import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _changes(job_id: str) -> Changes:
    return Changes([], [JobView(job_id, "queued")], [], [], {WORKERS: 0}, None)


def test_the_error_tree() -> None:
    assert issubclass(ReadModelUnavailable, ReadModelError)
    assert issubclass(ReadModelError, JetgridError)


async def test_a_database_without_read_models_is_unavailable(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    store = Store.reader(url)
    try:
        with pytest.raises(ReadModelUnavailable) as caught:
            await store.worker_rows()
    finally:
        await store.close()
    message = str(caught.value)
    assert repr(url) in message and "no such table" in message
    assert "jetgrid projector" in message


async def test_an_unreachable_server_is_unavailable_and_its_password_not_shown() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = Store.reader(f"postgresql+asyncpg://jetgrid:s3cret@127.0.0.1:{port}/views")
    try:
        with pytest.raises(ReadModelUnavailable) as caught:
            await store.worker_rows()
    finally:
        await store.close()
    assert f"127.0.0.1:{port}/views" in str(caught.value)
    assert "s3cret" not in str(caught.value)


async def test_other_database_failures_are_read_model_errors(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'views.db'}"
    a, b = Store(url), Store(url)
    try:
        await a.open(FoldConfig())
        await a.write(_changes("j1"), lambda tier: None)
        # b does not know j1's row exists, so it inserts it again: a primary-key violation.
        with pytest.raises(ReadModelError, match="while writing a batch of views") as caught:
            await b.write(_changes("j1"), lambda tier: None)
    finally:
        await a.close()
        await b.close()
    assert not isinstance(caught.value, ReadModelUnavailable)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "cannot be used"),
        ("nosuchdb+driver:///x", "cannot be used"),
    ],
)
def test_an_unusable_url_is_a_config_error(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Store(url)


def test_a_reader_on_sqlite_keeps_no_pool(tmp_path: Path) -> None:
    reader = Store.reader(f"sqlite+aiosqlite:///{tmp_path / 'v.db'}")
    assert type(reader.engine.pool).__name__ == "NullPool"
