"""The job read model: a pure reducer from lifecycle events to one job's view.

Rules (each one tested in tests/projections/test_jobs_reducer.py):
- The first terminal event in log order counts (completed, failed, cancelled, dead, rejected,
  expired);
  any later terminal event only increments `duplicates`. This is what makes outcomes
  effectively-once.
- `rejected` ends only the submission it names (`jobs_seq`): a job another submission under the
  same id put in the log is not ended by it, and replaces it when folded after it.
- JOBS and JOB_EVENTS are separate streams, so a fold may see a job's lifecycle before its
  submission: a view can start from either, and the submission fills in its fields without
  moving the status backwards.
- Non-terminal events never move a job backwards (queued < claimed < running), except
  `retrying`, which puts a non-terminal job back to `queued` for its next attempt.
- A worker says it took a job with one `started` that carries `jobs_seq` (the claim): it sets
  `claimed_at` and `started_at`. Old logs say it in two events, `claimed` and then a `started`
  without `jobs_seq` (events.catalogue upcasts both), which fold to the same view: `claimed_at`
  from the first, `started_at` from the second. Status `claimed` comes only from read models
  written before that. A terminal event needs no `started` before it (a worker does not wait
  for its `started` to be stored before running the job).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

from jetgrid.coordinator.deadlines import deadline_of
from jetgrid.events import (
    TERMINAL_NAMES,
    Envelope,
    JobCancelled,
    JobCancelRequested,
    JobCompleted,
    JobDead,
    JobExpired,
    JobFailed,
    JobProgress,
    JobRejected,
    JobRetrying,
    JobStarted,
    JobSubmitted,
    claim_of,
)

Status = Literal[
    "unknown",
    "queued",
    "claimed",
    "running",
    "completed",
    "failed",
    "cancelled",
    "dead",
    "rejected",
    "expired",
]
_RANK = {"unknown": 0, "queued": 1, "claimed": 2, "running": 3}


@dataclass(frozen=True, slots=True)
class JobView:
    job_id: str
    status: Status = "unknown"
    model: str | None = None
    pool: str | None = None
    kind: str | None = None
    priority: str | None = None
    jobs_seq: int | None = None
    submitted_at: datetime | None = None
    worker_id: str | None = None
    attempts: int = 0
    claimed_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Any = None
    usage: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None
    cancel_requested: bool = False
    progress: float | None = None
    retries: int = 0
    duplicates: int = 0
    terminal_seq: int | None = None
    submitter: str | None = None  # the tenant: the API key name or NATS user that submitted it
    deadline: datetime | None = None  # no start after it (coordinator.deadlines)
    trace_id: str | None = None  # its W3C trace (coordinator.tracecontext)
    tenant: str | None = None  # its tenant queue in a fair-share pool (None: the shared queue)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_NAMES


_FIELDS = tuple(f.name for f in fields(JobView))
_new = object.__new__
_set = object.__setattr__


def _replace(view: JobView, **changes: Any) -> JobView:
    """`view` with `changes`: dataclasses.replace without its per-call field checks (the fold
    runs it for every event). JobView has no __post_init__; a name that is not a field raises
    AttributeError (slots)."""
    new = _new(JobView)
    for name in _FIELDS:
        _set(new, name, getattr(view, name))
    for name, value in changes.items():
        _set(new, name, value)
    return new


def _advance(view: JobView, status: Status) -> Status:
    if view.terminal:
        return view.status
    return status if _RANK.get(status, 0) >= _RANK.get(view.status, 0) else view.status


def _terminal(view: JobView, env: Envelope, status: Status, **fields: Any) -> JobView:
    if view.terminal:
        return _replace(view, duplicates=view.duplicates + 1)
    return _replace(view, status=status, finished_at=env.time, terminal_seq=env.seq, **fields)


def _claimed(
    view: JobView, job_id: str, worker_id: str, attempt: int, jobs_seq: int, at: datetime
) -> JobView:
    """A worker took the job at `at` (a `started` that names its JOBS sequence, or an outcome
    carrying its run's claim: events.claim_of)."""
    if view.status == "rejected" and view.jobs_seq != jobs_seq:
        view = JobView(job_id=job_id)  # another submission's refusal, not this job's
    if view.terminal:
        return view
    return _replace(
        view,
        status=_advance(view, "running"),
        worker_id=worker_id,
        attempts=max(view.attempts, attempt),
        claimed_at=at,
        started_at=at,
        jobs_seq=view.jobs_seq or jobs_seq,
    )


def apply(view: JobView | None, env: Envelope) -> JobView:
    """Fold one event of job `env.event.job_id` into its view (None: not seen before). An
    outcome or `retrying` that carries its run's claim is folded as that claim, then itself."""
    ev = env.event
    view = view or JobView(job_id=ev.job_id)
    claim = getattr(ev, "claim", None)
    if claim is not None and (taken := claim_of(ev, env.time)) is not None:
        view = _claimed(view, ev.job_id, taken.worker_id, taken.attempt, taken.jobs_seq, taken.at)
    match ev:
        case JobSubmitted():
            # A resubmission of the same id: the first one counts. (A claim seen first sets
            # jobs_seq but not submitted_at, so the submission still fills in its fields: the
            # fold then gives the same view whichever of JOBS and JOB_EVENTS is read first.)
            if view.submitted_at is not None:
                return view
            if view.status == "rejected" and view.jobs_seq != env.seq:
                view = JobView(job_id=ev.job_id)  # another submission's refusal, not this job's
            return _replace(
                view,
                status=_advance(view, "queued"),
                model=ev.model,
                pool=ev.pool,
                kind=ev.kind,
                priority=ev.priority,
                jobs_seq=env.seq,
                submitted_at=env.time,
                submitter=ev.submitter,
                deadline=deadline_of(ev, env.time),
                trace_id=ev.trace_id,
                tenant=ev.tenant,
            )
        case JobStarted():
            if ev.jobs_seq is not None:
                return _claimed(view, ev.job_id, ev.worker_id, ev.attempt, ev.jobs_seq, env.time)
            if view.terminal:
                return view
            return _replace(
                view,
                status=_advance(view, "running"),
                worker_id=ev.worker_id,
                attempts=max(view.attempts, ev.attempt),
                started_at=env.time,
            )
        case JobProgress():
            if view.terminal or ev.fraction is None:
                return view
            return _replace(view, progress=ev.fraction)
        case JobRetrying():
            if view.terminal:
                return view
            return _replace(
                view,
                status="queued",
                retries=view.retries + 1,
                error=ev.reason,
                attempts=max(view.attempts, ev.attempt),
            )
        case JobCancelRequested():
            return view if view.terminal else _replace(view, cancel_requested=True)
        case JobCompleted():
            return _terminal(
                view,
                env,
                "completed",
                output=ev.output,
                usage=ev.usage,
                worker_id=ev.worker_id,
                attempts=max(view.attempts, ev.attempt),
                error=None,
            )
        case JobFailed():
            return _terminal(
                view,
                env,
                "failed",
                error=ev.reason,
                error_type=ev.error_type,
                worker_id=ev.worker_id or view.worker_id,
            )
        case JobCancelled():
            return _terminal(view, env, "cancelled", error=ev.reason, error_type="cancelled")
        case JobRejected():
            if view.jobs_seq is not None and view.jobs_seq != ev.jobs_seq:
                return view  # refused a different submission under this id: not this job's end
            return _terminal(
                view,
                env,
                "rejected",
                error=ev.reason,
                error_type="rejected",
                jobs_seq=ev.jobs_seq,
            )
        case JobExpired():
            return _terminal(
                view, env, "expired", error=ev.reason, error_type="expired", deadline=ev.deadline
            )
        case JobDead():
            return _terminal(
                view,
                env,
                "dead",
                error=ev.reason,
                error_type="dead",
                attempts=max(view.attempts, ev.attempts),
            )
    return view


# -- the end of a job that retention drops -------------------------------------------------------
AGED_OUT = "aged out of JOBS retention before any worker took it"
AGED_OUT_RETRY = "aged out of JOBS retention while queued for a retry"


def ages_out(view: JobView, now: datetime, max_age_s: float) -> bool:
    """Whether JetStream has dropped the submission of this still-queued job by log time `now`:
    it was submitted `max_age_s` or more before `now` (JOBS retention; 0 keeps forever).

    The rule fires at the age limit, not before it: until then a worker may still take the job,
    and a `dead` published earlier would take the `<job>:terminal` id from its result.
    """
    if max_age_s <= 0 or view.status != "queued" or view.submitted_at is None:
        return False
    if view.jobs_seq is None:
        return False  # a view without its submission: nothing of it is in JOBS to age out
    return (now - view.submitted_at).total_seconds() >= max_age_s


def aged_out_dead(view: JobView) -> JobDead:
    """The `dead` event that records a queued job dropped by JOBS retention (`ages_out`)."""
    if view.jobs_seq is None:
        raise ValueError(f"Job {view.job_id!r} has no submission in JOBS to age out.")
    return JobDead(
        job_id=view.job_id,
        attempts=view.attempts,
        jobs_seq=view.jobs_seq,
        reason=AGED_OUT_RETRY if view.attempts else AGED_OUT,
    )
