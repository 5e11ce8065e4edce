"""Queue figures per pool, model and tenant: queued, running, waits, drain rate, position, ETA.

Pure: `QueueIndex` is fed job views (projections.jobs.JobView) as a fold changes them (the
gateway's board calls `observe` for every folded event) and keeps only what is live: the jobs
queued or running now, and the starts of a bounded recent window (`window_s`, at most
`max_starts` of them). Nothing in it grows with the log's length.

Definitions (every time is an event time, never the wall clock, except `now`):

- tenant: the job's `submitter` (the API key name, or the NATS user that submitted it);
  ``-`` when the submission names none.
- queued: the job's status is ``queued`` (never started, or back in the queue for a retry);
  running: ``claimed`` or ``running``.
- wait: from the job's submission to its start (its claim or its start, whichever is first
  folded). ``oldest_wait_s``: ``now`` minus the submission time of the oldest queued job.
  ``wait_p50_s`` / ``wait_p95_s``: nearest-rank percentiles of the waits of the jobs that
  started within the last `window_s` seconds before ``now`` (None when none did).
- drain rate (``drain_per_s``): those starts divided by the window, or by the time since the
  index began when that is shorter (a fresh gateway does not understate it).
- position: a queued job's place in its (pool, model) line as JetStream delivers it: workers
  take high before normal before low (one consumer per priority, swept highest first), and each
  consumer in stream order, so position is 1 + the queued jobs of the same pool and model with
  a higher priority, or the same priority and a lower JOBS sequence. Tenants share the line,
  except in a fair-share pool, where each tenant queue (the job's ``tenant``) is its own line:
  a job's position counts only the queued jobs of its tenant queue.
- ETA (``eta_s``): ``position / drain_per_s`` of the job's line: its (pool, model), or in a
  fair-share pool its tenant queue's starts; None while nothing drains (no start within the
  window).
- share: a tenant's fraction of the running jobs of its (pool, model) (0 when none run).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jetgrid.coordinator.deadlines import SWEEP_GRACE_S, sweep_due
from jetgrid.projections.jobs import JobView

__all__ = [
    "DEFAULT_WINDOW_S",
    "NO_TENANT",
    "Figures",
    "QueueIndex",
    "Start",
    "drain_rate",
    "eta_s",
    "line_key",
    "percentile",
    "positions",
]

DEFAULT_WINDOW_S = 300.0
MAX_STARTS = 10_000
NO_TENANT = "-"
_PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}
_RUNNING = ("claimed", "running")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank `q`-th percentile (0 < q <= 100) of `values`; None when empty."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def drain_rate(starts: Iterable[float], now: float, window_s: float, since: float) -> float:
    """Starts per second over the last `window_s` seconds before `now` (epoch seconds), or
    over ``now - since`` when that is shorter; starts after `now` do not count."""
    span = min(window_s, now - since)
    if span <= 0:
        return 0.0
    return sum(1 for t in starts if now - window_s < t <= now) / span


def eta_s(position: int, drain_per_s: float) -> float | None:
    """Seconds until a job at `position` starts at the drain rate; None when nothing drains."""
    if drain_per_s <= 0:
        return None
    return position / drain_per_s


def line_key(view: JobView) -> tuple[int, int]:
    """Where a queued job sits in its (pool, model) line: (priority rank, JOBS sequence)."""
    return (_PRIORITY_RANK.get(view.priority or "normal", 1), view.jobs_seq or 0)


def positions(queued: Iterable[JobView]) -> dict[str, int]:
    """Job id -> position (1 first) among `queued`, the queued jobs of one (pool, model)."""
    ordered = sorted(queued, key=lambda v: (*line_key(v), v.job_id))
    return {v.job_id: i for i, v in enumerate(ordered, start=1)}


@dataclass(frozen=True, slots=True)
class Start:
    """A job that left the queue: when (epoch seconds) and after how long a wait."""

    pool: str
    model: str
    tenant: str
    at: float
    wait_s: float
    queue: str | None = None  # the tenant queue of a fair-share pool (None: the shared line)


@dataclass(slots=True)
class Figures:
    """One group's figures (a (pool, model), or a tenant in it); see the module docstring."""

    queued: int = 0
    running: int = 0
    oldest_wait_s: float | None = None
    wait_p50_s: float | None = None
    wait_p95_s: float | None = None
    drain_per_s: float = 0.0
    share: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "queued": self.queued,
            "running": self.running,
            "oldest_wait_s": _round(self.oldest_wait_s),
            "wait_p50_s": _round(self.wait_p50_s),
            "wait_p95_s": _round(self.wait_p95_s),
            "drain_per_s": round(self.drain_per_s, 4),
        }
        if self.share is not None:
            out["share"] = round(self.share, 4)
        return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _tenant(view: JobView) -> str:
    return view.submitter or NO_TENANT


@dataclass(slots=True)
class QueueIndex:
    """The live jobs of a fold, by (pool, model), and the recent starts; see the module doc."""

    since: float  # epoch seconds the index began (bounds the drain rate's span)
    window_s: float = DEFAULT_WINDOW_S
    max_starts: int = MAX_STARTS
    queued: dict[tuple[str, str], dict[str, JobView]] = field(default_factory=dict)
    running: dict[tuple[str, str], dict[str, JobView]] = field(default_factory=dict)
    starts: deque[Start] = field(default_factory=deque)
    # The same starts' times per (pool, model), sorted: the drain rate a submit needs in O(log n).
    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # The same per queue: (pool, model, tenant queue, None for the shared one) -> sorted times.
    queue_times: dict[tuple[str, str, str | None], list[float]] = field(default_factory=dict)

    def observe(self, before: JobView | None, view: JobView) -> None:
        """Track `view` (a job's view after a folded event; `before` is the one it replaced)."""
        if view.pool is None or view.model is None:
            return  # known once its submission is folded
        key = (view.pool, view.model)
        self._drop(key, view.job_id)
        if view.status == "queued":
            self.queued.setdefault(key, {})[view.job_id] = view
        elif view.status in _RUNNING:
            self.running.setdefault(key, {})[view.job_id] = view
        # A start is a new claim: also one folded with the outcome or `retrying` it rides on.
        at = view.claimed_at or view.started_at
        if at is not None and (before is None or at != (before.claimed_at or before.started_at)):
            self._started(view)

    def _drop(self, key: tuple[str, str], job_id: str) -> None:
        for table in (self.queued, self.running):
            jobs = table.get(key)
            if jobs is not None and jobs.pop(job_id, None) is not None and not jobs:
                del table[key]

    def _started(self, view: JobView) -> None:
        at = view.claimed_at or view.started_at
        if at is None or view.submitted_at is None or view.pool is None or view.model is None:
            return
        wait = max(0.0, (at - view.submitted_at).total_seconds())
        start = Start(view.pool, view.model, _tenant(view), at.timestamp(), wait, view.tenant)
        self.starts.append(start)
        for times in self._lines(start, create=True):
            bisect.insort(times, start.at)
        while len(self.starts) > self.max_starts:
            old = self.starts.popleft()
            for kept in self._lines(old, create=False):
                i = bisect.bisect_left(kept, old.at)
                if i < len(kept) and kept[i] == old.at:
                    del kept[i]

    def _lines(self, start: Start, *, create: bool) -> list[list[float]]:
        """The sorted start times `start` counts in: its (pool, model)'s and its queue's."""
        line, queue = (start.pool, start.model), (start.pool, start.model, start.queue)
        if create:
            return [self.times.setdefault(line, []), self.queue_times.setdefault(queue, [])]
        return [t for t in (self.times.get(line), self.queue_times.get(queue)) if t is not None]

    def _recent(self, now: float) -> list[Start]:
        while self.starts and self.starts[0].at <= now - self.window_s:
            self.starts.popleft()  # only what a window ending now or later can count
        return [s for s in self.starts if s.at <= now]

    def keys(self) -> list[tuple[str, str]]:
        """Every (pool, model) with a job queued or running, sorted."""
        return sorted(set(self.queued) | set(self.running))

    def backlog(
        self, pool: str, model: str, now: datetime, *, oldest: bool = True
    ) -> tuple[int, float | None]:
        """(queued jobs, the oldest one's wait in seconds at `now`, None when `oldest` is
        False) of one (pool, model)."""
        jobs = self.queued.get((pool, model), {})
        return len(jobs), _oldest(jobs.values(), now.timestamp()) if oldest else None

    def drain(self, pool: str, model: str, now: datetime) -> float:
        """The (pool, model)'s drain rate at `now` (as `drain_rate` over its recent starts)."""
        return self._rate(self.times.get((pool, model), []), now.timestamp())

    def queue_drain(self, pool: str, model: str, queue: str | None, now: datetime) -> float:
        """The drain rate of one queue of the (pool, model) at `now`: tenant `queue`'s in a
        fair-share pool, the shared queue's for None (in a pool without fair share, all)."""
        return self._rate(self.queue_times.get((pool, model, queue), []), now.timestamp())

    def _rate(self, times: list[float], at: float) -> float:
        del times[: bisect.bisect_right(times, at - self.window_s)]  # no window ending now counts
        span = min(self.window_s, at - self.since)
        return bisect.bisect_right(times, at) / span if span > 0 else 0.0

    def place(self, view: JobView, now: datetime) -> tuple[int, float | None] | None:
        """(position, ETA in seconds) of a queued job at `now`; None if it is not queued here."""
        if view.pool is None or view.model is None:
            return None
        line = self.queued.get((view.pool, view.model), {})
        if view.job_id not in line:
            return None
        job = line[view.job_id]
        mine = line_key(job)
        ahead = sum(  # JOBS seqs are unique; in a fair-share pool, only its tenant queue
            1 for v in line.values() if v.tenant == job.tenant and line_key(v) < mine
        )
        position = ahead + 1
        drain = self.queue_drain(view.pool, view.model, job.tenant, now)
        return position, eta_s(position, drain)

    def overdue(self, now: datetime, grace_s: float = SWEEP_GRACE_S) -> list[JobView]:
        """The queued jobs `grace_s` past their deadline at `now` (coordinator.deadlines)."""
        return [
            v
            for jobs in self.queued.values()
            for v in jobs.values()
            if sweep_due(v.deadline, now, grace_s)
        ]

    def figures(self, now: datetime) -> list[dict[str, Any]]:
        """Per (pool, model) with live jobs or recent starts: its figures and its tenants'."""
        at = now.timestamp()
        recent = self._recent(at)
        keys = sorted(set(self.keys()) | {(s.pool, s.model) for s in recent})
        out = []
        for pool, model in keys:
            queued = list(self.queued.get((pool, model), {}).values())
            running = list(self.running.get((pool, model), {}).values())
            starts = [s for s in recent if (s.pool, s.model) == (pool, model)]
            total = self._figures(queued, running, starts, at)
            tenants = sorted({_tenant(v) for v in (*queued, *running)} | {s.tenant for s in starts})
            rows = []
            for t in tenants:
                fig = self._figures(
                    [v for v in queued if _tenant(v) == t],
                    [v for v in running if _tenant(v) == t],
                    [s for s in starts if s.tenant == t],
                    at,
                )
                fig.share = fig.running / total.running if total.running else 0.0
                rows.append({"tenant": t, **fig.to_json()})
            out.append({"pool": pool, "model": model, **total.to_json(), "tenants": rows})
        return out

    def _figures(
        self, queued: list[JobView], running: list[JobView], starts: list[Start], now: float
    ) -> Figures:
        waits = [s.wait_s for s in starts]
        return Figures(
            queued=len(queued),
            running=len(running),
            oldest_wait_s=_oldest(queued, now),
            wait_p50_s=percentile(waits, 50),
            wait_p95_s=percentile(waits, 95),
            drain_per_s=drain_rate([s.at for s in starts], now, self.window_s, self.since),
        )


def _oldest(queued: Iterable[JobView], now: float) -> float | None:
    times = [v.submitted_at.timestamp() for v in queued if v.submitted_at is not None]
    return max(0.0, now - min(times)) if times else None
