"""Run the gateway app under uvicorn, inside a caller's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn

from jetgrid.coordinator.settings import Settings
from jetgrid.gateway.app import create_app

if TYPE_CHECKING:
    from starlette.applications import Starlette

T = TypeVar("T")


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]  # uvicorn's is a generator context manager
        return contextlib.nullcontext()


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """The gateway's uvicorn settings (also what bench/gateway.py serves its bare app with):
    uvicorn's default HTTP parser, httptools (C) when installed, else h11; no access log unless
    the log level is debug."""
    return uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level="warning" if settings.log_level != "debug" else "info",
        access_log=settings.log_level == "debug",
        lifespan="on",
    )


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run the gateway's top coroutine in a new asyncio event loop, as `jetgrid gateway` does
    (uvloop was measured: no gain in the gateway's CPU per request, bench/README-gateway.md)."""
    return asyncio.run(main)


def make_server(settings: Settings, app: Starlette | None = None) -> EmbeddedServer:
    """The gateway app (`app`, or a new one) under the gateway's uvicorn settings."""
    return EmbeddedServer(uvicorn_config(app or create_app(settings), settings))


STARTUP_TIMEOUT_S = 15.0


async def wait_started(server: EmbeddedServer, task: asyncio.Task[None]) -> int:
    """Wait until `server` (running as `task`) listens and return its port; if it stopped
    instead, raise what stopped it."""
    # uvicorn exposes `started` as a flag, not an event, so poll it, bounded.
    async with asyncio.timeout(STARTUP_TIMEOUT_S):
        while not server.started and not task.done():  # noqa: ASYNC110 (a flag, not an event)
            await asyncio.sleep(0.025)
    if task.done():
        task.result()
        raise RuntimeError("the gateway stopped before it started listening")
    return int(server.servers[0].sockets[0].getsockname()[1])


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """The gateway under uvicorn in this event loop; yields its base URL, stops on exit.
    `gateway_port=0` picks a free port."""
    server = make_server(settings)
    task = asyncio.create_task(server.serve())
    try:
        port = await wait_started(server, task)
        yield f"http://{settings.gateway_host}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
