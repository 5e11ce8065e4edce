"""A worker's tenant queues in a fair-share pool: the I/O around coordinator.share.

Which queues of the worker's pool exist, and which got new jobs, is read from the JOBS stream's
per-subject message counts (one stream info filtered to ``<p>.jobs.<pool>.>``, covering the
shared queues and every tenant's at every priority), read afresh by every sweep that has free
slots, so the tenant a freed slot goes to is chosen from what the queues hold at that moment
(at most every `refresh_s`, which only bounds a burst of sweeps). JOBS keeps
Limits retention, so a count is every submission the stream still stores on that subject, taken
or not: a queue counts as holding jobs until a no-wait pull on it comes back short, and again
once its count changes or `recheck_s` later (a retried job becomes available again after its
backoff without any new submission). A tenant queue of one of the worker's models gets its
durable consumer (created if missing; coordinator.consumers) and a Puller the first time the
worker sees it.
Queues that got jobs in the last `recent_s` are the ones an idle worker long-polls, except the
affinity lanes it does not own (coordinator.share: a lane is the worker's for `ttl_s` after it
took a job from it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.consumers import ConsumerSpec, pool_consumer
from jetgrid.coordinator.pools import PoolConfig
from jetgrid.coordinator.settings import Settings
from jetgrid.coordinator.share import Affinity, FairShare, Shares, Tenant, owns_after
from jetgrid.events.errors import InvalidSubject
from jetgrid.worker.puller import Puller

log = logging.getLogger("jetgrid.worker.tenants")

Key = tuple[str, str, Tenant, int | None]  # (model, priority, tenant, lane)
MakePuller = Callable[[str, ConsumerSpec], Awaitable[Puller]]


class TenantQueues:
    """The tenant queues of one worker's (pool, models), found from the stream's counts."""

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        pool: PoolConfig,
        models: Sequence[str],
        fair: FairShare,
        make_puller: MakePuller,
        *,
        max_deliver: int,
        affinity: Affinity | None = None,
        refresh_s: float = 0.01,
        recheck_s: float = 0.25,
        recent_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.pool = pool
        self.models = frozenset(models)
        self.fair = fair
        self.make_puller = make_puller
        self.max_deliver = max_deliver
        self.affinity = affinity
        self.owned: dict[Key, float] = {}  # lane -> when this worker last took a job from it
        self.stealing: dict[Key, bool] = {}  # lane -> whether this sweep takes it past the wait
        self._steals: dict[Key, int] = {}  # lane -> jobs taken past the wait since it was owned
        self.refresh_s = refresh_s
        self.recheck_s = recheck_s
        self.recent_s = recent_s
        self.clock = clock
        self._shares: dict[str, Shares] = {}
        self.counts: dict[Key, int] = {}
        self.pullers: dict[Key, Puller] = {}
        self.tenant_of: dict[str, Tenant] = {}  # consumer name -> tenant (None: shared queue)
        self._empty_at: dict[Key, tuple[int, float]] = {}  # queue -> (count, time) found empty
        self._seen: dict[Key, float] = {}  # queue -> when its count last changed or it gave jobs
        self._read_at: float | None = None

    async def refresh(self, *, force: bool = False) -> None:
        """Read the stream's counts for the pool (at most every `refresh_s` unless `force`)."""
        now = self.clock()
        if not force and self._read_at is not None and now - self._read_at < self.refresh_s:
            return
        subjects = self.settings.subjects
        info = await self.bus.call(
            self.bus.js.stream_info(
                self.settings.streams.jobs,
                subjects_filter=f"{subjects.prefix}.jobs.{self.pool.name}.>",
            ),
            "read the queue counts of the JOBS stream",
        )
        self._read_at = now
        counts: dict[Key, int] = {}
        for subject, n in (info.state.subjects or {}).items():
            try:
                _, model, priority, tenant, lane = subjects.parse_submit_lane(subject)
            except InvalidSubject:
                continue
            key = (model, priority, tenant, lane)
            if model in self.models and n:
                counts[key] = int(n)
                if self.counts.get(key) != counts[key]:
                    self._seen[key] = now
        self.counts = counts

    def shares(self, priority: str) -> Shares:
        """This worker's virtual times per tenant in `priority`'s queues."""
        return self._shares.setdefault(priority, Shares())

    def has_jobs(self, key: Key) -> bool:
        """Whether the queue may hold jobs: it stores some, and no pull found it empty at its
        present count in the last `recheck_s`."""
        n = self.counts.get(key, 0)
        mark = self._empty_at.get(key)
        return n > 0 and (mark is None or mark[0] != n or self.clock() - mark[1] >= self.recheck_s)

    def took(self, key: Key, asked: int, got: int) -> None:
        """A no-wait pull on the queue asked for `asked` jobs and got `got`."""
        if got < asked:
            self._empty_at[key] = (self.counts.get(key, 0), self.clock())
        if got > 0:
            self._seen[key] = self.clock()
            if key[3] is not None:
                stolen = self.stealing.get(key, False)
                steals = self._steals[key] = self._steals.get(key, 0) + got if stolen else 0
                if owns_after(stolen=stolen, steals=steals):
                    self.owned[key] = self.clock()

    def owned_at(self, key: Key) -> float | None:
        """When this worker last took a job from the lane `key` (None: never)."""
        return self.owned.get(key)

    def _mine(self, key: Key) -> bool:
        if key[3] is None:
            return True
        at = self.owned.get(key)
        ttl = self.affinity.ttl_s if self.affinity is not None else 0.0
        return at is not None and self.clock() - at < ttl

    async def queues(self, priority: str) -> list[tuple[Puller, Key]]:
        """(puller, key) of every tenant queue of `priority` that may hold jobs, making the
        consumers and pullers of queues seen for the first time."""
        out: list[tuple[Puller, Key]] = []
        for key in sorted(self.counts, key=str):
            model, p, tenant, lane = key
            if p == priority and tenant is not None and self.has_jobs(key):
                out.append((await self._puller(model, p, tenant, lane), key))
        return out

    async def all_pullers(self) -> list[Puller]:
        """A puller for every tenant queue the stream has for the worker's models."""
        for model, p, tenant, lane in list(self.counts):
            if tenant is not None:
                await self._puller(model, p, tenant, lane)
        return list(self.pullers.values())

    def recent(self, priority: str = "normal") -> list[Puller]:
        """Pullers of the tenant queues of `priority` that held jobs in the last `recent_s`
        (of the lanes, only those this worker owns)."""
        now = self.clock()
        return [
            pl
            for key, pl in self.pullers.items()
            if key[1] == priority
            and now - self._seen.get(key, -self.recent_s) < self.recent_s
            and self._mine(key)
        ]

    def recent_tenants(self, priority: str = "normal") -> set[Tenant]:
        """The tenants (None: the shared queue) with a queue of `priority` that held jobs in the
        last `recent_s`."""
        now = self.clock()
        return {
            key[2]
            for key, at in self._seen.items()
            if key[1] == priority and now - at < self.recent_s
        }

    async def _puller(self, model: str, priority: str, tenant: str, lane: int | None) -> Puller:
        key = (model, priority, tenant, lane)
        puller = self.pullers.get(key)
        if puller is None:
            spec = pool_consumer(
                self.settings.subjects,
                self.settings.streams.jobs,
                self.pool.name,
                model,
                ack_wait_s=self.pool.ack_wait_s,
                max_deliver=self.max_deliver,
                max_ack_pending=self.pool.max_ack_pending,
                priority=priority,
                tenant=tenant,
                lane=lane,
            )
            puller = await self.make_puller(model, spec)
            self.pullers[key] = puller
            self.tenant_of[spec.name] = tenant
            log.info("tenant queue %s: consumer %s", tenant, spec.name)
        return puller
