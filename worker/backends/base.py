"""The interface every backend implements (echo, ollama, python functions)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from jetgrid.events import JobSubmitted

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
