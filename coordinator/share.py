"""Fair share between tenants and cache affinity: which queues a worker takes its next jobs
from. Pure rules.

In a fair-share pool every tenant has its own queue per (model, priority): the subject
``<p>.jobs.<pool>.<model>.<priority>.<tenant>`` and a durable consumer on it, created on demand
by the workers (coordinator.consumers). A submission without a tenant token waits in the pool's
shared queue, which counts as one more tenant (``None``, the default tenant). The tenant of a
job is its submitter: an API key's name at the gateway, or the tenant token a NATS publisher
uses (its permissions hold a NATS user to its own name).

A worker with free slots splits them among the queues that hold jobs, highest priority first
(worker.pulling), by weighted fair queueing: each tenant has a virtual time that grows by
``1 / weight`` for every job the worker takes from it, and the next slot goes to the tenant with
the smallest virtual time (plus what this round already gave it). A tenant that comes back
after an idle spell starts at the smallest virtual time of the tenants that stayed busy, so
idleness banks no credit; a flood therefore gets the slots the others leave, never theirs.
Each worker decides alone from its own takes and what JetStream says the queues hold; no
coordinator is involved, and since every worker favours the tenant it served least, the
fleet's shares follow the weights too.

Weights are per pool, in the pools file (unknown pool keys land in ``PoolConfig.extra``)::

    [[pool]]
    name = "standard"
    fair_share = true                          # tenant queues for this pool
    tenant_weights = { batch = 0.25, ci = 2 }  # default 1 (the shared queue: 1 too)
    affinity_lanes = 16                        # cache affinity (below); 0: off
    affinity_wait_s = 0.5                      # then any worker may take a lane's job
    affinity_ttl_s = 300                       # a worker keeps a lane this long after a take
    reserve_slots = 1                          # headroom (below); 0: off

Headroom, in a fair-share pool with ``reserve_slots = R``: each worker keeps R of its slots
free (or asked for by a tenant under its share) for the tenants under their weighted share of
its jobs (`headroom`); a tenant over its share takes a slot only beyond those. A small tenant's
job so meets a free slot instead of waiting for one to free. Shares count the tenants that run,
ask or wait, weighted: ``jobs[t] / total < weight[t] / sum(weights)`` is under. A tenant alone
with work is at its share, never under it, so its throughput is capped at ``(concurrency - R) /
concurrency`` of the worker's: the cost of the headroom. A worker keeps at most ``concurrency -
1`` slots in reserve.

Cache affinity, in a fair-share pool with ``affinity_lanes``: a job's affinity key is its
session key, or else, for a chat, a hash of its system messages and its first other message
(what every turn of one conversation starts with). The key picks one of the lanes of the job's
tenant queue (``<...>.<priority>.<tenant>.<lane>``, each with its own consumer). A worker that
took a job from a lane in the last ``affinity_ttl_s`` owns it: it asks for the lane's jobs at
once (and long-polls it when idle). Any other worker asks for them only once the oldest job
waiting there has waited ``affinity_wait_s``, so a busy, gone or unknown owner strands nothing,
and a worker that so takes ``STEALS_TO_OWN`` of a lane's jobs owns it from then on (its owner
is evidently busy or gone; a single late pickup does not make two owners take turns with one
conversation). A lane no worker ever took from has no owner to wait for: its first job goes to
whoever looks first, who owns it. The owner is whoever served the
lane recently: each worker knows which lanes it owns, and no coordinator or shared map exists.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jetgrid.coordinator.pools import PoolConfig

AFFINITY_WAIT_S = 0.5
STEALS_TO_OWN = 2
AFFINITY_TTL_S = 300.0
Tenant = str | None  # None: the pool's shared queue (the default tenant)
Q = TypeVar("Q", bound=Hashable)


@dataclass(frozen=True, slots=True)
class FairShare:
    """A pool's tenant weights (default 1 for any tenant not named)."""

    weights: Mapping[str, float] = field(default_factory=dict)
    default: float = 1.0
    reserve: int = 0  # slots each worker keeps for tenants under their share (`headroom`)

    def weight(self, tenant: Tenant) -> float:
        return self.default if tenant is None else self.weights.get(tenant, self.default)

    @classmethod
    def for_pool(cls, pool: PoolConfig) -> FairShare | None:
        """The pool's fair share (``fair_share``, ``tenant_weights``, ``reserve_slots``), None
        when it has none."""
        extra = pool.extra
        on = extra.get("fair_share", False)
        if not isinstance(on, bool):
            raise ValueError(f"pool {pool.name!r}: fair_share must be true or false, got {on!r}")
        raw = extra.get("tenant_weights", {})
        if not isinstance(raw, Mapping):
            raise ValueError(
                f"pool {pool.name!r}: tenant_weights must be a table of name = weight, got {raw!r}"
            )
        weights: dict[str, float] = {}
        for name, w in raw.items():
            if isinstance(w, bool) or not isinstance(w, int | float) or not w > 0:
                raise ValueError(
                    f"pool {pool.name!r}: tenant_weights.{name} must be a number > 0, got {w!r}"
                )
            weights[str(name)] = float(w)
        if weights and not on:
            raise ValueError(
                f"pool {pool.name!r} sets tenant_weights without fair_share = true; add it."
            )
        reserve = extra.get("reserve_slots", 0)
        if isinstance(reserve, bool) or not isinstance(reserve, int) or not 0 <= reserve <= 1000:
            raise ValueError(
                f"pool {pool.name!r}: reserve_slots must be a whole number 0-1000, got {reserve!r}"
            )
        if reserve and not on:
            raise ValueError(
                f"pool {pool.name!r} sets reserve_slots without fair_share = true; add it."
            )
        return cls(weights, reserve=reserve) if on else None


@dataclass(slots=True)
class Shares:
    """One worker's virtual times per tenant, which tenants held jobs last time it looked, and
    the order it last took from each (`served`: a tenant's number of the latest take)."""

    vt: dict[Tenant, float] = field(default_factory=dict)
    busy: frozenset[Tenant] = frozenset()
    served: dict[Tenant, int] = field(default_factory=dict)
    takes: int = 0

    def wake(self, active: set[Tenant]) -> None:
        """Tenants in `active` that were not busy start at the smallest virtual time of those
        that stayed busy (or of all known ones), never below their own: no banked credit."""
        stayed = [self.vt[t] for t in active & self.busy if t in self.vt]
        floor = min(stayed) if stayed else max(self.vt.values(), default=0.0)
        for t in active - self.busy:
            self.vt[t] = max(self.vt.get(t, floor), floor)
        self.busy = frozenset(active)

    def charge(self, tenant: Tenant, jobs: int, weight: float) -> None:
        """The worker took `jobs` from `tenant`."""
        if jobs > 0:
            self.vt[tenant] = self.vt.get(tenant, 0.0) + jobs / weight
            self.takes += 1
            self.served[tenant] = self.takes


def _key(t: Tenant) -> tuple[int, str]:
    return (0, "") if t is None else (1, t)


def allocate(
    free: int,
    pending: Mapping[Q, int],
    tenant_of: Callable[[Q], Tenant],
    fair: FairShare,
    shares: Shares,
) -> dict[Q, int]:
    """How many of `free` slots to ask each queue for: one slot at a time to the tenant with
    the smallest virtual time (counting this round's slots), among tenants whose queues hold
    more jobs than it already got; within a tenant, to its queue with the most jobs left
    (first listed on ties). Queues with nothing pending get nothing; slots beyond every
    queue's pending stay unused. Ties between tenants go to the one served least recently (a
    tenant back from idle, level with a flood, goes first), then the shared queue, then by
    name."""
    left = {q: n for q, n in pending.items() if n > 0}
    out: dict[Q, int] = {}
    given: dict[Tenant, int] = {}
    vt = shares.vt
    for _ in range(max(0, free)):
        if not left:
            break
        tenants = {tenant_of(q) for q in left}
        t = min(
            tenants,
            key=lambda t: (
                vt.get(t, 0.0) + given.get(t, 0) / fair.weight(t),
                shares.served.get(t, 0),
                _key(t),
            ),
        )
        q = max((q for q in left if tenant_of(q) == t), key=lambda q: left[q])
        out[q] = out.get(q, 0) + 1
        given[t] = given.get(t, 0) + 1
        left[q] -= 1
        if left[q] <= 0:
            del left[q]
    return out


@dataclass(frozen=True, slots=True)
class Headroom:
    """How a worker's free slots split: `open` any tenant may take, `reserved` only the tenants
    in `under` (those under their weighted share)."""

    open: int
    reserved: int
    under: frozenset[Tenant]


def headroom(
    free: int,
    held: Mapping[Tenant, int],
    asked: Mapping[Tenant, int],
    waiting: Iterable[Tenant],
    fair: FairShare,
    concurrency: int,
) -> Headroom:
    """Split `free` slots of a worker with `concurrency` slots, given its jobs per tenant
    (`held`), its open requests per tenant (`asked`) and the tenants with jobs `waiting`. A
    tenant is under its share when ``n[t] * sum(weights) < weight(t) * total`` (n: held plus
    asked) over the tenants that run, ask or wait. The worker keeps ``reserve`` slots (at most
    ``concurrency - 1``) free or asked for by tenants under their share: only what `free` holds
    beyond that is open to every tenant, the rest is for those under their share."""
    free = max(0, free)
    n = {t: max(0, held.get(t, 0)) + max(0, asked.get(t, 0)) for t in {*held, *asked, *waiting}}
    tenants = {t for t, k in n.items() if k > 0} | set(waiting)
    total = sum(n[t] for t in tenants)
    weights = sum(fair.weight(t) for t in tenants)
    under = frozenset(t for t in tenants if n[t] * weights < fair.weight(t) * total)
    reserve = max(0, min(fair.reserve, concurrency - 1))
    kept = free + sum(max(0, asked.get(t, 0)) for t in under)
    open_ = max(0, min(free, kept - reserve))
    return Headroom(open_, free - open_, under)


def queue_tenant(pool: PoolConfig, submitter: str | None) -> str | None:
    """The tenant queue a submission goes to: its submitter's in a fair-share pool, None (the
    pool's shared queue) otherwise."""
    return submitter if submitter and FairShare.for_pool(pool) is not None else None


@dataclass(frozen=True, slots=True)
class Affinity:
    """A pool's affinity lanes: how many, how long others wait, how long an owner keeps one."""

    lanes: int = 16
    wait_s: float = AFFINITY_WAIT_S
    ttl_s: float = AFFINITY_TTL_S

    @classmethod
    def for_pool(cls, pool: PoolConfig) -> Affinity | None:
        """The pool's affinity (``affinity_lanes``, ``affinity_wait_s``, ``affinity_ttl_s``),
        None when it has no lanes."""
        extra = pool.extra
        lanes, wait, ttl = (
            extra.get("affinity_lanes", 0),
            extra.get("affinity_wait_s", AFFINITY_WAIT_S),
            extra.get("affinity_ttl_s", AFFINITY_TTL_S),
        )
        if isinstance(lanes, bool) or not isinstance(lanes, int) or not 0 <= lanes <= 1000:
            raise ValueError(f"pool {pool.name!r}: affinity_lanes must be 0-1000, got {lanes!r}")
        for name, v in (("affinity_wait_s", wait), ("affinity_ttl_s", ttl)):
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ValueError(f"pool {pool.name!r}: {name} must be a number >= 0, got {v!r}")
        if lanes and not extra.get("fair_share", False):
            raise ValueError(
                f"pool {pool.name!r} sets affinity_lanes without fair_share = true; add it "
                "(lanes are parts of the tenant queues)."
            )
        return cls(lanes, float(wait), float(ttl)) if lanes else None


def affinity_key(
    *, session: str | None, kind: str, input: Mapping[str, Any] | None = None
) -> str | None:
    """The job's affinity key: ``session:<key>``, else for a chat ``prefix:<sha256>`` of its
    system messages and first other message (the start every turn of the conversation
    shares, the first turn included), else None."""
    if session:
        return f"session:{session}"
    messages = (input or {}).get("messages") if kind == "chat" else None
    if not isinstance(messages, list):
        return None
    head: list[Any] = []
    for m in messages:
        head.append(m)
        if not (isinstance(m, Mapping) and m.get("role") == "system"):
            break
    if not head or (isinstance(head[-1], Mapping) and head[-1].get("role") == "system"):
        return None  # system messages only: no conversation yet
    lead = [
        {"role": m.get("role"), "content": m.get("content")} if isinstance(m, Mapping) else m
        for m in head
    ]
    raw = json.dumps(lead, sort_keys=True, separators=(",", ":"), default=str)
    return "prefix:" + hashlib.sha256(raw.encode()).hexdigest()


def lane_of(key: str, lanes: int) -> int:
    """The lane (0 .. lanes-1) an affinity key hashes to."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % lanes


def queue_lane(
    pool: PoolConfig, tenant: str | None, *, session: str | None, kind: str,
    input: Mapping[str, Any] | None = None,
) -> int | None:  # fmt: skip
    """The lane a submission goes to in its tenant queue (None: the queue itself)."""
    if tenant is None:
        return None
    aff = Affinity.for_pool(pool)
    if aff is None:
        return None
    key = affinity_key(session=session, kind=kind, input=input)
    return None if key is None else lane_of(key, aff.lanes)


def may_take_lane(
    aff: Affinity,
    *,
    owned_at: float | None,
    now: float,
    oldest_wait_s: float | None,
    ever_taken: bool = True,
) -> bool:
    """Whether a worker asks a lane for jobs now: it owns the lane (took from it in the last
    ``ttl_s``), or a job waits there and either no worker ever took from the lane (nobody
    owns it) or the oldest has waited ``wait_s``."""
    if owned_at is not None and now - owned_at < aff.ttl_s:
        return True
    if oldest_wait_s is None:
        return False
    return not ever_taken or oldest_wait_s >= aff.wait_s


def owns_after(*, stolen: bool, steals: int) -> bool:
    """Whether a take makes the worker the lane's owner: a take as owner or from a lane nobody
    ever took from does; a take past the wait does once it is the worker's `STEALS_TO_OWN`-th
    (`steals` counts them, this one included)."""
    return not stolen or steals >= STEALS_TO_OWN
