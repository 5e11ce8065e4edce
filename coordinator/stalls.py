"""Stalls as plain data: when a running job that makes no progress is handed back.

A pool may set ``stall_after_s`` in the pools file (coordinator.pools; unset: no watchdog). A
job of a kind that streams tokens (`WATCHED_KINDS`: generate, chat) is *stalled* when its worker
is alive (its in-progress acks keep the lease) but the job has made no progress, no output
token, for ``stall_after_s`` seconds since it started or since its last token (so the setting
must cover a model load before the first token). Embed and python jobs emit no tokens: only
their timeout applies. The worker's watchdog (worker.stalls) then:

- cancels the backend call;
- stores `retrying` with ``stall_s`` set (the seconds without progress) and naks the delivery
  with the pool's backoff, like any transient failure (coordinator.delivery.after_transient: on
  the last run the job is `dead` instead), so another worker takes it;
- avoids the job for `avoid_s` afterwards: a redelivery that reaches the same worker sooner is
  handed back without running (`nak` with the rest of that time as its delay), so the job goes
  to another worker if one pulls; that costs the job one delivery of its pool's max_deliver;
- reports it in its next ping: ``healthy=false``, the stall named in ``problems``. The ping is in
  the log, so a stall leaves the worker's uptime slot unhealthy (projections.uptime) and counts
  against its tier exactly as replayed.

`recent_stalls` folds the stalls of the log (the `retrying` events with ``stall_s``) into the
recent stalls per worker, for the dashboard.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "WATCHED_KINDS",
    "StallSeen",
    "WorkerStalls",
    "avoid_s",
    "recent_stalls",
    "stall_in",
    "stall_problem",
    "stall_reason",
]


WATCHED_KINDS = frozenset({"generate", "chat"})
"""The job kinds whose progress is their tokens, which the watchdog watches."""


def stall_in(last_progress: float, now: float, stall_after_s: float) -> float:
    """Seconds until the job stalls (0 when it has: no progress for `stall_after_s` by `now`)."""
    return max(0.0, last_progress + stall_after_s - now)


def avoid_s(stall_after_s: float, retry_delay_s: float) -> float:
    """How long a worker avoids a job it stalled on: its backoff plus one stall period."""
    return retry_delay_s + stall_after_s


def stall_reason(stall_s: float, stall_after_s: float) -> str:
    """The `retrying` reason of a stall."""
    return (
        f"stalled: no token or progress for {stall_s:.3g} s (the pool's stall_after_s is "
        f"{stall_after_s:g} s); handed back to run elsewhere"
    )


def stall_problem(count: int) -> str:
    """The ping problem that reports `count` stalls since the previous ping."""
    return f"{count} job{'' if count == 1 else 's'} stalled since the previous ping"


@dataclass(frozen=True, slots=True)
class StallSeen:
    """One stall in the log: `worker_id` gave `job_id` back at `time` after `stall_s` idle."""

    worker_id: str
    job_id: str
    time: datetime
    stall_s: float


@dataclass(frozen=True, slots=True)
class WorkerStalls:
    """A worker's stalls since a time: how many, and the latest few (newest first)."""

    worker_id: str
    count: int
    latest: tuple[StallSeen, ...]


def recent_stalls(seen: Iterable[StallSeen], since: datetime, keep: int = 5) -> list[WorkerStalls]:
    """The stalls at or after `since`, per worker (most stalls first, then by worker id), each
    with its `keep` latest stalls."""
    per: dict[str, list[StallSeen]] = {}
    for s in seen:
        if s.time >= since:
            per.setdefault(s.worker_id, []).append(s)
    out = [
        WorkerStalls(w, len(ss), tuple(sorted(ss, key=lambda s: s.time, reverse=True)[:keep]))
        for w, ss in per.items()
    ]
    out.sort(key=lambda ws: (-ws.count, ws.worker_id))
    return out
