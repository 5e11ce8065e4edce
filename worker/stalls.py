"""The stall watchdog: one per running job, in a pool that sets ``stall_after_s``.

`Watchdog.wrap` puts it between the backend and the job's token sink, so every token is
progress; `Watchdog.watch` runs beside the backend call and cancels it once the job has made no
progress for ``stall_after_s`` (coordinator.stalls). `Avoid` remembers the jobs this worker
stalled on, so it hands a quick redelivery of one back instead of running it again. The clock
and the sleep are inputs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from jetgrid.coordinator.stalls import stall_in
from jetgrid.worker.backends.base import TokenSink

__all__ = ["Avoid", "Watchdog"]


class _Watched:
    """A token sink that marks progress, then forwards (and forwards `flush` too)."""

    def __init__(self, sink: TokenSink, dog: Watchdog) -> None:
        self.sink = sink
        self.dog = dog

    async def __call__(self, text: str) -> None:
        self.dog.touch()
        await self.sink(text)

    async def flush(self) -> None:
        flush = getattr(self.sink, "flush", None)
        if flush is not None:
            await flush()


class Watchdog:
    """Cancels a job's backend call after `stall_after_s` without progress; `stalled_s` then
    holds the seconds it went without."""

    def __init__(
        self,
        stall_after_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.stall_after_s = stall_after_s
        self.clock = clock
        self.sleep = sleep
        self.last = clock()
        self.stalled_s: float | None = None

    def touch(self) -> None:
        """The job made progress now."""
        self.last = self.clock()

    def wrap(self, sink: TokenSink) -> TokenSink:
        return _Watched(sink, self)

    async def watch(self, cancel: Callable[[], object]) -> None:
        """Until cancelled (its caller cancels it when the run ends): once the job stalls,
        record it and call `cancel`."""
        while True:
            now = self.clock()
            wait = stall_in(self.last, now, self.stall_after_s)
            if wait <= 0:
                self.stalled_s = now - self.last
                cancel()
                return
            await self.sleep(wait)


class Avoid:
    """Jobs this worker stalled on, each until a monotonic time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.until: dict[str, float] = {}

    def add(self, job_id: str, for_s: float) -> None:
        self.until[job_id] = self.clock() + for_s

    def remaining(self, job_id: str) -> float:
        """Seconds this worker still avoids `job_id` (0: not avoided)."""
        now = self.clock()
        for j in [j for j, t in self.until.items() if t <= now]:  # forget the expired ones
            del self.until[j]
        end = self.until.get(job_id)
        return 0.0 if end is None else end - now
