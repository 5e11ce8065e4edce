"""Deadlines as plain data: when a job may no longer start, and who says it expired.

A job may carry `start_by` (an RFC 3339 time) and/or `ttl_s` (seconds from its submission, the
event time of its envelope: for a bare `nats pub`, the stream time). Its deadline is the earlier
of the two; a job with neither has none. No worker may start the job after its deadline: the
deadline bounds every start, so a retry that would start after it ends the job `expired` too.

Who says `expired` (there is no coordinator, so whoever sees it first; the event is published
with the terminal id ``<job_id>:terminal``, so repeats collapse and the first terminal event
counts):

- the worker that takes the job past its deadline publishes `expired` instead of running it,
  and acks it (`late_start`);
- every gateway follows the live jobs (gateway.board) and publishes `expired` for a job still
  queued `SWEEP_GRACE_S` after its deadline (`sweep_due`), so a job no worker takes (no worker
  serves its model, or all are busy) ends on time without one. The grace leaves a worker that
  took the job just before its deadline the time to say so first (it says so at most
  events.MAX_CLAIM_DELAY_S after taking it, which the grace exceeds).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from jetgrid.events import JobExpired, JobSubmitted

__all__ = [
    "SWEEP_GRACE_S",
    "deadline_of",
    "expired_event",
    "expiry_reason",
    "late_start",
    "sweep_due",
]

SWEEP_GRACE_S = 2.0


def deadline_of(job: JobSubmitted, submitted_at: datetime) -> datetime | None:
    """The job's deadline: the earlier of `start_by` and `submitted_at + ttl_s`, else None."""
    limits = [t for t in (job.start_by,) if t is not None]
    if job.ttl_s is not None:
        limits.append(submitted_at + timedelta(seconds=job.ttl_s))
    return min(limits) if limits else None


def late_start(deadline: datetime | None, now: datetime) -> bool:
    """Whether a start at `now` is too late: `now` is past the deadline (at it is in time)."""
    return deadline is not None and now > deadline


def sweep_due(deadline: datetime | None, now: datetime, grace_s: float = SWEEP_GRACE_S) -> bool:
    """Whether a job still queued at `now` is expired by a gateway: `grace_s` past its deadline."""
    return deadline is not None and (now - deadline).total_seconds() > grace_s


def expiry_reason(deadline: datetime, now: datetime) -> str:
    """Why the job expired, with both times."""
    late = (now - deadline).total_seconds()
    return (
        f"no worker started it by its deadline {deadline.isoformat()} "
        f"(checked {late:.3f} s after it)"
    )


def expired_event(
    job_id: str,
    deadline: datetime,
    now: datetime,
    *,
    worker_id: str | None = None,
    attempt: int | None = None,
    jobs_seq: int | None = None,
) -> JobExpired:
    """The `expired` event for a job found past its deadline at `now`."""
    return JobExpired(
        job_id=job_id,
        deadline=deadline,
        reason=expiry_reason(deadline, now),
        worker_id=worker_id,
        attempt=attempt,
        jobs_seq=jobs_seq,
    )
