"""Fixtures of the delivery tests: subprocesses to clean up, a server of a test's own, a cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest


@pytest.fixture
async def procs() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Subprocesses a test starts; any still running at teardown are killed."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for p in started:
        if p.returncode is None:
            p.kill()
            await p.wait()


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
