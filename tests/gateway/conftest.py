"""Fixtures of the gateway tests: a gateway with chosen settings, and waiting on conditions."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from jetgrid.coordinator.settings import Settings
from tests.helpers import until


@contextlib.asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The gateway app in this process, started, with a client bound to it: (its lifespan
    state, jetgrid.gateway.app.Gateway, whose clock a test may move; the client)."""
    from jetgrid.gateway.app import create_app

    app = create_app(settings)
    gw = app.state.gateway
    await gw.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            yield gw, http
    finally:
        await gw.stop()


def serve(settings: Settings) -> contextlib.AbstractAsyncContextManager[str]:
    """A gateway under uvicorn on a free port; yields its base URL."""
    from jetgrid.gateway.server import serving

    return serving(settings.replace(gateway_port=0))


@pytest.fixture
def serve_gateway() -> Callable[[Settings], Any]:
    return serve


async def wait_model(base: str, model: str = "echo", headers: dict[str, str] | None = None) -> None:
    """Wait until the gateway's fleet lists `model` as served by a live worker."""
    async with httpx.AsyncClient(base_url=base, headers=headers) as http:

        async def listed() -> bool:
            tags = (await http.get("/api/tags")).json()
            return any(m["name"] == model for m in tags["models"])

        await until(listed, timeout=15)


@pytest.fixture
async def echo_gateway(
    gateway: str, start_worker: Callable[..., Awaitable[Any]]
) -> AsyncIterator[str]:
    """The gateway with one echo worker serving `echo` that it already lists as live."""
    await start_worker(concurrency=4)
    await wait_model(gateway)
    yield gateway


@pytest.fixture(name="wait_model")
def wait_model_fixture() -> Callable[..., Awaitable[None]]:
    return wait_model
