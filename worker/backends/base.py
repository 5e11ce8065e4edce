"""The interface every backend implements (echo, ollama, openai, python functions)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from jetgrid.events import JobSubmitted
from jetgrid.events.workers import ModelInfo
from jetgrid.worker.errors import BackendError, PermanentError

T = TypeVar("T")

log = logging.getLogger("jetgrid.worker")

TokenSink = Callable[[str], Awaitable[None]]


async def _discard(_: str) -> None:
    return None


@dataclass
class RunContext:
    """What a running job may use: a sink for streamed tokens, the cancel signal, its trace."""

    worker_id: str
    attempt: int
    emit: TokenSink = _discard
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    # The W3C traceparent the backend's own calls should carry (worker.tracing); None: none.
    traceparent: str | None = None


@dataclass(frozen=True)
class Result:
    output: Any
    usage: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """Runs one job. Raise TransientError or PermanentError (worker.errors) to fail it."""

    name: str

    def serves(self, model: str) -> bool: ...

    async def run(self, job: JobSubmitted, ctx: RunContext) -> Result: ...

    async def close(self) -> None: ...


async def cancellable(call: Coroutine[Any, Any, T], ctx: RunContext, where: str) -> T:
    """Await `call` unless the job is cancelled first (`ctx.cancelled` set, or this task
    cancelled): then `call` is cancelled, which closes its HTTP stream so the server stops
    generating, and PermanentError(error_type="cancelled") is raised."""
    work = asyncio.ensure_future(call)
    cancel = asyncio.ensure_future(ctx.cancelled.wait())
    try:
        done, _ = await asyncio.wait({work, cancel}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        cancel.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
    if work not in done or work.cancelled():
        raise PermanentError(f"cancelled while running on {where}", error_type="cancelled")
    return work.result()


class HealthWatch:
    """What a backend that watches its server shares: `healthy`, `last_error`, and the loop
    that refreshes the server's state every `refresh_s` while it answers and probes it every
    `probe_s` while it does not (a failed call wakes the loop at once: `unhealthy`). The
    backend calls `watching` from its constructor and implements `refresh`; `server` names it
    in log lines; `loaded` and `available` are what its last inventory found."""

    def watching(self, server: str, refresh_s: float, probe_s: float) -> None:
        """Start the shared state: healthy, nothing known yet, no watch running."""
        self.server, self.refresh_s, self.probe_s = server, refresh_s, probe_s
        self.healthy = True
        self.last_error: str | None = None
        self.loaded: list[ModelInfo] = []
        self.available: list[ModelInfo] = []
        self.refreshed = asyncio.Event()  # set after every successful inventory
        self._watch: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def accepting(self) -> bool:
        """False while the server is unreachable, overloaded or refuses the worker: the worker
        pulls nothing then."""
        return self.healthy

    async def refresh(self) -> bool:
        raise NotImplementedError

    async def watch_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), self.refresh_s if self.healthy else self.probe_s
                )
            self._wake.clear()  # a wake-up during the refresh below is kept for the next round
            await self.refresh()

    def unhealthy(self, err: BackendError) -> None:
        if self.healthy:
            log.warning("%s not usable, pausing pulls: %s", self.server, err)
            self._wake.set()  # start probing now (then every probe_s until it answers)
        self.healthy = False
        self.last_error = str(err)
