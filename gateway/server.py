"""Run the gateway app under uvicorn, inside a caller's event loop, with uvicorn's httptools
protocol sending each response in one write (HttpProtocol)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any, TypeVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from jetgrid.coordinator.settings import Settings
from jetgrid.gateway.app import create_app

T = TypeVar("T")


FLUSH_BYTES = 64 * 1024  # pending bytes that are sent at once, without waiting for the step


class JoinedWrites(asyncio.Transport):
    """A connection's transport whose writes within one event-loop step go out as one send.

    uvicorn writes a response's status line and headers, then its body, each straight to the
    socket: two send() calls per request, 7 % of the gateway's CPU per submit-and-wait request
    by py-spy (bench/README-gateway.md). Joined, they are one, sent at the next loop step, or at
    once past FLUSH_BYTES (so a body streamed without a pause still meets the socket's flow
    control); a close or write_eof sends what is pending first, an abort drops it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        chunk = bytes(data)
        self._pending.append(chunk)
        self._size += len(chunk)
        if self._size >= FLUSH_BYTES:  # a body streamed without a pause: let flow control see it
            self._flush()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._size = 0
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._size = 0
        self._transport.abort()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._size

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a JoinedWrites transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn narrows BaseTransport to Transport
        super().connection_made(JoinedWrites(transport))


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]  # uvicorn's is a generator context manager
        return contextlib.nullcontext()


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """The gateway's uvicorn settings (also what bench/gateway.py serves its bare app with):
    uvicorn's httptools (C) protocol, writing each response in one send (HttpProtocol); no
    access log unless the log level is debug."""
    return uvicorn.Config(
        app,
        http=HttpProtocol,
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


def make_server(settings: Settings) -> EmbeddedServer:
    return EmbeddedServer(uvicorn_config(create_app(settings), settings))


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
