"""Worker events, on WORKERS as ``<prefix>.worker.<worker_id>.<name>``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jetgrid.events.base import Event


class GpuTelemetry(BaseModel):
    """One GPU as NVML saw it during a ping; `responsive` False means NVML gave up on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    index: int
    uuid: str | None = None
    name: str | None = None
    responsive: bool = True
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    ecc_errors: int | None = None
    xid_errors: int | None = None
    error: str | None = None


class ModelInfo(BaseModel):
    """A model a worker's backend has: on disk (available) or in (V)RAM (loaded)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    size_bytes: int | None = None
    size_vram_bytes: int | None = None
    expires_at: str | None = None


class _WorkerEvent(Event):
    worker_id: str


class WorkerRegistered(_WorkerEvent):
    """A worker came up and says what it serves."""

    type: Literal["jetgrid.worker.registered"] = "jetgrid.worker.registered"
    version: Literal[1] = 1
    pools: list[str]
    models: list[str]
    backend: str
    concurrency: int = Field(ge=1)
    heartbeat_interval_s: float = Field(gt=0)
    hostname: str | None = None
    jetgrid_version: str | None = None
    boot_id: str | None = None
    # The worker's base pull rate in jobs/s before its tier factor; None: no base rate (its
    # concurrency bounds it). Optional, so registrations from before it existed still decode.
    pull_rate: float | None = Field(default=None, ge=0)


class WorkerHeartbeat(_WorkerEvent):
    """The ping: liveness plus health, every heartbeat_interval_s."""

    type: Literal["jetgrid.worker.heartbeat"] = "jetgrid.worker.heartbeat"
    version: Literal[1] = 1
    n: int = Field(ge=0, description="ping counter since the worker's boot")
    healthy: bool
    interval_s: float = Field(gt=0)
    in_flight: int = Field(ge=0)
    completed: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    pools: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    nvml: bool = False
    nvml_error: str | None = None
    gpus: list[GpuTelemetry] = Field(default_factory=list)
    tier_factor: float | None = None
    accepting: bool = True
    boot_id: str | None = None
    # What the backend holds (Ollama: /api/ps and /api/tags); empty for backends without models.
    models_loaded: list[ModelInfo] = Field(default_factory=list)
    models_available: list[ModelInfo] = Field(default_factory=list)
    backend_error: str | None = None
    # Why the ping is unhealthy (empty when healthy); added after v1 shipped, hence optional.
    problems: list[str] = Field(default_factory=list)


class WorkerDraining(_WorkerEvent):
    """The worker stopped pulling and is finishing what it holds."""

    type: Literal["jetgrid.worker.draining"] = "jetgrid.worker.draining"
    version: Literal[1] = 1
    reason: str | None = None


class WorkerDeregistered(_WorkerEvent):
    """The worker left cleanly."""

    type: Literal["jetgrid.worker.deregistered"] = "jetgrid.worker.deregistered"
    version: Literal[1] = 1
    reason: str | None = None


class WorkerRollup(_WorkerEvent):
    """One hour of a worker's pings, as its uptime tracker folded them (projections.rollup).

    Published by the projector on ``<prefix>.rollup.<worker_id>`` (the ROLLUPS stream, kept far
    longer than raw pings) once the hour is over in event time on WORKERS and JOB_EVENTS
    (projections.hours), under the Nats-Msg-Id
    ``<worker_id>:rollup:<hour>``. The slot fields are the tracker's own (projections.rollup);
    `healthy_slots`, `total_slots` and `tier` are the hour's summary for people;
    the lifecycle fields let a reader whose raw pings aged out go on exactly (projections.prelude).
    """

    type: Literal["jetgrid.worker.rollup"] = "jetgrid.worker.rollup"
    version: Literal[1] = 1
    hour: int = Field(ge=0, multiple_of=3600, description="the hour's start, epoch seconds")
    interval_s: float = Field(gt=0)
    origin: float
    first_slot: int
    lo: int
    top: int
    bits: str = Field(max_length=200_000, description="slots lo..top, projections.rollup")
    away: int | None = None
    provisional: float | None = None
    resumed: float | None = None
    healthy_slots: int = Field(ge=0)
    total_slots: int = Field(ge=0)
    tier: str
    # The worker's lifecycle at the hour's end, epoch seconds (the absence rules of the tracker
    # depend on it); absent in rollups published before these fields existed.
    registered_at: float | None = None
    draining_at: float | None = None
    deregistered_at: float | None = None
    last_ping_at: float | None = None
    boot_id: str | None = Field(default=None, max_length=200)
    reanchor: bool = False
    # The jobs the worker took in the hour (projections.hours): in all, per tier at the time
    # taken, and taken for want of better; absent in rollups published before they were counted.
    jobs_taken: int | None = Field(default=None, ge=0)
    jobs_taken_per_tier: dict[str, int] | None = Field(default=None, max_length=64)
    jobs_taken_fallback: int | None = Field(default=None, ge=0)
