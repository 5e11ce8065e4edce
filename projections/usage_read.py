"""Reading a period's usage from the log: only the stretch of each stream that the period needs.

`read_usage` finds, by a direct get by time, the first message of JOB_EVENTS and WORKERS stored
at ``start - lookback`` (the longest a run can last, the pools' largest job_timeout_cap_s, plus
two pings), feeds the streams from there up to ``end`` through projections.replay.read_stream
into a projections.usage.UsageFold, and reads each counted job's submission from JOBS by its
sequence (a direct get per job), for its model and submitter. The cost follows the period asked
and the jobs in it, not the whole history. It reads the streams as retention keeps them: a
period older than WORKERS or JOB_EVENTS retention has no runs left to count.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.direct import batch_get
from jetgrid.coordinator.settings import Settings
from jetgrid.coordinator.submissions import submission_at
from jetgrid.events import JOB_EVENTS, WORKERS, decode, format_time
from jetgrid.events.errors import InvalidEvent
from jetgrid.projections.items import Item
from jetgrid.projections.replay import read_stream
from jetgrid.projections.usage import Run, UsageFold

__all__ = ["lookback_s", "read_usage"]

BATCH = 1000


def lookback_s(settings: Settings) -> float:
    """How far before a period a run that ends in it may have started (and its ping before)."""
    caps = [p.job_timeout_cap_s for p in settings.pool_configs().pools]
    return max(caps, default=600.0) + 2 * settings.heartbeat_interval_s


class _Collector:
    def __init__(self, fold: UsageFold) -> None:
        self.fold = fold

    async def apply(self, items: list[Item]) -> Any:
        for item in items:
            try:
                env = decode(item.data).at(item.seq, item.subject)
            except InvalidEvent:
                continue  # not ours to judge here: the projector records it
            self.fold.apply(env)


async def first_seq_at(bus: Bus, stream: str, at: datetime) -> int | None:
    """The sequence of the first message of `stream` stored at or after `at`; None if none."""
    req = {"start_time": format_time(at), "batch": 1}
    raws, _ = await bus.call(
        batch_get(bus.nc, bus.js._prefix, stream, req, bus.settings.nats_js_timeout_s),
        f"find {stream}'s first message at {format_time(at)}",
    )
    return int(raws[0].seq or 0) if raws else None


async def read_usage(bus: Bus, settings: Settings, start: datetime, end: datetime) -> list[Run]:
    """The runs that end in ``[start, end)``, read from the log (see the module doc)."""
    fold = UsageFold()
    collector = _Collector(fold)
    since = datetime.fromtimestamp(max(0.0, start.timestamp() - lookback_s(settings)), UTC)
    for logical in (WORKERS, JOB_EVENTS):
        stream = settings.streams(logical)
        first = await first_seq_at(bus, stream, since)
        if first is None:
            continue
        target = await bus.last_seq(stream)
        await read_stream(
            bus.js, collector, logical, stream, ">", target, end, BATCH, None, start=first
        )
    runs = fold.runs(start, end)
    for job_id in sorted({r.job_id for r in runs}):
        view = fold.jobs.get(job_id)
        if view is None or view.submitted_at is not None or view.jobs_seq is None:
            continue
        env = await submission_at(bus, settings, view.jobs_seq, job_id)
        if env is not None:  # else aged out of JOBS (or not a submission): it counts under '-'
            fold.apply(env)
    return fold.runs(start, end)
