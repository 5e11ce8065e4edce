"""Fixtures of the gateway tests: a gateway with chosen settings, and waiting on conditions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from jetgrid.coordinator.settings import Settings


def serve(settings: Settings) -> contextlib.AbstractAsyncContextManager[str]:
    """A gateway under uvicorn on a free port; yields its base URL."""
    from jetgrid.gateway.server import serving

    return serving(settings.replace(gateway_port=0))


@pytest.fixture
def serve_gateway() -> Callable[[Settings], Any]:
    return serve


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    """Poll `check` until it returns something truthy (a condition, not a timed assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {check}")
        await asyncio.sleep(0.05)


async def wait_model(base: str, model: str = "echo", headers: dict[str, str] | None = None) -> None:
    """Wait until the gateway's fleet lists `model` as served by a live worker."""
    async with httpx.AsyncClient(base_url=base, headers=headers) as http:

        async def listed() -> bool:
            tags = (await http.get("/api/tags")).json()
            return any(m["name"] == model for m in tags["models"])

        await eventually(listed)


@pytest.fixture(name="eventually")
def eventually_fixture() -> Callable[..., Awaitable[Any]]:
    return eventually


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
