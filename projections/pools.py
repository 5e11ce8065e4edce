"""Per pool and model: backlog, running, oldest wait, warm and cold workers, a suggested size.

`pool_status(pools, backlogs, workers, now)` is pure: each pool consumer's backlog
(coordinator.backlog.Backlog), each worker's view (projections.workers.WorkerView) and the time.
``GET /v1/pools`` (from the gateway's live fleet) and ``jetgrid pools`` (from `read_pool_status`
below) both call it, and `pools_json` gives the HTTP shape.

Definitions:

- backlog, running, oldest wait: see coordinator.backlog; the oldest wait is ``now`` minus the
  stream time of the first job not yet delivered, None when nothing waits.
- the workers of a (pool, model): live workers (projections.workers.is_live at ``now``: online
  or stale) that serve the pool and the model (``m`` and ``m:latest`` are one model) and whose
  last ping says they accept jobs (a backend that is unreachable or a worker that is stopping
  says it does not; a worker not heard pinging yet is taken at its registration's word).
- warm: a worker whose last ping lists the model as loaded; cold: one that serves it without
  having it loaded. A backend that reports no models at all (echo) is warm for every model it
  serves.
- suggested workers: ``ceil((backlog + running) / per_worker)`` where ``per_worker`` is the
  pool's ``scale_jobs_per_worker`` (extra key, default 4), never below the pool's
  ``min_workers`` (default 0), and at least one more than the pool and model has workers when
  the oldest job has waited longer than the pool's ``cold_wait_s``. A scaler reads it as "how
  many workers this model wants now"; it is a signal, not a command.
- held back: workers of the (pool, model) whose last ping says their tier factor is 0 (they
  take only jobs no one else took within their tier's fallback wait, coordinator.fallback);
  ``held_back_jobs`` is the backlog when every worker of the (pool, model) is held back (those
  jobs wait on the fallback), else 0. ``GET /v1/workers`` says why each one is held back.

- unserved: the jobs of the backlog that no live, accepting worker serves (the whole backlog
  when the row has no warm or cold worker, else 0). A (pool, model) that no pool consumer takes
  (no worker ever served it) gets its backlog from the submissions JOBS holds for it
  (coordinator.backlog.read_stored_submissions: jobs cancelled while waiting there still count).
  ``POST /v1/jobs?queue_unserved=true`` is how such jobs are queued on purpose.

Rows exist for every (pool, model) with a pool consumer, a live worker or stored submissions,
sorted.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from jetgrid.coordinator.affinity import AffinityPolicy
from jetgrid.coordinator.backlog import Backlog, read_backlogs, read_stored_submissions
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.pools import Pools
from jetgrid.coordinator.routing import full_model_name
from jetgrid.coordinator.settings import Settings
from jetgrid.events import Envelope
from jetgrid.projections import workers as wr
from jetgrid.projections.fold import FoldConfig, check_worker_message, fold_config
from jetgrid.projections.workers import WorkerView

__all__ = [
    "DEFAULT_JOBS_PER_WORKER",
    "PoolModelStatus",
    "held_back",
    "pool_status",
    "pools_json",
    "read_pool_status",
    "read_workers",
    "served_within",
    "serves",
    "suggested_workers",
    "warm_for",
]

DEFAULT_JOBS_PER_WORKER = 4.0


def serves(view: WorkerView, pool: str, model: str) -> bool:
    """Whether the worker serves `model` in `pool` (by its registration, or its pings)."""
    return pool in view.pools and full_model_name(model) in {
        full_model_name(m) for m in view.models
    }


def served_within(
    views: Iterable[WorkerView], pool: str, model: str, now: datetime, window_s: float
) -> bool:
    """Whether a worker takes jobs for exactly `model` in `pool` (its pool consumer's subject
    names the model as spelled: ``m`` does not take ``m:latest``'s jobs) and is live at `now` or
    was last heard from within `window_s` seconds of it (restarting or briefly away)."""
    return any(
        pool in v.pools
        and model in v.models
        and (wr.is_live(v, now) or (now - v.last_seen).total_seconds() <= window_s)
        for v in views
    )


def _accepting(view: WorkerView) -> bool:
    return view.last_ping is None or view.last_ping.accepting


def held_back(view: WorkerView) -> bool:
    """Whether the worker's last ping says its tier factor is 0 (it pulls only by fallback)."""
    return view.last_ping is not None and view.last_ping.tier_factor == 0


def warm_for(view: WorkerView, model: str) -> bool:
    """Whether the worker's last ping lists `model` as loaded (always, for a backend that
    reports no models: it has nothing to load)."""
    ping = view.last_ping
    if ping is None or not (ping.models_loaded or ping.models_available):
        return True
    return full_model_name(model) in {full_model_name(m) for m in ping.models_loaded}


@dataclass(frozen=True, slots=True)
class PoolModelStatus:
    """One (pool, model) row; see the module docstring."""

    pool: str
    model: str
    backlog: int
    running: int
    oldest_wait_s: float | None
    warm_workers: list[str] = field(default_factory=list)
    cold_workers: list[str] = field(default_factory=list)
    suggested_workers: int = 0
    consumer: str | None = None  # the (normal-priority) pool consumer; None if none exists yet
    waiting_pulls: int = 0
    held_back_workers: list[str] = field(default_factory=list)
    held_back_jobs: int = 0
    unserved: int = 0  # backlog that no live, accepting worker serves

    def to_json(self) -> dict[str, Any]:
        """The row as ``jetgrid pools --json`` prints it."""
        return asdict(self)

    def consumer_json(self) -> dict[str, Any]:
        """The row as ``GET /v1/pools`` lists it under its pool's ``consumers``."""
        return {
            "pool": self.pool,
            "model": self.model,
            "consumer": self.consumer,
            "backlog": self.backlog,
            "ack_pending": self.running,
            "waiting_pulls": self.waiting_pulls,
            "workers": len(self.warm_workers) + len(self.cold_workers),
            "running": self.running,
            "oldest_wait_s": self.oldest_wait_s,
            "warm_workers": list(self.warm_workers),
            "cold_workers": list(self.cold_workers),
            "suggested_workers": self.suggested_workers,
            "held_back_workers": list(self.held_back_workers),
            "held_back_jobs": self.held_back_jobs,
            "unserved": self.unserved,
        }


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
    now: datetime,
    stored: Mapping[tuple[str, str], int] | None = None,
) -> list[PoolModelStatus]:
    """One row per (pool, model) that has a consumer, a live worker or (in `stored`, the
    submissions JOBS holds per pool and model) waiting jobs, sorted."""
    live = [w for w in workers if wr.is_live(w, now)]
    keys: dict[tuple[str, str], Backlog | None] = {(b.pool, b.model): b for b in backlogs}
    named = {(p, full_model_name(m)) for p, m in keys}
    waiting: dict[tuple[str, str], int] = {}  # (pool, full model), no consumer -> stored
    for (p, m), n in (stored or {}).items():
        full = (p, full_model_name(m))
        if n > 0 and full not in named:
            if full not in waiting:
                keys[(p, m)] = None
            waiting[full] = waiting.get(full, 0) + n
    named |= set(waiting)
    for w in live:
        for p in w.pools:
            for m in w.models:
                if (p, full_model_name(m)) not in named:  # `m` and `m:latest` make one row
                    named.add((p, full_model_name(m)))
                    keys[(p, m)] = None
    at = now.timestamp()
    rows = []
    for (pool, model), b in sorted(keys.items()):
        serving = [w for w in live if serves(w, pool, model) and _accepting(w)]
        warm = sorted(w.worker_id for w in serving if warm_for(w, model))
        cold = sorted(w.worker_id for w in serving if not warm_for(w, model))
        pending = b.pending if b else waiting.get((pool, full_model_name(model)), 0)
        running = b.running if b else 0
        held = sorted(w.worker_id for w in serving if held_back(w))
        oldest = None
        if b is not None and b.oldest_ts is not None and pending > 0:
            oldest = max(0.0, at - b.oldest_ts)
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
                consumer=b.consumer if b else None,
                waiting_pulls=b.waiting_pulls if b else 0,
                held_back_workers=held,
                held_back_jobs=pending if serving and len(held) == len(serving) else 0,
                unserved=0 if serving else pending,
            )
        )
    return rows


def pools_json(pools: Pools, rows: Iterable[PoolModelStatus]) -> dict[str, Any]:
    """``GET /v1/pools``: every configured pool (then any other pool a row names), each with
    its models, its total backlog and unserved jobs, and its rows
    (`PoolModelStatus.consumer_json`)."""
    rows = list(rows)
    names = list(pools.names) + sorted({r.pool for r in rows} - set(pools.names))
    out = []
    for name in names:
        mine = [r.consumer_json() for r in rows if r.pool == name]
        out.append(
            {
                "name": name,
                "models": [r["model"] for r in mine],
                "backlog": sum(r["backlog"] for r in mine),
                "held_back_jobs": sum(r["held_back_jobs"] for r in mine),
                "unserved": sum(r["unserved"] for r in mine),
                "consumers": mine,
            }
        )
    return {"pools": out}


# -- reading JetStream (I/O), for `jetgrid pools` -------------------------------------------------
async def read_workers(
    bus: Bus, settings: Settings, config: FoldConfig | None = None
) -> list[WorkerView]:
    """Every worker's view, folded with projections.workers.apply from its latest event of each
    kind (an ephemeral last-per-subject consumer on WORKERS: O(workers), however long the log).

    Messages are checked as the projector checks them (projections.fold.check_worker_message);
    invalid ones are skipped. Enough for availability, pools, models and the last ping; uptime
    and tiers need the whole log (the projector's read models).
    """
    config = config or fold_config(settings)
    sub = await bus.call(
        bus.js.pull_subscribe(
            settings.subjects.worker_events(),
            stream=settings.streams.workers,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0,
            ),
        ),
        "read the latest worker events",
    )
    envs: list[Envelope] = []
    try:
        info = await bus.call(sub.consumer_info(), "read the latest worker events")
        left = info.num_pending or 0
        while left > 0:
            msgs = await bus.call(
                sub.fetch(min(left, 256), timeout=5), "read the latest worker events"
            )
            left -= len(msgs)
            for m in msgs:
                got = check_worker_message(
                    settings.subjects, m.subject, m.data, m.metadata.timestamp, config.max_future_s
                )
                if isinstance(got, Envelope):
                    envs.append(got)
    finally:
        # The ephemeral consumer goes away on its own after inactive_threshold anyway.
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    envs.sort(key=lambda e: e.time)
    return list(wr.apply_all({}, envs, config.policy, config.windows).values())


async def read_pool_status(bus: Bus, settings: Settings, now: float) -> list[PoolModelStatus]:
    """`pool_status` over what JetStream holds; `now`: the wall clock in epoch seconds."""
    backlogs = await read_backlogs(bus, settings)
    stored = await read_stored_submissions(bus, settings)
    workers = await read_workers(bus, settings)
    at = datetime.fromtimestamp(now, UTC)
    return pool_status(settings.pool_configs(), backlogs, workers, at, stored)
