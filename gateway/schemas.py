"""Request and response bodies of jetgrid's own HTTP API (/v1)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from jetgrid.events.subjects import MAX_MODEL_LEN


class SubmitJob(BaseModel):
    """POST /v1/jobs."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=MAX_MODEL_LEN, description="model to run")
    prompt: str | None = Field(default=None, description="text input (or use `input`)")
    input: dict[str, Any] | None = Field(default=None, description="structured input")
    pool: str | None = Field(default=None, description="pool; the default pool if omitted")
    kind: Literal["generate", "chat", "embed", "python"] = "generate"
    options: dict[str, Any] = Field(default_factory=dict)
    priority: Literal["high", "normal", "low"] = "normal"
    timeout_s: float | None = Field(default=None, gt=0)
    id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]{1,128}$", description="client-chosen job id"
    )
    start_by: AwareDatetime | None = Field(
        default=None,
        description="RFC 3339 time (with an offset): if no worker starts the job by then, it "
        "ends `expired`",
    )
    ttl_s: float | None = Field(
        default=None, gt=0, description="seconds after submission the job may still start"
    )
    webhook: str | None = Field(
        default=None, max_length=2048, description="URL that gets the job's outcome, signed"
    )
    session: str | None = Field(
        default=None, min_length=1, max_length=256, description="session key (cache affinity)"
    )

    @model_validator(mode="after")
    def _has_work(self) -> SubmitJob:
        if self.prompt is None and self.input is None:
            raise ValueError("a job needs 'prompt' or 'input'")
        return self


class JobOut(BaseModel):
    """A job as the API shows it."""

    id: str
    status: str
    model: str | None = None
    pool: str | None = None
    kind: str | None = None
    priority: str | None = None
    worker_id: str | None = None
    attempts: int = 0
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Any = None
    usage: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None
    seq: int | None = None
    subject: str | None = None
    cancel_requested: bool = False
    submitter: str | None = Field(default=None, description="the tenant that submitted the job")
    deadline: datetime | None = Field(
        default=None, description="no worker starts the job after it (start_by, ttl_s)"
    )
    position: int | None = Field(
        default=None,
        description="while queued: 1 + the queued jobs of its pool and model delivered before it",
    )
    eta_s: float | None = Field(
        default=None, description="while queued: position / the drain rate (null: none drains)"
    )
    trace_id: str | None = Field(default=None, description="its W3C trace id (traceparent)")


class SubmitAccepted(BaseModel):
    """POST /v1/jobs answered before the job finished (202)."""

    id: str
    status: str
    seq: int | None = None
    subject: str | None = None
    duplicate: bool | None = None


class JobList(BaseModel):
    """GET /v1/jobs: newest first; pass `next_cursor` as `cursor` for the next page (a page
    may hold fewer than `limit` jobs and still have one: it ends when `next_cursor` is null)."""

    jobs: list[JobOut]
    next_cursor: str | None = None


class JobResult(BaseModel):
    """GET /v1/jobs/{id}/result of a completed job."""

    id: str
    status: Literal["completed"]
    output: Any = None
    usage: dict[str, Any] | None = None


class PoolModelOut(BaseModel):
    """One (pool, model): its consumers' queue (high, normal and low added up) and its workers,
    as projections.pools.pool_status computes them (the same rows as `jetgrid pools`)."""

    pool: str
    model: str
    consumer: str | None = Field(
        description="the normal-priority pool consumer; null while only live workers name it"
    )
    backlog: int = Field(description="jobs not yet delivered (the consumers' num_pending)")
    ack_pending: int = Field(description="jobs delivered and not yet acked (running)")
    waiting_pulls: int = Field(description="pull requests waiting: idle worker capacity")
    workers: int = Field(
        description="live workers (online or stale) serving this pool and model and accepting "
        "jobs: warm + cold"
    )
    running: int = Field(description="the same as ack_pending")
    oldest_wait_s: float | None = Field(
        description="how long the oldest job not yet delivered has waited; null when none waits"
    )
    warm_workers: list[str] = Field(description="live workers with the model loaded")
    cold_workers: list[str] = Field(description="live workers that serve it but must load it")
    suggested_workers: int = Field(
        description="how many workers the model wants now (an autoscaling signal)"
    )


class PoolOut(BaseModel):
    name: str
    models: list[str]
    backlog: int
    consumers: list[PoolModelOut]


class PoolList(BaseModel):
    pools: list[PoolOut]


class QueueFigures(BaseModel):
    """Live queue figures (projections.queue): jobs this gateway follows, waits by event time."""

    queued: int = Field(description="jobs queued now")
    running: int = Field(description="jobs claimed or running now")
    oldest_wait_s: float | None = Field(description="how long the oldest queued job has waited")
    wait_p50_s: float | None = Field(description="median submit-to-start of recent starts")
    wait_p95_s: float | None = Field(description="95th percentile of the same")
    drain_per_s: float = Field(description="jobs started per second over the window")


class QueueTenantOut(QueueFigures):
    tenant: str = Field(description="the submitter (API key name or NATS user); '-' for none")
    share: float = Field(description="the tenant's fraction of the running jobs of its row")


class QueueOut(QueueFigures):
    pool: str
    model: str
    tenants: list[QueueTenantOut]


class QueueList(BaseModel):
    """GET /v1/queue: one row per (pool, model) with live jobs or starts in the window."""

    window_s: float = Field(description="the window of the waits and the drain rate")
    queues: list[QueueOut]


class UsageRow(BaseModel):
    """Usage summed under one key, model or worker (projections.usage); `cost` with prices."""

    model_config = ConfigDict(extra="allow")  # the `by` column: key, model or worker
    jobs: int
    runs: int
    run_s: float = Field(description="seconds the runs took, start to outcome")
    gpu_s: float = Field(description="run time times the worker's GPUs over its concurrency")
    energy_j: float = Field(description="the runs' share of their workers' GPU power, in J")
    energy_unknown_runs: int = Field(description="runs whose energy is unknown (no power)")
    tokens: int
    cost: float | None = None
    currency: str | None = None


class UsageList(BaseModel):
    """GET /v1/usage: the runs that ended in [from, to), summed `by` key, model or worker."""

    model_config = ConfigDict(populate_by_name=True)
    from_: str = Field(alias="from")
    to: str
    by: str
    usage: list[UsageRow]


class StallOut(BaseModel):
    job_id: str
    pool: str | None
    model: str | None
    time: str
    stall_s: float = Field(description="seconds the job went without a token")


class WorkerStallsOut(BaseModel):
    worker_id: str
    count: int
    latest: list[StallOut]


class StallList(BaseModel):
    """GET /v1/stalls: recent stalls per worker, most first."""

    since_s: float
    workers: list[WorkerStallsOut]


class ErrorDetail(BaseModel):
    type: str
    message: str
    code: str | None = None
    field: str | None = None


class ErrorOut(BaseModel):
    """Every /v1 error."""

    error: ErrorDetail
