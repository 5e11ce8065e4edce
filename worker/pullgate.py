"""Which of a worker's consumers it asks for jobs now: the I/O around coordinator.affinity.

Per (pool, model) consumer: nothing while the backend is not accepting (Ollama unreachable or
overloaded); at once when the backend has the model loaded (or knows nothing of loading);
otherwise only when the consumer's backlog says warm capacity is short, read from JetStream
(consumer info plus the first undelivered job's timestamp) at most every `min_interval_s` per
consumer, so an idle cold worker costs the server a few requests a second at most.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from jetgrid.coordinator.affinity import AffinityPolicy, Decision, cold_share, decide, may_pull
from jetgrid.coordinator.backlog import Backlog, read_backlog
from jetgrid.coordinator.bus import Bus

log = logging.getLogger("jetgrid.worker.gate")


class PullGate:
    def __init__(
        self,
        bus: Bus,
        backend: Any,
        policy: AffinityPolicy,
        *,
        min_interval_s: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.backend = backend
        self.policy = policy
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._backlogs: dict[str, tuple[float, Backlog]] = {}
        self.last: dict[str, Decision] = {}

    @property
    def accepting(self) -> bool:
        return bool(getattr(self.backend, "accepting", True))

    def available(self, model: str) -> bool:
        has = getattr(self.backend, "has", None)
        return True if has is None else bool(has(model))

    def warm(self, model: str) -> bool:
        is_warm = getattr(self.backend, "is_warm", None)
        return True if is_warm is None else bool(is_warm(model))

    async def _backlog(self, stream: str, consumer: str, pool: str, model: str) -> Backlog | None:
        now = self.clock()
        cached = self._backlogs.get(consumer)
        if cached and now - cached[0] < self.min_interval_s:
            return cached[1]
        try:
            b = await read_backlog(self.bus, stream, consumer, pool, model)
        except Exception as exc:  # NATS away: hold, and ask again next round
            log.info("backlog of %s unreadable: %s", consumer, exc)
            return None
        self._backlogs[consumer] = (now, b)
        return b

    async def oldest_wait(
        self, stream: str, consumer: str, pool: str, model: str
    ) -> tuple[float | None, bool]:
        """How long the consumer's first undelivered job has waited (None: none waits, or
        unreadable), and whether it ever delivered a job; read at most every `min_interval_s`."""
        b = await self._backlog(stream, consumer, pool, model)
        if b is None or b.oldest_ts is None or b.pending <= 0:
            return None, True
        return max(0.0, self.clock() - b.oldest_ts), b.delivered > 0

    async def decide(self, stream: str, consumer: str, pool: str, model: str) -> int | None:
        """0: do not ask; None: ask for any number; n: ask for at most n."""
        accepting, warm, available = self.accepting, self.warm(model), self.available(model)
        if not accepting or not available or warm:
            d = decide(
                self.policy,
                accepting=accepting,
                warm=warm,
                pending=0,
                oldest_wait_s=None,
                available=available,
            )
            self._note(consumer, d)
            return None if may_pull(d) else 0
        b = await self._backlog(stream, consumer, pool, model)
        if b is None:
            return 0
        wait = None if b.oldest_ts is None else max(0.0, self.clock() - b.oldest_ts)
        d = decide(self.policy, accepting=True, warm=False, pending=b.pending, oldest_wait_s=wait)
        self._note(consumer, d)
        if not may_pull(d):
            return 0
        if d == "cold_backlog":
            return cold_share(self.policy, b.pending)
        return 1  # a job waited too long: take it (one at a time, the load is the cost)

    def _note(self, consumer: str, d: Decision) -> None:
        if self.last.get(consumer) != d:
            log.info("consumer %s: %s", consumer, d)
            self.last[consumer] = d
