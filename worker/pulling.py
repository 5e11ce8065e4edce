"""Pull scheduling: when a worker asks its consumers for jobs, which ones, and for how many.

The worker binds one durable consumer per (model, priority) of its pool, creating it if missing
(retried through a NATS failover: coordinator.backoff.FAILOVER), and pulls from each with a
`Puller` (worker.puller). A round sweeps the priorities
highest first with a no-wait request for every free slot (coordinator.delivery.next_pull
decides), and only when a whole sweep found nothing parks a long poll, spread round robin over
the models' normal consumers. Free slots are the tier gate's allowance (worker.tiers.PullGate:
concurrency, tier factor, pull budget) less what the worker holds and what open requests may
still deliver; each consumer is capped by the backend's model affinity (worker.pullgate).
When the tier budget allows nothing, the round reads every consumer's info (at most once per
FALLBACK_READ_S each) for a stall (coordinator.fallback: jobs wait and no other worker has
taken one for the tier's fallback wait) and takes from a stalled one with its free slots, so a
model whose only workers are held back by their tier is still served. Between rounds the
loop waits for a job or a request to end or the tier to change, at most
coordinator.backoff.PULL_ROUND_WAIT_S (a failed round is retried by the next). In burst mode it
returns once the worker holds nothing and every consumer was found empty twice in a row.

In a fair-share pool (coordinator.share) each priority's sweep also covers the tenant queues
that hold jobs (worker.tenants finds them, with their consumers) and splits the free slots among
the shared queue and the tenants' by weighted fair queueing (coordinator.share.allocate); the
long poll spreads over the shared queues and the tenant queues that held jobs lately. With
``reserve_slots`` (coordinator.share.headroom) the slots kept in reserve go, in the sweep and
in the long poll, only to the queues of tenants under their share of the worker's jobs (held
jobs and open requests, counted per tenant as deliveries arrive and end).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from functools import partial

from jetgrid.coordinator.affinity import AffinityPolicy
from jetgrid.coordinator.aio import retrying
from jetgrid.coordinator.allowance import pull_allowance
from jetgrid.coordinator.backoff import FAILOVER, PULL_ROUND_WAIT_S
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.consumers import ConsumerSpec, pool_consumer
from jetgrid.coordinator.delivery import consumer_max_deliver, next_pull
from jetgrid.coordinator.fallback import Stall, fallback_allowance, fallback_wait, observe
from jetgrid.coordinator.pools import PoolConfig
from jetgrid.coordinator.provision import ensure_consumer
from jetgrid.coordinator.settings import Settings
from jetgrid.coordinator.share import (
    Affinity,
    FairShare,
    Headroom,
    Tenant,
    allocate,
    headroom,
    may_take_lane,
)
from jetgrid.coordinator.tiers import load_policy
from jetgrid.events.subjects import PRIORITIES
from jetgrid.worker.backends.base import Backend
from jetgrid.worker.delivery import Delivery
from jetgrid.worker.held import Held
from jetgrid.worker.puller import Puller
from jetgrid.worker.pullgate import PullGate as AffinityGate
from jetgrid.worker.tenants import Key, TenantQueues
from jetgrid.worker.tiers import PullGate

__all__ = ["PullScheduler"]

log = logging.getLogger("jetgrid.worker")


async def _ensure(bus: Bus, spec: ConsumerSpec) -> None:
    await bus.call(ensure_consumer(bus.js, spec), f"use consumer {spec.stream}/{spec.name}")


class PullScheduler:
    """A worker's consumers, pullers and pull loop; `bind`, then `run` until stopped."""

    LONG_POLL_S = 1.0  # an idle worker's long poll; high/low jobs in an idle pool wait <= this
    # In a fair-share pool: a tenant queue no worker has seen yet waits <= this when idle.
    FAIR_LONG_POLL_S = 0.25
    FALLBACK_READ_S = 1.0  # a held-back worker reads each consumer's info at most this often
    # A consumer that a sweep's no-wait request drained is skipped by sweeps for this long: in a
    # busy pool a sweep then costs one request per job taken, not one per priority, and a job
    # arriving at a drained higher priority waits at most this much longer.
    DRAINED_S = 0.05

    def __init__(
        self,
        *,
        settings: Settings,
        pool: PoolConfig,
        models: Sequence[str],
        gate: PullGate,
        held: Held,
        stopping: asyncio.Event,
        wake: asyncio.Event,
    ) -> None:
        self.pool = pool
        self.gate = gate
        self.held = held
        self.stopping = stopping
        self.wake = wake
        self.specs = [
            pool_consumer(
                settings.subjects,
                settings.streams.jobs,
                pool.name,
                m,
                ack_wait_s=pool.ack_wait_s,
                max_deliver=consumer_max_deliver(pool.max_deliver),
                max_ack_pending=pool.max_ack_pending,
                priority=p,
            )
            for m in models
            for p in PRIORITIES
        ]
        self._spec_models = [m for m in models for _ in PRIORITIES]
        self.pullers: list[Puller] = []
        self._by_priority: dict[str, list[Puller]] = {p: [] for p in PRIORITIES}
        self._models: dict[str, str] = {}  # consumer name -> model
        self._affinity: AffinityGate | None = None
        self._rr = 0
        self.policy = load_policy(settings.tier_policy_file, settings.tier_policy)
        self.fallback_wait_s = settings.fallback_wait_s
        self._stalls: dict[str, Stall] = {}  # consumer name -> its stall (coordinator.fallback)
        self._bus: Bus | None = None
        self.settings = settings
        self.fair = FairShare.for_pool(pool)
        self.tenants: TenantQueues | None = None
        self._running: dict[asyncio.Task[None], Tenant] = {}  # held delivery -> its tenant
        self._tenant_of: dict[str, Tenant] = {}  # consumer name -> tenant (None: shared queue)

    def allowance(self) -> int:
        """How many jobs to ask for now: free slots, within the tier's budget."""
        outstanding = sum(p.outstanding for p in self.pullers)
        return self.gate.allowance(len(self.held.tasks), outstanding, len(self.held.finishing))

    async def bind(
        self, bus: Bus, backend: Backend, on_message: Callable[[Delivery], object]
    ) -> None:
        """Make sure each consumer exists (retried through a NATS failover), start its puller
        (messages go to `on_message`), and cap requests by `backend`'s model affinity."""
        for model, spec in zip(self._spec_models, self.specs, strict=True):
            await retrying(partial(_ensure, bus, spec), FAILOVER, f"bind {spec.name}", logger=log)
            self._by_priority[spec.priority].append(
                await self._start_puller(bus, on_message, model, spec)
            )
        self._affinity = AffinityGate(bus, backend, AffinityPolicy.for_pool(self.pool))
        self._bus = bus
        if self.fair is not None:

            async def make(model: str, spec: ConsumerSpec) -> Puller:
                await _ensure(bus, spec)
                return await self._start_puller(bus, on_message, model, spec, spec.tenant)

            self.tenants = TenantQueues(
                bus, self.settings, self.pool, list(dict.fromkeys(self._spec_models)),
                self.fair, make, max_deliver=self.specs[0].max_deliver if self.specs else 1,
                affinity=Affinity.for_pool(self.pool),
            )  # fmt: skip

    async def _start_puller(
        self,
        bus: Bus,
        on_message: Callable[[Delivery], object],
        model: str,
        spec: ConsumerSpec,
        tenant: Tenant = None,
    ) -> Puller:
        running = self._running

        def deliver(msg: Delivery) -> None:
            task = on_message(msg)
            if isinstance(task, asyncio.Task):  # count the job as its tenant's while it is held
                running[task] = tenant
                task.add_done_callback(lambda t: running.pop(t, None))

        puller = Puller(
            bus.nc, spec.stream, spec.name, deliver,
            on_end=self.wake.set,
            expires_s=self.LONG_POLL_S if self.fair is None else self.FAIR_LONG_POLL_S,
        )  # fmt: skip
        await puller.start()
        self.pullers.append(puller)
        self._models[spec.name] = model
        self._tenant_of[spec.name] = tenant
        return puller

    async def run(self, bus: Bus, *, burst: bool) -> None:
        """Pull until the worker stops (in burst mode: until every consumer is empty)."""
        idle_checks = 0
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                await self._round()
            except Exception as exc:  # NATS away: the next round retries
                log.info("pull round failed: %s", exc)
            # asyncio.timeout, not wait_for: no task per round
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.gate.wait_s(PULL_ROUND_WAIT_S)):
                    await self.wake.wait()
            if burst and not self.held.every():
                idle_checks = idle_checks + 1 if await self.consumers_empty(bus) else 0
                if idle_checks >= 2:
                    return

    async def _round(self) -> None:
        """One sweep over the priority consumers (coordinator.delivery.next_pull decides)."""
        swept: list[str] = []
        got_any = False
        while (pull := next_pull(self.allowance(), swept, got_any)) is not None:
            if self.stopping.is_set():
                return
            if pull.wait:
                await self._long_poll(pull.n)
                return
            got_any = await self._take_now(pull.priority) > 0 or got_any
            swept.append(pull.priority)
        if self.allowance() == 0:
            await self._fallback()
        else:
            self._stalls.clear()  # the budget allows pulls again: stalls are measured afresh

    def _free(self) -> int:
        """Free slots, whatever the tier budget and factor say (coordinator.allowance)."""
        return pull_allowance(
            concurrency=self.gate.concurrency,
            busy=len(self.held.tasks),
            outstanding=sum(p.outstanding for p in self.pullers),
            factor=1.0,
            tokens=None,
            finishing=len(self.held.finishing),
        )

    async def _fallback(self) -> int:
        """Held back by the tier budget: take from each consumer that has been stalled for the
        tier's fallback wait (coordinator.fallback); returns how many jobs came."""
        wait = fallback_wait(self.policy, self.gate.tier, self.fallback_wait_s)
        if wait is None or self._bus is None or self._free() <= 0:
            return 0
        got = 0
        for p in self.pullers:
            if self.stopping.is_set() or (free := self._free()) <= 0:
                break
            if p.outstanding:  # deliveries may be on their way: the counts would not match
                continue
            stall = self._stalls.get(p.consumer)
            now = self.gate.clock()
            if stall is None or now - stall.seen >= self.FALLBACK_READ_S:
                info = await self._bus.consumer_info(p.stream, p.consumer)
                now = self.gate.clock()
                stall = observe(
                    stall,
                    now=now,
                    pending=info.num_pending or 0,
                    delivered=(info.delivered.consumer_seq or 0) if info.delivered else 0,
                    own=p.delivered,
                    wait_s=wait,
                )
                self._stalls[p.consumer] = stall
            # Between reads, a stall already past the wait goes on being served (an empty
            # consumer answers the no-wait request at once; the next read sees any other taker).
            n = fallback_allowance(stall, free)
            if n and (cap := await self._cap(p)) != 0:
                got += await p.take_now(n if cap is None else min(n, cap))
        return got

    async def _take_now(self, priority: str) -> int:
        """No-wait requests to this priority's consumers (one per model), while slots are free."""
        if self.tenants is not None:
            return await self._take_fair(priority)
        pullers = self._by_priority[priority]
        got = 0
        for i in range(len(pullers)):
            p = pullers[(self._rr + i) % len(pullers)]
            free = self.allowance()
            if free <= 0:
                break
            if p.long_polling:  # an open long poll already gets this consumer's messages
                continue
            if p.drained_until > p.clock():
                continue
            cap = await self._cap(p)
            if cap != 0:
                ask = free if cap is None else min(free, cap)
                n = await p.take_now(ask)
                if n < ask:
                    p.drained_until = p.clock() + self.DRAINED_S
                got += n
        return got

    async def _take_fair(self, priority: str) -> int:
        """Fair-share pool: split the free slots among this priority's shared and tenant queues
        that may hold jobs (coordinator.share.allocate); a queue that gives fewer than asked is
        empty (worker.tenants) and left out of the rest of the sweep."""
        tenants, fair = self.tenants, self.fair
        assert tenants is not None and fair is not None
        await tenants.refresh()
        live: list[tuple[Puller, Key]] = [
            (p, (self._models[p.consumer], priority, None, None))
            for p in self._by_priority[priority]
        ]
        live += await tenants.queues(priority)
        live = [
            (p, key)
            for p, key in live
            if tenants.has_jobs(key) and not p.long_polling and await self._lane_open(p, key)
        ]
        got, shares = 0, tenants.shares(priority)
        shares.wake({key[2] for _, key in live})
        while live and (free := self.allowance()) > 0:
            asks: dict[str, int] = {}
            for p, _ in live:
                if (cap := await self._cap(p)) != 0:
                    asks[p.consumer] = free if cap is None else min(free, cap)
            tenant_of = {p.consumer: key[2] for p, key in live}
            room = self._headroom(free, {tenant_of[c] for c in asks})
            if room is None:
                plan = allocate(free, asks, tenant_of.__getitem__, fair, shares)
            else:  # reserved slots only for the queues of tenants under their share
                plan = allocate(room.open, asks, tenant_of.__getitem__, fair, shares)
                rest = {
                    c: n - plan.get(c, 0) for c, n in asks.items() if tenant_of[c] in room.under
                }
                more = allocate(room.reserved, rest, tenant_of.__getitem__, fair, shares)
                for c, n in more.items():
                    plan[c] = plan.get(c, 0) + n
            if not plan:
                break
            full = []
            for p, key in live:
                if (n := plan.get(p.consumer, 0)) > 0:
                    k = await p.take_now(n)
                    tenants.took(key, n, k)
                    shares.charge(key[2], k, fair.weight(key[2]))
                    got += k
                    if k == n:
                        full.append((p, key))
                elif p.consumer in asks:
                    full.append((p, key))  # not asked this time: still in the sweep
            live = full
        return got

    async def _lane_open(self, puller: Puller, key: Key) -> bool:
        """Whether this worker may ask an affinity lane for jobs now (coordinator.share:
        its owner at once, others once its oldest job waited the pool's affinity wait); notes
        whether a take would be past the wait (TenantQueues.stealing)."""
        tenants = self.tenants
        aff = tenants.affinity if tenants is not None else None
        if key[3] is None or aff is None or tenants is None:
            return True
        now = tenants.clock()
        owned = tenants.owned_at(key)
        tenants.stealing[key] = False
        if may_take_lane(aff, owned_at=owned, now=now, oldest_wait_s=None):
            return True
        if self._affinity is None:
            return False
        wait, taken = await self._affinity.oldest_wait(
            puller.stream, puller.consumer, self.pool.name, key[0]
        )
        tenants.stealing[key] = taken
        return may_take_lane(aff, owned_at=owned, now=now, oldest_wait_s=wait, ever_taken=taken)

    def _headroom(self, free: int, waiting: set[Tenant]) -> Headroom | None:
        """How the `free` slots split between any tenant and those under their share
        (coordinator.share.headroom), counting held jobs and open requests per tenant; None in
        a pool without reserved slots."""
        fair = self.fair
        if fair is None or fair.reserve <= 0:
            return None
        held: dict[Tenant, int] = {}
        asked: dict[Tenant, int] = {}
        for task, t in self._running.items():
            if task in self.held.tasks:  # holding a slot, not finishing
                held[t] = held.get(t, 0) + 1
        for p in self.pullers:
            if n := p.outstanding:
                t = self._tenant_of.get(p.consumer)
                asked[t] = asked.get(t, 0) + n
        return headroom(free, held, asked, waiting, fair, self.gate.concurrency)

    async def _long_poll(self, free: int) -> None:
        """Spread the free slots over the normal consumers (and the tenant queues that held jobs
        lately), starting where we left off; with reserved slots (coordinator.share.headroom),
        those go only to the queues of tenants under their share that held jobs lately."""
        normal = self._by_priority["normal"]
        if self.tenants is None:
            await self._spread(normal, free)
            return
        normal = normal + self.tenants.recent("normal")
        recent = self.tenants.recent_tenants("normal")
        room = self._headroom(free, {self._tenant_of.get(p.consumer) for p in normal} & recent)
        if room is None:
            await self._spread(normal, free)
            return
        await self._spread(normal, room.open)
        under = [p for p in normal if self._tenant_of.get(p.consumer) in room.under & recent]
        await self._spread(under, room.reserved)

    async def _spread(self, pullers: list[Puller], free: int) -> None:
        """Long-poll `pullers` for `free` jobs in all, round robin from where we left off."""
        if free <= 0:
            return
        plan = [(p, cap) for p in pullers if (cap := await self._cap(p)) != 0]
        n = len(plan)
        if n == 0:
            return
        shares = [free // n + (1 if i < free % n else 0) for i in range(n)]
        for i in range(n):
            p, cap = plan[(self._rr + i) % n]
            await p.request(shares[i] if cap is None else min(shares[i], cap))
        self._rr = (self._rr + 1) % n

    async def _cap(self, puller: Puller) -> int | None:
        """How many jobs this consumer may be asked for now (None: any; 0: none): warm models
        at once, cold ones only when their backlog says so, none while the backend is not
        accepting (worker.pullgate)."""
        if self._affinity is None:
            return None
        model = self._models[puller.consumer]
        pool = self.pool.name
        return await self._affinity.decide(puller.stream, puller.consumer, pool, model)

    async def consumers_empty(self, bus: Bus) -> bool:
        """Burst mode's test: nothing pending or unacked on any of the worker's consumers."""
        names = [spec.name for spec in self.specs]
        if self.tenants is not None:
            await self.tenants.refresh(force=True)
            names += [p.consumer for p in await self.tenants.all_pullers()]
        for name in names:
            info = await bus.consumer_info(self.specs[0].stream, name)
            if info.num_pending or info.num_ack_pending:
                return False
        return True

    async def withdraw(self) -> None:
        """Withdraw every open pull request (the tier factor dropped to 0)."""
        for p in self.pullers:
            await p.withdraw()

    async def stop(self) -> None:
        """Stop every puller (their subscriptions end; nothing more is delivered)."""
        for p in self.pullers:
            await p.stop()
