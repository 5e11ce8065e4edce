"""The worker agent: one `Worker` per process, made of small parts that each do one job.

`Worker` wires them together and runs the lifecycle: connect, register (retried through a NATS
failover, coordinator.backoff.FAILOVER), bind the (pool, model, priority) consumers, let the
backend take stock, listen for cancels, start a dead-letter watcher and the pings, then pull
until `stop()` (or, in burst mode, until its consumers are empty), drain (`draining`, finish
what it holds within the grace period, hand back the rest), and say `deregistered`. The parts:

- worker.pulling: the pull loop (priority sweeps, long polls, affinity caps, burst check);
- worker.jobs: one delivery, from decoding to its outcome, with an in-progress keepalive;
- worker.outcomes: job events and acks (terminal events stored before the ack);
- worker.cancels: the cancel listener and the stored-request lookup;
- worker.heartbeats: pings, the tier watch and the tier gate;
- worker.held: what the worker holds now, which the parts share.

Tests and benchmarks change a part through the constructor (`outcomes=`, `keep_alive=`), never
by overriding the worker's own methods.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import socket
import time
import uuid
from collections.abc import Callable

from jetgrid.coordinator.aio import cancel_and_wait, retrying
from jetgrid.coordinator.backoff import FAILOVER, GOODBYE
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.consumers import ConsumerSpec
from jetgrid.coordinator.pools import PoolConfig
from jetgrid.coordinator.settings import Settings
from jetgrid.events import (
    Event,
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
    check_id,
)
from jetgrid.events.addressing import Speaker
from jetgrid.worker.backends.base import Backend
from jetgrid.worker.cancels import Cancels
from jetgrid.worker.deadletter import watch_beside_worker
from jetgrid.worker.heartbeats import Heartbeats
from jetgrid.worker.held import Held
from jetgrid.worker.jobs import JobRunner, KeepAlive, send_in_progress
from jetgrid.worker.options import Counters, WorkerOptions, default_worker_id
from jetgrid.worker.outcomes import Outcomes
from jetgrid.worker.pulling import PullScheduler
from jetgrid.worker.telemetry import GpuProbe, Reading
from jetgrid.worker.tiers import TierWatch
from jetgrid.worker.tracing import SpanExporter, Tracing

__all__ = ["Counters", "Worker", "WorkerOptions", "default_worker_id"]

log = logging.getLogger("jetgrid.worker")


def _version() -> str | None:
    try:
        return importlib.metadata.version("jetgrid")
    except importlib.metadata.PackageNotFoundError:
        return None


class Worker:
    """One worker process's agent. `await run()`; `stop()` (or SIGTERM via the CLI) drains it."""

    # How long leaving may wait for the NATS connection to drain before closing it.
    CLOSE_TIMEOUT_S = 3.0

    # The parts that talk to NATS about jobs; run() makes them once it has connected.
    outcomes: Outcomes
    cancels: Cancels
    jobs: JobRunner

    def __init__(
        self,
        settings: Settings,
        options: WorkerOptions,
        backend: Backend,
        *,
        clock: Callable[[], float] = time.monotonic,
        probe: GpuProbe | None = None,
        outcomes: type[Outcomes] = Outcomes,
        keep_alive: KeepAlive = send_in_progress,
        span_exporter: SpanExporter | None = None,
    ) -> None:
        """`outcomes`: the part that stores job events and acks (a subclass changes what it
        does); `keep_alive`: what runs beside each job to keep its lease (+WPI by default);
        `span_exporter`: where job spans go instead of settings.otlp_endpoint (worker.tracing)."""
        check_id(options.worker_id, "worker id")
        check_id(options.pool, "pool")
        if options.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {options.concurrency}")
        if not options.models:
            raise ValueError("a worker needs at least one model")
        self.settings = settings
        self.options = options
        self.pool: PoolConfig = settings.pool_configs().get(options.pool) or PoolConfig(
            options.pool
        )
        self.backend = backend
        self.clock = clock
        self.id = options.worker_id
        self.boot_id = uuid.uuid4().hex[:12]
        self.speaker = Speaker.worker(self.id, self.boot_id)
        self.counters = Counters()
        self.bus: Bus | None = None
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._make_outcomes = outcomes
        self._keep_alive = keep_alive
        self.held = Held()
        self.tracing = Tracing.configure(settings, options.worker_id, span_exporter)
        self.heartbeats = Heartbeats(
            settings=settings,
            options=options,
            speaker=self.speaker,
            backend=backend,
            counters=self.counters,
            held=self.held,
            stopping=self._stopping,
            wake=self._wake,
            withdraw=lambda: self.pulls.withdraw(),  # made next: the pulls need the gate
            probe=probe,
            clock=clock,
        )
        self.gate = self.heartbeats.gate
        self.pinger = self.heartbeats.pinger
        self.pulls = PullScheduler(
            settings=settings,
            pool=self.pool,
            models=options.models,
            gate=self.gate,
            held=self.held,
            stopping=self._stopping,
            wake=self._wake,
        )

    def __repr__(self) -> str:
        c = self.counters
        return (
            f"<Worker {self.id} pool={self.options.pool} models={list(self.options.models)} "
            f"in_flight={len(self.held.contexts)} claimed={c.claimed} completed={c.completed} "
            f"failed={c.failed} retried={c.retried} invalid={c.invalid} pings={c.pings} "
            f"cancelled={c.cancelled} timed_out={c.timed_out} stalled={c.stalled} "
            f"duplicates={c.duplicates} "
            f"tier={self.gate.tier} factor={self.gate.factor:g}>"
        )

    @property
    def tier_watch(self) -> TierWatch | None:
        """The watch on this worker's tier key, once the worker runs."""
        return self.heartbeats.tier_watch

    @property
    def pulls_withdrawn(self) -> int:
        """How often a tier factor of 0 withdrew the open pull requests."""
        return self.heartbeats.pulls_withdrawn

    @property
    def stopping(self) -> bool:
        """stop() was called (a burst-mode worker ends without it)."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Ask the worker to drain: stop pulling, finish what it holds, deregister, return."""
        self._stopping.set()
        self._wake.set()

    def heartbeat(self, n: int, reading: Reading | None = None) -> WorkerHeartbeat:
        """The ping this worker sends at tick `n`, with the GPU health `reading` saw."""
        return self.heartbeats.heartbeat(n, reading)

    def pull_allowance(self) -> int:
        """How many jobs to ask for now: free slots, within the tier's budget."""
        return self.pulls.allowance()

    @property
    def specs(self) -> list[ConsumerSpec]:
        """The worker's consumers: one per (model, priority) of its pool."""
        return self.pulls.specs

    async def run(self) -> None:
        """Serve until stop() (or, in burst mode, until every consumer is empty)."""
        self.bus = bus = await Bus.connect(self.settings, name=f"jetgrid-worker-{self.id}")
        try:
            # A refusal (wrong credentials for this worker id) is a clear PermissionDenied, not
            # a hang; anything else is retried while NATS fails over.
            await retrying(
                lambda: bus.store(self._registered(), self.speaker),
                FAILOVER,
                "register",
                logger=log,
            )
            self._connect_parts(bus)
            await self.pulls.bind(bus, self.backend, self.jobs.on_message)
            await self._start_backend()
            await self.cancels.listen()
            if self.pulls.specs:
                spec = self.pulls.specs[0]
                await self.cancels.mark(spec.stream, spec.name)
            watcher = None
            if self.options.dead_letters:
                watcher = watch_beside_worker(self.settings, bus, self.id)
            hb = asyncio.create_task(self.heartbeats.run(bus), name=f"heartbeat-{self.id}")
            self.ready.set()
            try:
                await self.pulls.run(bus, burst=self.options.burst)
                await self._drain(bus)
            finally:
                await cancel_and_wait(hb)
                if watcher is not None:
                    await cancel_and_wait(watcher)
            await self._say_goodbye(bus, WorkerDeregistered(worker_id=self.id, reason="stopped"))
        finally:
            await self.pulls.stop()
            await self.backend.close()
            await bus.close(self.CLOSE_TIMEOUT_S)
            await asyncio.to_thread(self.tracing.close)  # exports the spans still pending

    def _connect_parts(self, bus: Bus) -> None:
        self.outcomes = self._make_outcomes(
            bus=bus,
            settings=self.settings,
            pool=self.pool,
            speaker=self.speaker,
            worker_id=self.id,
            counters=self.counters,
        )
        self.cancels = Cancels(
            bus=bus, settings=self.settings, counters=self.counters, held=self.held
        )
        self.jobs = JobRunner(
            bus=bus,
            settings=self.settings,
            pool=self.pool,
            backend=self.backend,
            worker_id=self.id,
            counters=self.counters,
            held=self.held,
            gate=self.gate,
            outcomes=self.outcomes,
            cancels=self.cancels,
            keep_alive=self._keep_alive,
            stopping=self._stopping,
            wake=self._wake,
            tracing=self.tracing,
        )
        self.outcomes.on_stored = self.jobs.release

    async def _start_backend(self) -> None:
        """Let the backend take stock (e.g. Ollama's model inventory, pulls) before pulling."""
        start = getattr(self.backend, "start", None)
        if start is None:
            return
        try:
            await start()
        except Exception:  # a backend that cannot start yet reports it in its pings
            log.exception("backend %s failed to start", self.backend.name)

    async def _drain(self, bus: Bus) -> None:
        await self._say_goodbye(bus, WorkerDraining(worker_id=self.id, reason="stopping"))
        if held := self.held.every():
            _, pending = await asyncio.wait(held, timeout=self.options.drain_grace_s)
            for task in pending:  # past the grace period: the job goes back to the pool
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _say_goodbye(self, bus: Bus, event: Event) -> None:
        """Store `draining` / `deregistered`; if NATS stays away, log it and leave anyway (the
        missing pings tell the rest)."""
        try:
            await retrying(
                lambda: bus.store(event, self.speaker), GOODBYE, "say goodbye", logger=log
            )
        except Exception as exc:
            log.warning("could not store %s: %s", event.type, exc)

    def _registered(self) -> WorkerRegistered:
        return WorkerRegistered(
            worker_id=self.id,
            pools=[self.options.pool],
            models=list(self.options.models),
            backend=self.backend.name,
            concurrency=self.options.concurrency,
            heartbeat_interval_s=self.settings.heartbeat_interval_s,
            hostname=socket.gethostname(),
            jetgrid_version=_version(),
            boot_id=self.boot_id,
            pull_rate=self.settings.pull_rate or None,
        )
