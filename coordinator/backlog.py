"""What each pool consumer holds: its backlog, read from JetStream consumer info.

- backlog (``pending``): jobs on the consumer not yet delivered to any worker (``num_pending``);
  ``running`` is delivered but not yet acked (``num_ack_pending``); ``waiting_pulls`` the pull
  requests parked on it (``num_waiting``, idle worker slots).
- oldest: the stream time of the first job not yet delivered (a direct get of the message after
  the consumer's delivered stream sequence, filtered to its subject).

- stored submissions: how many messages JOBS holds on each (pool, model)'s submission subjects
  (stream info's per-subject counts, priorities added up). For a (pool, model) that no pool
  consumer takes, every one of them still waits: that is its backlog.

`read_backlog` reads one consumer (worker.pullgate calls it for its warm/cold decision);
`read_consumer_backlogs` reads every pool consumer (the gateway's per-consumer queue gauges),
and `read_backlogs` adds each (pool, model)'s high, normal and low consumers up to one row
(`merge_priorities`; ``GET /v1/pools`` and ``jetgrid pools``). What the backlogs mean together
with the workers (warm and cold workers, a suggested size) is projections.pools.pool_status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.events import InvalidSubject

__all__ = [
    "Backlog",
    "merge_priorities",
    "read_backlog",
    "read_backlogs",
    "read_consumer_backlogs",
    "read_stored_submissions",
]


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
    delivered: int = 0  # deliveries the consumer ever made (0: no worker ever took from it)


async def read_backlog(bus: Bus, stream: str, consumer: str, pool: str, model: str) -> Backlog:
    """One consumer's backlog, with the stream time of its first undelivered job."""
    info = await bus.consumer_info(stream, consumer)
    return await _backlog_from(bus, info, pool, model)


async def _backlog_from(
    bus: Bus, info: Any, pool: str, model: str, *, oldest_job: bool = True
) -> Backlog:
    oldest = None
    if info.num_pending and oldest_job:
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
        delivered=(info.delivered.consumer_seq or 0) if info.delivered else 0,
    )


async def read_consumer_backlogs(
    bus: Bus, settings: Settings, *, oldest_job: bool = True
) -> list[Backlog]:
    """Every pool consumer (``pool-*``) on the JOBS stream, one row per consumer (priorities
    apart); `oldest_job=False` skips reading each one's first waiting job (``oldest_ts`` None)."""
    out = []
    for info in await bus.consumers_info(settings.streams.jobs):
        if not info.name.startswith("pool-") or not info.config.filter_subject:
            continue
        try:
            pool, model = settings.subjects.parse_submit(info.config.filter_subject)
        except InvalidSubject:
            continue  # not a submission filter: some tool's own consumer
        out.append(await _backlog_from(bus, info, pool, model, oldest_job=oldest_job))
    return out


async def read_backlogs(bus: Bus, settings: Settings) -> list[Backlog]:
    """Every pool consumer on the JOBS stream, one row per (pool, model) (`merge_priorities`)."""
    return merge_priorities(await read_consumer_backlogs(bus, settings))


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


async def read_stored_submissions(bus: Bus, settings: Settings) -> dict[tuple[str, str], int]:
    """(pool, model) -> the submissions JOBS holds for it, every priority (module docstring)."""
    info = await bus.call(
        bus.js.stream_info(settings.streams.jobs, subjects_filter=settings.subjects.submissions()),
        "read the submission counts of the JOBS stream",
    )
    out: dict[tuple[str, str], int] = {}
    for subject, n in (info.state.subjects or {}).items():
        try:
            key = settings.subjects.parse_submit(subject)
        except InvalidSubject:
            continue
        out[key] = out.get(key, 0) + int(n)
    return out
