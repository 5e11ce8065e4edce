"""`jetgrid up` announces itself only once every part is connected."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from jetgrid import embedded
from jetgrid.coordinator.settings import Settings
from jetgrid.natsserver import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_up_says_it_is_up_only_after_every_worker_is_registered(tmp_path, monkeypatch):
    """A worker slow to connect holds the announcement back: were NATS to restart just after
    it, the worker would be reconnecting, not failing its first connect and stopping `up`."""
    made: list[embedded.Worker] = []

    class SlowToConnect(embedded.Worker):
        async def run(self) -> None:
            made.append(self)
            await asyncio.sleep(0.5)  # stands in for a connect that takes a while
            await super().run()

    monkeypatch.setattr(embedded, "Worker", SlowToConnect)
    ready_when_up: list[list[bool]] = []
    said: list[str] = []

    def echo(text: str) -> None:
        said.append(text)
        if text.startswith("jetgrid is up"):
            ready_when_up.append([w.ready.is_set() for w in made])

    def on_ready() -> None:  # where `jetgrid up` settles its heap
        said.append("on_ready")
        os.kill(os.getpid(), signal.SIGTERM)  # run_up's own handler: a clean stop

    settings = Settings(data_dir=tmp_path, gateway_port=free_port(), nats_port=free_port())
    up = embedded.run_up(settings, embedded.UpOptions(auth=False), echo, on_ready)
    await asyncio.wait_for(up, 60)
    assert ready_when_up == [[True, True]]
    announced = next(i for i, text in enumerate(said) if text.startswith("jetgrid is up"))
    assert said.count("on_ready") == 1 and said.index("on_ready") > announced
