"""Per pool and model: backlog, oldest waiting job, warm and cold workers, a suggested size.

The computation (`pool_status`) is a pure function of three plain inputs: each pool consumer's
backlog (`Backlog`), each worker's last word (`WorkerView`, folded from its latest
registered/heartbeat/draining/deregistered events by `fold_workers`) and the time. The JetStream
reading that produces them (`read_backlog`, `read_backlogs`, `read_workers`, `read_pool_status`)
sits at the bottom of this module; `jetgrid pools` and the gateway's ``GET /v1/pools`` call
`read_pool_status`, workers call `read_backlog` for their warm/cold decision.

Definitions:

- backlog: jobs on the consumer not yet delivered to any worker (``num_pending``);
  ``running`` is delivered but not yet acked (``num_ack_pending``).
- oldest wait: now minus the stream time of the first job not yet delivered.
- online worker: its last ping is at most ``stale_after`` ping intervals old (default 3) and it
  has not deregistered. A worker is warm for a model its last ping lists as loaded; cold for a
  model it serves but has not loaded. A backend that reports no models at all (echo) counts as
  warm for every model it serves.
- suggested workers: ``ceil((backlog + running) / per_worker)`` where ``per_worker`` is the
  pool's ``scale_jobs_per_worker`` (extra key, default 4), never below the pool's
  ``min_workers`` (default 0), and at least one more than are online when the oldest job has
  waited longer than the pool's ``cold_wait_s``. A scaler reads it as "how many workers this
  model wants now"; it is a signal, not a command.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from jetgrid.coordinator.affinity import AffinityPolicy
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.pools import Pools

DEFAULT_JOBS_PER_WORKER = 4.0
DEFAULT_STALE_AFTER = 3.0


def full_name(model: str) -> str:
    """Ollama's tag rule, so `llama3` and `llama3:latest` count as one model."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


@dataclass(frozen=True, slots=True)
class Backlog:
    """What one (pool, model) consumer holds."""

    pool: str
    model: str
    consumer: str
    pending: int
    running: int = 0
    waiting_pulls: int = 0
    oldest_ts: float | None = None  # epoch seconds of the first undelivered job


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A worker as its latest events describe it."""

    worker_id: str
    pools: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    loaded: tuple[str, ...] = ()
    available: tuple[str, ...] = ()
    last_ping_ts: float | None = None
    interval_s: float = 5.0
    accepting: bool = True
    in_flight: int = 0
    gone: bool = False  # deregistered after its last ping

    def online(self, now: float, stale_after: float = DEFAULT_STALE_AFTER) -> bool:
        if self.gone or self.last_ping_ts is None:
            return False
        return now - self.last_ping_ts <= stale_after * self.interval_s

    def serves(self, pool: str, model: str) -> bool:
        return pool in self.pools and full_name(model) in {full_name(m) for m in self.models}

    def warm_for(self, model: str) -> bool:
        if not self.loaded and not self.available:
            return True  # a backend without models (echo): nothing to load
        return full_name(model) in {full_name(m) for m in self.loaded}


@dataclass(frozen=True, slots=True)
class PoolModelStatus:
    pool: str
    model: str
    backlog: int
    running: int
    oldest_wait_s: float | None
    warm_workers: list[str] = field(default_factory=list)
    cold_workers: list[str] = field(default_factory=list)
    suggested_workers: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _extra_float(extra: dict[str, Any], key: str, default: float) -> float:
    try:
        return float(extra.get(key, default))
    except (TypeError, ValueError):
        return default


def suggested_workers(
    pools: Pools, pool: str, backlog: int, running: int, oldest_wait_s: float | None, online: int
) -> int:
    """The autoscaling signal for one (pool, model); see the module docstring."""
    cfg = pools.get(pool)
    extra = cfg.extra if cfg is not None else {}
    per_worker = max(_extra_float(extra, "scale_jobs_per_worker", DEFAULT_JOBS_PER_WORKER), 1e-9)
    want = math.ceil((backlog + running) / per_worker)
    want = max(want, int(_extra_float(extra, "min_workers", 0)))
    if cfg is not None and backlog > 0 and oldest_wait_s is not None:
        if oldest_wait_s > AffinityPolicy.for_pool(cfg).cold_wait_s:
            want = max(want, online + 1)
    return want


def pool_status(
    pools: Pools,
    backlogs: Iterable[Backlog],
    workers: Iterable[WorkerView],
    now: float,
    *,
    stale_after: float = DEFAULT_STALE_AFTER,
) -> list[PoolModelStatus]:
    """One row per (pool, model) that has a consumer or an online worker, sorted."""
    live = [w for w in workers if w.online(now, stale_after)]
    keys: dict[tuple[str, str], Backlog | None] = {}
    for b in backlogs:
        keys[(b.pool, b.model)] = b
    for w in live:
        for p in w.pools:
            for m in w.models:
                keys.setdefault((p, m), None)
    rows = []
    for (pool, model), b in sorted(keys.items()):
        serving = [w for w in live if w.serves(pool, model)]
        warm = sorted(w.worker_id for w in serving if w.warm_for(model))
        cold = sorted(w.worker_id for w in serving if not w.warm_for(model))
        pending = b.pending if b else 0
        running = b.running if b else 0
        oldest = None
        if b is not None and b.oldest_ts is not None and pending > 0:
            oldest = max(0.0, now - b.oldest_ts)
        rows.append(
            PoolModelStatus(
                pool=pool,
                model=model,
                backlog=pending,
                running=running,
                oldest_wait_s=oldest,
                warm_workers=warm,
                cold_workers=cold,
                suggested_workers=suggested_workers(
                    pools, pool, pending, running, oldest, len(serving)
                ),
            )
        )
    return rows


def fold_workers(events: Iterable[tuple[str, float, Any]]) -> list[WorkerView]:
    """WorkerViews from (event name, event time, event) of each worker's latest events."""
    views: dict[str, dict[str, Any]] = {}
    last_ping: dict[str, float] = {}
    left: dict[str, float] = {}
    for name, ts, ev in sorted(events, key=lambda e: e[1]):
        v = views.setdefault(ev.worker_id, {"worker_id": ev.worker_id})
        if name == "registered":
            v.update(pools=tuple(ev.pools), models=tuple(ev.models))
        elif name == "heartbeat":
            last_ping[ev.worker_id] = ts
            v.update(
                pools=tuple(ev.pools) or v.get("pools", ()),
                models=tuple(ev.models) or v.get("models", ()),
                loaded=tuple(m.name for m in getattr(ev, "models_loaded", [])),
                available=tuple(m.name for m in getattr(ev, "models_available", [])),
                last_ping_ts=ts,
                interval_s=ev.interval_s,
                accepting=ev.accepting,
                in_flight=ev.in_flight,
            )
        elif name == "deregistered":
            left[ev.worker_id] = ts
    out = []
    for wid, v in views.items():
        gone = wid in left and left[wid] >= last_ping.get(wid, float("-inf"))
        out.append(WorkerView(gone=gone, **v))
    return out


# -- reading JetStream (I/O) ------------------------------------------------------------------


async def read_backlog(bus: Bus, stream: str, consumer: str, pool: str, model: str) -> Backlog:
    """One consumer's backlog, with the stream time of its first undelivered job."""
    info = await bus.consumer_info(stream, consumer)
    return await _backlog_from(bus, info, pool, model)


async def _backlog_from(bus: Bus, info: Any, pool: str, model: str) -> Backlog:
    oldest = None
    if info.num_pending:
        first = await bus.message(
            info.stream_name,
            (info.delivered.stream_seq or 0) + 1,
            subject=info.config.filter_subject,
            next=True,
        )
        oldest = None if first is None or first.time is None else first.time.timestamp()
    return Backlog(
        pool=pool,
        model=model,
        consumer=info.name,
        pending=info.num_pending or 0,
        running=info.num_ack_pending or 0,
        waiting_pulls=info.num_waiting or 0,
        oldest_ts=oldest,
    )


async def read_backlogs(bus: Bus, settings: Any) -> list[Backlog]:
    """Every pool consumer (``pool-*``) on the JOBS stream."""
    from jetgrid.events import InvalidSubject

    out = []
    for info in await bus.consumers_info(settings.streams.jobs):
        if not info.name.startswith("pool-") or not info.config.filter_subject:
            continue
        try:
            pool, model = settings.subjects.parse_submit(info.config.filter_subject)
        except InvalidSubject:
            continue
        out.append(await _backlog_from(bus, info, pool, model))
    return merge_priorities(out)


def merge_priorities(backlogs: list[Backlog]) -> list[Backlog]:
    """One row per (pool, model): its high, normal and low consumers added up (the oldest wait
    is the oldest of the three; the consumer named is the normal one)."""
    merged: dict[tuple[str, str], Backlog] = {}
    for b in backlogs:
        key = (b.pool, b.model)
        have = merged.get(key)
        if have is None:
            merged[key] = b
            continue
        oldest = [t for t in (have.oldest_ts, b.oldest_ts) if t is not None]
        merged[key] = Backlog(
            pool=b.pool,
            model=b.model,
            consumer=min(have.consumer, b.consumer, key=len),
            pending=have.pending + b.pending,
            running=have.running + b.running,
            waiting_pulls=have.waiting_pulls + b.waiting_pulls,
            oldest_ts=min(oldest) if oldest else None,
        )
    return list(merged.values())


async def read_workers(bus: Bus, settings: Any) -> list[WorkerView]:
    """Fold the latest event of each kind of every worker (an ephemeral last-per-subject read)."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    from jetgrid.events import InvalidEvent, decode

    sub = await bus.js.pull_subscribe(
        settings.subjects.worker_events(),
        stream=settings.streams.workers,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
        ),
    )
    events = []
    try:
        left = (await sub.consumer_info()).num_pending
        while left > 0:
            msgs = await sub.fetch(min(left, 256), timeout=5)
            left -= len(msgs)
            for m in msgs:
                try:
                    env = decode(m.data)
                except InvalidEvent:
                    continue
                name = m.subject.rsplit(".", 1)[-1]
                events.append((name, env.time.timestamp(), env.event))
    finally:
        try:
            await sub.unsubscribe()
        except Exception:  # the ephemeral consumer goes away on its own after 30 s
            pass
    return fold_workers(events)


async def read_pool_status(bus: Bus, settings: Any, now: float) -> list[PoolModelStatus]:
    """`pool_status` over what JetStream holds now."""
    backlogs = await read_backlogs(bus, settings)
    workers = await read_workers(bus, settings)
    return pool_status(settings.pool_configs(), backlogs, workers, now)
