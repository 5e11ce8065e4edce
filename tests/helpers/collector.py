"""Messages of one NATS subject, collected as they arrive, with a wait on a condition over them."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.client import Client as NATS


class Collector(list):  # type: ignore[type-arg]
    """Messages of one subject, parsed; `wait_for` blocks until a condition over them holds."""

    def __init__(self, parse: Any) -> None:
        super().__init__()
        self.parse = parse
        self.changed = asyncio.Event()

    async def cb(self, msg: Any) -> None:
        self.append(self.parse(msg.data))
        self.changed.set()

    async def wait_for(self, condition: Any, timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)


async def collect(nc: NATS, subject: str, parse: Any) -> Collector:
    """Subscribe to `subject`; what arrives is parsed with `parse` into the returned list."""
    c = Collector(parse)
    await nc.subscribe(subject, cb=c.cb)
    return c
