"""Long-running commands leave their start-up heap out of the cyclic collector's scans once
their service is ready (`settle_heap`), and still collect the garbage they make afterwards.

The commands run in this process (click's runner, real nats-server, real port) because the
collector's state can be read only from inside; each test unfreezes what it froze."""

from __future__ import annotations

import gc
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from jetgrid.cli import main
from jetgrid.cli.shared import settle_heap
from jetgrid.natsserver import NatsServer, free_port

pytestmark = [pytest.mark.integration]


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()


def test_a_settled_heap_still_collects_what_is_made_after(unfrozen: None) -> None:
    class Node:
        other: Node

    settle_heap()
    assert gc.get_freeze_count() > 0
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle only the cyclic collector frees
    del a, b
    assert gc.collect() >= 2


def _env(nats_server: NatsServer, n: str) -> dict[str, str]:
    return {
        "JETGRID_NATS_URL": nats_server.url,
        "JETGRID_SUBJECT_PREFIX": f"heap{n}",
        "JETGRID_STREAM_PREFIX": f"HEAP{n}_",
    }


def test_a_worker_settles_its_heap_once_registered(nats_server: NatsServer, unfrozen: None) -> None:
    env = _env(nats_server, "w")
    runner = CliRunner()
    assert runner.invoke(main, ["provision"], env=env).exit_code == 0
    result = runner.invoke(
        main,
        ["worker", "--pool", "standard", "--model", "echo", "--burst", "--worker-id", "heap-w"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert gc.get_freeze_count() > 0


def test_a_gateway_settles_its_heap_before_it_serves(
    nats_server: NatsServer, unfrozen: None
) -> None:
    env = _env(nats_server, "g")
    runner = CliRunner()
    assert runner.invoke(main, ["provision"], env=env).exit_code == 0
    port = free_port()
    seen: list[bool] = []

    def stop_once_serving() -> None:
        """Once the port answers, note whether the heap is settled and SIGTERM the gateway (its
        own handler stops it). A gateway that never listens has failed and returned: no signal."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                time.sleep(0.05)
                continue
            seen.append(gc.get_freeze_count() > 0)
            os.kill(os.getpid(), signal.SIGTERM)
            return

    stopper = threading.Thread(target=stop_once_serving, daemon=True)
    stopper.start()
    result = runner.invoke(main, ["gateway", "--port", str(port)], env=env)
    stopper.join(5)
    assert result.exit_code == 0, result.output
    assert seen == [True]
