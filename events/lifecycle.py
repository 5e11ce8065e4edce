"""Job lifecycle events, on JOB_EVENTS as ``<prefix>.job.<job_id>.<name>``.

Exactly one terminal event counts per job: the first of completed, failed, cancelled, dead,
rejected or expired in log order (`TERMINAL_EVENTS`, named `TERMINAL_NAMES`: the one definition
every layer uses). Terminal events are published with ``Nats-Msg-Id: <job_id>:terminal`` so
JetStream drops duplicates inside its duplicate window (`rejected`: one id per refused
submission, events.addressing); the reducers apply the first-wins rule for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from jetgrid.events.base import Event


class _JobEvent(Event):
    job_id: str


class _AttemptEvent(_JobEvent):
    worker_id: str
    attempt: int = Field(ge=1, description="JetStream delivery count of the submission")


class Claim(BaseModel):
    """A worker's claim of one delivery, carried by the event that ends or hands back a run
    that was over before the worker published `started` (see JobStarted): the submission's JOBS
    sequence, the tier it was taken under, and when it was taken (the worker's clock)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    jobs_seq: int = Field(ge=1, description="the submission's sequence in the JOBS stream")
    tier_factor: float | None = None
    fallback: bool = False
    at: AwareDatetime = Field(description="when the worker took the delivery")


# A worker publishes `started` only for a run still going this long after it took the delivery
# (its setting, at most this); a shorter run's claim rides on its outcome (Claim). What folds
# claims by time waits this long past an hour's end before closing it (projections.hours).
MAX_CLAIM_DELAY_S = 1.0


class JobStarted(_AttemptEvent):
    """A worker took the job's message from its pool consumer and runs it: who (`worker_id`),
    which delivery (`attempt`), which submission (`jobs_seq`) and under which tier.

    Version 2 is the one event a worker publishes when it takes a job. Logs written before it
    hold two: `claimed` (JobClaimed, with `jobs_seq` and the tier) and then a version 1
    `started` (neither). At decode a `claimed` becomes a JobStarted with `jobs_seq`, and a
    version 1 `started` one without (events.catalogue): so `jobs_seq` is set exactly on the
    events that record a claim.

    On a job's first delivery a worker may publish it late (its ``started_after_s``, at most
    MAX_CLAIM_DELAY_S, with the claim's time as the event's time), and not at all for a run that
    is over by then: that run's `completed`, `failed`, `retrying` or `cancelled` carries the claim
    instead (`claim`). Either way each claim is in the log exactly once: `claim_of` reads it."""

    type: Literal["jetgrid.job.started"] = "jetgrid.job.started"
    version: Literal[2] = 2
    jobs_seq: int | None = Field(
        default=None,
        ge=1,
        description="the submission's sequence in the JOBS stream (None: a version 1 `started`)",
    )
    tier_factor: float | None = None
    # Taken beyond the tier budget because no one else took it (coordinator.fallback).
    fallback: bool = False


class JobClaimed(_AttemptEvent):
    """The claim of logs written before JobStarted version 2: no longer published, and decoded
    as a JobStarted (events.catalogue). The model stays to write such logs (tests, fixtures)."""

    type: Literal["jetgrid.job.claimed"] = "jetgrid.job.claimed"
    version: Literal[1] = 1
    jobs_seq: int = Field(ge=1, description="the submission's sequence in the JOBS stream")
    tier_factor: float | None = None
    fallback: bool = False


class JobProgress(_AttemptEvent):
    """Optional, coalesced progress (fraction done and/or a short message)."""

    type: Literal["jetgrid.job.progress"] = "jetgrid.job.progress"
    version: Literal[1] = 1
    fraction: float | None = Field(default=None, ge=0, le=1)
    message: str | None = Field(default=None, max_length=4096)


class JobCompleted(_AttemptEvent):
    """The job's result. `output` is the whole output, so the log alone tells the result."""

    type: Literal["jetgrid.job.completed"] = "jetgrid.job.completed"
    version: Literal[1] = 1
    output: Any
    usage: dict[str, Any] = Field(default_factory=dict)
    duration_s: float = Field(ge=0)
    # The run's claim, when the worker published no `started` for it (JobStarted).
    claim: Claim | None = None


class JobFailed(_JobEvent):
    """The job failed for good (deterministic error, or retries exhausted by policy)."""

    type: Literal["jetgrid.job.failed"] = "jetgrid.job.failed"
    version: Literal[1] = 1
    worker_id: str | None = None
    attempt: int | None = None
    reason: str
    error_type: str = "error"
    # The run's claim, when the worker published no `started` for it (JobStarted).
    claim: Claim | None = None


class JobRetrying(_AttemptEvent):
    """A transient failure; the job goes back to its pool after `delay_s`."""

    type: Literal["jetgrid.job.retrying"] = "jetgrid.job.retrying"
    version: Literal[1] = 1
    reason: str
    delay_s: float = Field(ge=0)
    # Set when the job stalled: the seconds it ran without a token (coordinator.stalls).
    stall_s: float | None = Field(default=None, ge=0)
    # The run's claim, when the worker published no `started` for it (JobStarted).
    claim: Claim | None = None


class JobCancelRequested(_JobEvent):
    """Someone asked for the job to stop (or never start)."""

    type: Literal["jetgrid.job.cancel_requested"] = "jetgrid.job.cancel_requested"
    version: Literal[1] = 1
    reason: str | None = None
    requested_by: str | None = None


class JobCancelled(_JobEvent):
    """The job stopped (or was skipped) because of a cancel request."""

    type: Literal["jetgrid.job.cancelled"] = "jetgrid.job.cancelled"
    version: Literal[1] = 1
    worker_id: str | None = None
    attempt: int | None = None
    reason: str | None = None
    # The run's claim, when the worker published no `started` for it (JobStarted).
    claim: Claim | None = None


class JobDead(_JobEvent):
    """JetStream gave up delivering the job after MaxDeliver attempts, or the job aged out of JOBS
    retention while still queued (projections.jobs.ages_out)."""

    type: Literal["jetgrid.job.dead"] = "jetgrid.job.dead"
    version: Literal[1] = 1
    attempts: int = Field(ge=0)  # 0: no worker took it (it aged out of JOBS)
    jobs_seq: int = Field(ge=1)
    reason: str = "max deliveries reached"


class JobRejected(_JobEvent):
    """A submission was acknowledged by JOBS but refused when read (bad fields, a reserved or
    conflicting id, a forbidden model...): the job never runs, and `reason` says why.

    It is about the submission at `jobs_seq` only: a job that another submission under the same
    id put in the log is not ended by it (projections.jobs)."""

    type: Literal["jetgrid.job.rejected"] = "jetgrid.job.rejected"
    version: Literal[1] = 1
    jobs_seq: int = Field(ge=1, description="the refused submission's sequence in JOBS")
    reason: str
    worker_id: str | None = None


class JobExpired(_JobEvent):
    """No worker started the job by its deadline (its `start_by`, or its submission time plus
    its `ttl_s`): it never runs. Said by the worker that takes it too late, or by a gateway that
    follows it queued past the deadline (coordinator.deadlines)."""

    type: Literal["jetgrid.job.expired"] = "jetgrid.job.expired"
    version: Literal[1] = 1
    deadline: datetime
    reason: str
    worker_id: str | None = None
    attempt: int | None = None
    # The submission's sequence in JOBS, where its sayer knows it: what reads the submission
    # back from this event alone (the webhook service) needs it.
    jobs_seq: int | None = Field(default=None, ge=1)


CLAIM_CARRIERS = (JobCompleted, JobFailed, JobRetrying, JobCancelled)
"""The events that may carry their run's claim (`claim`)."""

TerminalEvent = JobCompleted | JobFailed | JobCancelled | JobDead | JobRejected | JobExpired
TERMINAL_EVENTS: tuple[type[_JobEvent], ...] = (
    JobCompleted,
    JobFailed,
    JobCancelled,
    JobDead,
    JobRejected,
    JobExpired,
)
"""The events that end a job; the first of them in log order is its outcome."""

TERMINAL_NAMES: frozenset[str] = frozenset(
    cls.model_fields["type"].default.rsplit(".", 1)[-1] for cls in TERMINAL_EVENTS
)
"""Their event names (``completed``, ``failed``, ``cancelled``, ``dead``, ``rejected``,
``expired``): the subjects' last
token before the worker, and the terminal job statuses of the read models."""


@dataclass(frozen=True, slots=True)
class Taken:
    """A worker's claim of a delivery, wherever the log records it (`claim_of`)."""

    worker_id: str
    attempt: int
    jobs_seq: int
    tier_factor: float | None
    fallback: bool
    at: datetime


def jobs_seq_of(ev: Event) -> int | None:
    """The JOBS sequence of the submission `ev` is about, where it names one (its own
    `jobs_seq`, or its run's claim's)."""
    seq = getattr(ev, "jobs_seq", None)
    if seq is None and (c := getattr(ev, "claim", None)) is not None:
        seq = c.jobs_seq
    return seq if isinstance(seq, int) else None


def claim_of(ev: Event, time: datetime) -> Taken | None:
    """The claim `ev` (its envelope time `time`) records, or None: a `started` that names its
    JOBS sequence (a claim at the event's time), or an outcome that carries its run's `claim`.
    The one place that decides where claims are in the log."""
    if isinstance(ev, JobStarted):
        if ev.jobs_seq is None:
            return None
        return Taken(ev.worker_id, ev.attempt, ev.jobs_seq, ev.tier_factor, ev.fallback, time)
    c = getattr(ev, "claim", None)
    if c is None or not isinstance(ev, CLAIM_CARRIERS):
        return None
    worker_id, attempt = ev.worker_id, ev.attempt
    if worker_id is None or attempt is None:
        return None
    return Taken(worker_id, attempt, c.jobs_seq, c.tier_factor, c.fallback, c.at)
