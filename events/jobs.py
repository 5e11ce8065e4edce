"""The submission: the one event family on the JOBS stream."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, Field, field_validator, model_validator

from jetgrid.events.base import Event
from jetgrid.events.subjects import MAX_MODEL_LEN, check_id

Priority = Literal["high", "normal", "low"]
JobKind = Literal["generate", "chat", "embed", "python"]


class JobSubmitted(Event):
    """A client asked for `model` to run over `prompt` or `input` in `pool`."""

    type: Literal["jetgrid.job.submitted"] = "jetgrid.job.submitted"
    version: Literal[1] = 1
    job_id: str
    model: str = Field(min_length=1, max_length=MAX_MODEL_LEN)
    pool: str
    kind: JobKind = "generate"
    prompt: str | None = None
    input: dict[str, Any] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = "normal"
    timeout_s: float | None = Field(default=None, gt=0)
    idempotency_key: str | None = Field(default=None, max_length=256)
    submitter: str | None = None
    # Deadline: no worker may start the job after `start_by` (an RFC 3339 time with an offset)
    # or after `ttl_s` seconds from its submission, whichever comes first; then it ends
    # `expired` (coordinator.deadlines).
    start_by: AwareDatetime | None = None
    ttl_s: float | None = Field(default=None, gt=0)
    # Where jetgrid POSTs the job's terminal outcome (coordinator.webhooks); None: nowhere.
    webhook: str | None = Field(default=None, max_length=2048)
    # The gateway's proof that the API key named `submitter` asked for `webhook` on this job
    # (coordinator.webhooks.submitter_proof); without it no key's secret signs the delivery.
    webhook_proof: str | None = Field(default=None, max_length=128)
    # A job made from one line of a batch's input file (gateway.batches): the batch, the line.
    batch_id: str | None = Field(default=None, max_length=64)
    custom_id: str | None = Field(default=None, max_length=512)
    # The tenant queue the job waits in (a fair-share pool; its subject's tenant token): the
    # submitter's name, set by whoever submits. None: the pool's shared queue.
    tenant: str | None = Field(default=None, min_length=1, max_length=128)
    # Affinity (coordinator.share): the client's session key, and the lane of its tenant queue
    # the job waits in (its subject's last token), derived from the session or prompt prefix.
    session: str | None = Field(default=None, min_length=1, max_length=256)
    lane: int | None = Field(default=None, ge=0, lt=1000)
    # The W3C trace id (32 lowercase hex) of the submission's traceparent, which travels in the
    # message's `traceparent` header (coordinator.tracecontext); shown in the job's view.
    trace_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")

    @field_validator("job_id")
    @classmethod
    def _job_id_is_a_token(cls, v: str) -> str:
        return check_id(v, "job_id")

    @field_validator("pool")
    @classmethod
    def _pool_is_a_token(cls, v: str) -> str:
        return check_id(v, "pool")

    @model_validator(mode="after")
    def _has_work(self) -> JobSubmitted:
        if self.prompt is None and self.input is None:
            raise ValueError("a job needs 'prompt' or 'input'")
        return self
