"""The worker agent: register, ping, pull jobs for its (pool, model)s, run them, report.

Per job: decode (a bad message goes to the invalid stream and is terminated), publish `claimed`,
skip it if a cancel was requested, publish `started`, run the backend under the job's timeout
with an in-progress ack every ack_wait/3, then store the terminal event (`completed`, `failed`
or `cancelled`, with ``Nats-Msg-Id: <job>:terminal``) and only then ack. A transient failure
publishes `retrying` and naks with the pool's backoff; on the last delivery it naks at once so
JetStream's max-deliveries advisory makes the job `dead` (worker/deadletter.py). `claimed`,
`started` and `retrying` are published without waiting for the stream's ack (they are stored all
the same, in order, on the same connection); the terminal event is awaited, because the ack
depends on it. Pulls sweep the priority consumers highest first (coordinator.delivery.next_pull).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import math
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg

from jetgrid.coordinator.affinity import AffinityPolicy
from jetgrid.coordinator.aio import cancel_and_wait
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.consumers import ConsumerSpec, pool_consumer
from jetgrid.coordinator.delivery import (
    CLOCK_MARGIN_S,
    PRIORITIES,
    GiveUp,
    after_transient,
    cancel_heard_live,
    consumer_max_deliver,
    dead_reason,
    is_recording_delivery,
    keepalive_period,
    next_pull,
)
from jetgrid.coordinator.errors import PayloadTooLarge, PermissionDenied
from jetgrid.coordinator.pools import PoolConfig
from jetgrid.coordinator.provision import ensure_consumer
from jetgrid.coordinator.settings import Settings
from jetgrid.coordinator.tiers import PROBATION, load_policy
from jetgrid.events import (
    JOBS,
    Event,
    InvalidEvent,
    InvalidMessage,
    JetgridError,
    JobCancelled,
    JobCancelRequested,
    JobClaimed,
    JobCompleted,
    JobDead,
    JobFailed,
    JobRetrying,
    JobStarted,
    JobSubmitted,
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
    check_id,
    decode,
    decode_submission,
    encode,
)
from jetgrid.events.addressing import Speaker
from jetgrid.worker.backends.base import Backend, RunContext
from jetgrid.worker.deadletter import DeadLetterWatcher, last_retry_reason
from jetgrid.worker.errors import BackendError, TransientError
from jetgrid.worker.pinger import Pinger
from jetgrid.worker.puller import Puller
from jetgrid.worker.pullgate import PullGate as AffinityGate
from jetgrid.worker.simulate import UptimeSchedule
from jetgrid.worker.telemetry import GpuProbe, NvmlProbe, Reading
from jetgrid.worker.tiers import PullGate, TierUpdate, TierWatch
from jetgrid.worker.tokens import TokenPublisher

log = logging.getLogger("jetgrid.worker")


def _version() -> str | None:
    try:
        return importlib.metadata.version("jetgrid")
    except importlib.metadata.PackageNotFoundError:
        return None


def default_worker_id() -> str:
    """The host name, reduced to subject-token characters."""
    host = socket.gethostname().split(".")[0] or "worker"
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in host)[:64]


@dataclass
class WorkerOptions:
    pool: str
    models: tuple[str, ...]
    worker_id: str = field(default_factory=default_worker_id)
    concurrency: int = 1
    burst: bool = False
    drain_grace_s: float = 30.0
    # --simulate-uptime: miss or fail pings on a reproducible schedule (worker.simulate).
    simulate_uptime: float | None = None
    simulate_seed: int = 0
    # Run a dead-letter watcher alongside (worker/deadletter.py); any number of them is safe.
    dead_letters: bool = True


@dataclass
class Counters:
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    invalid: int = 0
    pings: int = 0
    cancelled: int = 0
    timed_out: int = 0
    duplicates: int = 0  # terminal events the stream dropped: another worker reported first
    cancel_lookups: int = 0  # stored cancel requests looked up before a job started


class Worker:
    """One worker process's agent. `await run()`; `stop()` (or SIGTERM via the CLI) drains it."""

    LONG_POLL_S = 1.0  # an idle worker's long poll; high/low jobs in an idle pool wait <= this
    CANCELS_KEPT = 10_000  # cancel requests remembered for jobs this worker has not seen yet

    def __init__(
        self,
        settings: Settings,
        options: WorkerOptions,
        backend: Backend,
        *,
        clock: Callable[[], float] = time.monotonic,
        probe: GpuProbe | None = None,
    ) -> None:
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
        self._pullers: list[Puller] = []
        self._models: dict[str, str] = {}  # consumer name -> model
        self._affinity: AffinityGate | None = None
        self._by_priority: dict[str, list[Puller]] = {p: [] for p in PRIORITIES}
        self._cancels: dict[str, str | None] = {}  # job id -> reason, most recent last
        # Since when (worker clock) the cancel listener has heard every request: set once it is
        # subscribed, moved on when it forgets one (CANCELS_KEPT); inf before.
        self._cancels_heard_since = math.inf
        self.cancel_clock_margin_s = CLOCK_MARGIN_S
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, RunContext] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._rr = 0
        self.ready = asyncio.Event()
        self._init_tiers(probe)

    # How long leaving may wait for the NATS connection to drain before closing it.
    CLOSE_TIMEOUT_S = 3.0

    def __repr__(self) -> str:
        c = self.counters
        return (
            f"<Worker {self.id} pool={self.options.pool} models={list(self.options.models)} "
            f"in_flight={len(self._in_flight)} claimed={c.claimed} completed={c.completed} "
            f"failed={c.failed} retried={c.retried} invalid={c.invalid} pings={c.pings} "
            f"cancelled={c.cancelled} timed_out={c.timed_out} duplicates={c.duplicates} "
            f"tier={self.gate.tier} factor={self.gate.factor:g}>"
        )

    # -- lifecycle -----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the worker to drain: stop pulling, finish what it holds, deregister, return."""
        self._stopping.set()
        self._wake.set()

    @property
    def specs(self) -> list[ConsumerSpec]:
        s, pool = self.settings, self.pool
        return [
            pool_consumer(
                s.subjects,
                s.streams.jobs,
                pool.name,
                m,
                ack_wait_s=pool.ack_wait_s,
                max_deliver=consumer_max_deliver(pool.max_deliver),
                max_ack_pending=pool.max_ack_pending,
                priority=p,
            )
            for m in self.options.models
            for p in PRIORITIES
        ]

    async def run(self) -> None:
        """Serve until stop() (or, in burst mode, until every consumer is empty)."""
        self.bus = bus = await Bus.connect(self.settings, name=f"jetgrid-worker-{self.id}")
        try:
            # A refusal (wrong credentials for this worker id) is a clear PermissionDenied, not
            # a hang; anything else is retried while NATS fails over.
            await self._patiently(lambda: bus.store(self._registered(), self.speaker), "register")
            spec_models = [m for m in self.options.models for _ in PRIORITIES]
            for model, spec in zip(spec_models, self.specs, strict=True):
                await self._patiently(
                    lambda spec=spec: bus.call(
                        ensure_consumer(bus.js, spec), f"use consumer {spec.stream}/{spec.name}"
                    ),
                    f"bind {spec.name}",
                )
                puller = Puller(
                    bus.nc,
                    spec.stream,
                    spec.name,
                    self._on_message,
                    on_end=self._wake.set,
                    expires_s=self.LONG_POLL_S,
                )
                await puller.start()
                self._pullers.append(puller)
                self._by_priority[spec.priority].append(puller)
                self._models[spec.name] = model
            self._affinity = AffinityGate(bus, self.backend, AffinityPolicy.for_pool(self.pool))
            await self._start_backend()
            await self._listen_for_cancels()
            watcher = await self._start_dead_letter_watcher()
            hb = asyncio.create_task(self._heartbeats(), name=f"heartbeat-{self.id}")
            self.ready.set()
            try:
                await self._pull_loop()
                await self._drain()
            finally:
                await cancel_and_wait(hb)
                if watcher is not None:
                    await cancel_and_wait(watcher)
            await self._publish_leaving(WorkerDeregistered(worker_id=self.id, reason="stopped"))
        finally:
            for p in self._pullers:
                await p.stop()
            await self.backend.close()
            await bus.close(self.CLOSE_TIMEOUT_S)

    async def _start_dead_letter_watcher(self) -> asyncio.Task[None] | None:
        if not self.options.dead_letters:
            return None
        assert self.bus is not None
        watcher = DeadLetterWatcher(
            self.settings, self.bus, name=f"worker/{self.id}/deadletter", worker_id=self.id
        )

        async def watch() -> None:
            try:
                await watcher.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. not permitted here: the job path must carry on
                log.warning("dead-letter watcher stopped: %s; run `jetgrid deadletter`", exc)

        return asyncio.create_task(watch(), name=f"deadletter-{self.id}")

    async def _drain(self) -> None:
        await self._publish_leaving(WorkerDraining(worker_id=self.id, reason="stopping"))
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.options.drain_grace_s)
            for task in pending:  # past the grace period: the job goes back to the pool
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    # -- pulling -------------------------------------------------------------------------
    async def _pull_loop(self) -> None:
        idle_checks = 0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self._pull_round()
            except Exception as exc:  # NATS away: the next round retries
                log.info("pull round failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.gate.wait_s(0.5))
            if self.options.burst and not self._tasks:
                idle_checks = idle_checks + 1 if await self._consumers_empty() else 0
                if idle_checks >= 2:
                    return

    async def _pull_round(self) -> None:
        """One sweep over the priority consumers (coordinator.delivery.next_pull decides)."""
        swept: list[str] = []
        got_any = False
        while (pull := next_pull(self.pull_allowance(), swept, got_any)) is not None:
            if self._stopping.is_set():
                return
            if pull.wait:
                await self._long_poll(pull.n)
                return
            got_any = await self._take_now(pull.priority) > 0 or got_any
            swept.append(pull.priority)

    async def _take_now(self, priority: str) -> int:
        """No-wait requests to this priority's consumers (one per model), while slots are free."""
        pullers = self._by_priority[priority]
        got = 0
        for i in range(len(pullers)):
            p = pullers[(self._rr + i) % len(pullers)]
            free = self.pull_allowance()
            if free <= 0:
                break
            if p.long_polling:  # an open long poll already gets this consumer's messages
                continue
            cap = await self._cap(p)
            if cap != 0:
                got += await p.take_now(free if cap is None else min(free, cap))
        return got

    async def _long_poll(self, free: int) -> None:
        """Spread the free slots over the normal consumers, starting where we left off."""
        plan = [(p, cap) for p in self._by_priority["normal"] if (cap := await self._cap(p)) != 0]
        n = len(plan)
        if n == 0:
            return
        shares = [free // n + (1 if i < free % n else 0) for i in range(n)]
        for i in range(n):
            p, cap = plan[(self._rr + i) % n]
            await p.request(shares[i] if cap is None else min(shares[i], cap))
        self._rr = (self._rr + 1) % n

    async def _cap(self, puller: Puller) -> int | None:
        """How many jobs this consumer may be asked for now (None: any; 0: none): warm models
        at once, cold ones only when their backlog says so, none while the backend is not
        accepting (worker.pullgate)."""
        if self._affinity is None:
            return None
        model = self._models[puller.consumer]
        return await self._affinity.decide(puller.stream, puller.consumer, self.options.pool, model)

    async def _start_backend(self) -> None:
        """Let the backend take stock (e.g. Ollama's model inventory, pulls) before pulling."""
        start = getattr(self.backend, "start", None)
        if start is None:
            return
        try:
            await start()
        except Exception:  # a backend that cannot start yet reports it in its pings
            log.exception("backend %s failed to start", self.backend.name)

    def _backend_report(self) -> dict[str, Any]:
        """Ping fields from the backend: its models, and whether it is accepting jobs."""
        b = self.backend
        return {
            "models_loaded": list(getattr(b, "loaded", [])),
            "models_available": list(getattr(b, "available", [])),
            "backend_error": getattr(b, "last_error", None),
            "accepting": not self._stopping.is_set() and bool(getattr(b, "accepting", True)),
        }

    async def _consumers_empty(self) -> bool:
        assert self.bus is not None
        for spec in self.specs:
            info = await self.bus.consumer_info(spec.stream, spec.name)
            if info.num_pending or info.num_ack_pending:
                return False
        return True

    def _on_message(self, msg: Msg) -> None:
        if self._stopping.is_set():
            # A pull request sent before draining began can still deliver: hand it straight back.
            task = asyncio.create_task(self._hand_back(msg))
        else:
            self.gate.charge()
            task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _hand_back(self, msg: Msg) -> None:
        with contextlib.suppress(Exception):
            await msg.nak()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("job handler crashed: %r", task.exception())

    # -- one job -------------------------------------------------------------------------
    async def _handle(self, msg: Msg) -> None:
        md = msg.metadata
        seq, attempt = md.sequence.stream, md.num_delivered
        try:
            env = decode_submission(
                msg.data,
                subject=msg.subject,
                subjects=self.settings.subjects,
                seq=seq,
                stream_time=md.timestamp,
            )
        except InvalidEvent as exc:
            await self._reject(msg, seq, exc.reason)
            return
        job: JobSubmitted = env.event
        log.debug("job %s: delivery %d of JOBS seq %d", job.job_id, attempt, seq)
        if is_recording_delivery(attempt, self.pool):
            await self._record_dead(msg, job, seq)
            return
        assert self.bus is not None
        ctx = RunContext(
            worker_id=self.id,
            attempt=attempt,
            emit=TokenPublisher(self.bus, self.settings.subjects.tokens(job.job_id), job.job_id),
        )
        self._in_flight[job.job_id] = ctx
        self.counters.claimed += 1
        keepalive = asyncio.create_task(self._keep_alive(msg))
        try:
            await self._job_event(
                JobClaimed(
                    job_id=job.job_id,
                    worker_id=self.id,
                    attempt=attempt,
                    jobs_seq=seq,
                    tier_factor=self.gate.factor,
                )
            )
            if await self._cancel_requested(job.job_id, ctx, md.timestamp):
                await self._finish(msg, self._cancelled(job, attempt, "cancelled before start"))
                self.counters.cancelled += 1
                return
            await self._job_event(JobStarted(job_id=job.job_id, worker_id=self.id, attempt=attempt))
            await self._run(msg, job, ctx, attempt)
        except asyncio.CancelledError:
            # Drain grace ran out: hand the job back (redelivered at once) rather than lose it.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        finally:
            keepalive.cancel()
            self._in_flight.pop(job.job_id, None)

    async def _run(self, msg: Msg, job: JobSubmitted, ctx: RunContext, attempt: int) -> None:
        """Run the backend under the job's timeout and cancel signal; report the outcome."""
        timeout = self.pool.timeout_for(job.timeout_s)
        t0 = time.perf_counter()
        run = asyncio.create_task(self.backend.run(job, ctx), name=f"job-{job.job_id}")
        self._running[job.job_id] = run
        try:
            try:
                done, _ = await asyncio.wait({run}, timeout=timeout)
            except asyncio.CancelledError:
                run.cancel()  # drain grace ran out: stop the backend (_handle hands the job back)
                await asyncio.wait({run})
                raise
            if not done:
                run.cancel()
                await asyncio.wait({run})
                if not ctx.cancelled.is_set():
                    self.counters.timed_out += 1
                    await self._fail(
                        msg,
                        job,
                        attempt,
                        f"ran past its timeout of {timeout:g} s (job timeout_s "
                        f"{job.timeout_s}, pool cap {self.pool.job_timeout_cap_s:g} s)",
                        "timeout",
                    )
                    return
            if ctx.cancelled.is_set():
                await self._finish(
                    msg, self._cancelled(job, attempt, self._cancels.get(job.job_id))
                )
                self.counters.cancelled += 1
                return
            try:
                result = run.result()
            except TransientError as exc:
                await self._retry(msg, job, attempt, str(exc))
                return
            except BackendError as exc:
                await self._fail(msg, job, attempt, str(exc), exc.error_type)
                return
            except Exception as exc:
                # A backend bug is not going to fix itself on retry: fail with its message.
                log.exception(
                    "backend %s raised unexpectedly on job %s", self.backend.name, job.job_id
                )
                await self._fail(msg, job, attempt, f"{type(exc).__name__}: {exc}", "internal")
                return
            await ctx.emit.flush()  # type: ignore[attr-defined]  # the last chunks before the result
            await self._finish(
                msg,
                JobCompleted(
                    job_id=job.job_id,
                    worker_id=self.id,
                    attempt=attempt,
                    output=result.output,
                    usage=result.usage,
                    duration_s=time.perf_counter() - t0,
                ),
            )
            self.counters.completed += 1
        finally:
            self._running.pop(job.job_id, None)

    async def _fail(
        self, msg: Msg, job: JobSubmitted, attempt: int, reason: str, error_type: str
    ) -> None:
        await self._finish(
            msg,
            JobFailed(
                job_id=job.job_id,
                worker_id=self.id,
                attempt=attempt,
                reason=reason,
                error_type=error_type,
            ),
        )
        self.counters.failed += 1

    def _cancelled(self, job: JobSubmitted, attempt: int, reason: str | None) -> JobCancelled:
        return JobCancelled(
            job_id=job.job_id, worker_id=self.id, attempt=attempt, reason=reason or "cancelled"
        )

    # -- cancels -------------------------------------------------------------------------
    async def _listen_for_cancels(self) -> None:
        """Core-NATS subscription to every job's cancel_requested (stored in JOB_EVENTS too)."""
        assert self.bus is not None
        subject = f"{self.settings.subjects.prefix}.job.*.cancel_requested"
        await self.bus.nc.subscribe(subject, cb=self._on_cancel)
        await self.bus.flush()  # the server has the subscription: it hears from now on
        self._cancels_heard_since = time.time()

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            job_id = self._cancel_target(msg.subject, msg.data)
        except Exception as exc:  # a bad message must never stop this listener
            log.info("ignored cancel request on %s: %s", msg.subject, exc)
            return
        if job_id is None:
            return
        reason = "cancel requested"
        self._cancels[job_id] = reason
        while len(self._cancels) > self.CANCELS_KEPT:
            self._cancels.pop(next(iter(self._cancels)))
            self._cancels_heard_since = time.time()  # what it forgot, a lookup must find
        ctx = self._in_flight.get(job_id)
        if ctx is not None:
            ctx.cancelled.set()
        run = self._running.get(job_id)
        if run is not None:
            run.cancel()

    def _cancel_target(self, subject: str, data: bytes) -> str | None:
        """The job a cancel request names, or None when the message is not a valid request."""
        job_id, _ = self.settings.subjects.parse_job_event(subject)
        try:
            event = decode(data).event
        except InvalidEvent as exc:
            log.info("ignored invalid cancel request on %s: %s", subject, exc.reason)
            return None
        if not isinstance(event, JobCancelRequested) or event.job_id != job_id:
            log.info("ignored a message on %s that is not this job's cancel request", subject)
            return None
        return job_id

    async def _cancel_requested(
        self, job_id: str, ctx: RunContext, submitted: datetime | None
    ) -> bool:
        """Was the job cancelled before it started? Seen live, or stored in JOB_EVENTS (looked
        up only when the live listener may have missed it: coordinator.delivery)."""
        if ctx.cancelled.is_set() or job_id in self._cancels:
            return True
        assert self.bus is not None
        listening = max(self._cancels_heard_since, self.bus.continuity.since)
        margin = self.cancel_clock_margin_s
        if submitted is not None and cancel_heard_live(submitted.timestamp(), listening, margin):
            return False
        self.counters.cancel_lookups += 1
        subject = self.settings.subjects.job_event(job_id, "cancel_requested")
        try:
            stored = await self.bus.last_message(self.settings.streams.job_events, subject)
        except JetgridError as exc:  # NATS slow or away: run the job rather than stall it
            log.info("could not check job %s for a cancel request: %s", job_id, exc)
            return False
        if stored is None:
            return False
        try:
            return self._cancel_target(subject, stored.data) is not None
        except Exception:
            return False

    async def _keep_alive(self, msg: Msg) -> None:
        """+WPI every ack_wait/3, so a long job is not redelivered while this worker lives."""
        period = keepalive_period(self.pool.ack_wait_s)
        while True:
            await asyncio.sleep(period)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _finish(self, msg: Msg, event: Event) -> None:
        """Store the terminal event (deduplicated per job), then ack the submission."""
        job_id = event.job_id  # type: ignore[attr-defined]
        if await self._store_terminal(event):
            await msg.ack()
            log.debug("job %s: %s stored, acked", job_id, event.type)  # type: ignore[attr-defined]
        else:
            await msg.nak(delay=1.0)  # could not record the outcome: let the job run again
            log.debug("job %s: outcome not stored, handed back", job_id)

    async def _store_terminal(self, event: Event) -> bool:
        """Store a terminal event (``Nats-Msg-Id: <job>:terminal``, events.addressing); False
        if NATS stayed away through five tries."""
        assert self.bus is not None
        job_id: str = event.job_id  # type: ignore[attr-defined]
        for attempt in range(5):
            try:
                stored = await self.bus.store(event, self.speaker)
                if stored.duplicate:
                    self.counters.duplicates += 1
                break
            except PayloadTooLarge:
                # The outcome itself is too big to store: record that, not a retry loop.
                if not isinstance(event, JobCompleted):
                    raise
                size = len(encode(event, source=self.speaker.source))
                event = JobFailed(
                    job_id=job_id,
                    worker_id=event.worker_id,
                    attempt=event.attempt,
                    reason=f"the output ({size} bytes) exceeds the NATS max_payload",
                    error_type="output_too_large",
                )
            except JetgridError as exc:  # NATS down or slow: same Msg-Id, so retrying is safe
                log.warning("storing %s of job %s failed (%s); retrying", event.type, job_id, exc)  # type: ignore[attr-defined]
                await asyncio.sleep(0.2 * 2**attempt)
        else:
            return False
        return True

    async def _retry(self, msg: Msg, job: JobSubmitted, attempt: int, reason: str) -> None:
        decision = after_transient(attempt, self.pool)
        self.counters.retried += 1
        if isinstance(decision, GiveUp):
            # The last delivery. This worker knows the job is dead, so it says so (with the real
            # last error); it also naks, so JetStream's max-deliveries advisory fires and the
            # dead-letter watchers publish the same `dead` (dropped as a duplicate). Either one
            # suffices: an advisory can be lost while its stream fails over, and a worker that
            # crashes on the last delivery leaves only the advisory.
            log.info("job %s failed on its last delivery (%d): %s", job.job_id, attempt, reason)
            await self._store_terminal(
                JobDead(
                    job_id=job.job_id,
                    attempts=attempt,
                    jobs_seq=msg.metadata.sequence.stream,
                    reason=dead_reason(attempt, reason),
                )
            )
            await msg.nak()
            return
        await self._job_event(
            JobRetrying(
                job_id=job.job_id,
                worker_id=self.id,
                attempt=attempt,
                reason=reason,
                delay_s=decision.delay_s,
            )
        )
        await msg.nak(delay=decision.delay_s)

    async def _record_dead(self, msg: Msg, job: JobSubmitted, seq: int) -> None:
        """The delivery after the last run (coordinator.delivery.consumer_max_deliver): store
        `dead` without running the job, then nak, which ends its deliveries (JetStream's
        advisory follows, and the watchers' `dead` is dropped as a duplicate). If the event
        cannot be stored, the nak still lets the advisory make it dead."""
        runs = self.pool.max_deliver
        assert self.bus is not None
        last_error = await last_retry_reason(self.bus, self.settings, job.job_id)
        stored = await self._store_terminal(
            JobDead(
                job_id=job.job_id,
                attempts=runs,
                jobs_seq=seq,
                reason=dead_reason(runs, last_error),
            )
        )
        log.info("job %s ran %d times and is dead%s", job.job_id, runs,
                 "" if stored else " (not stored; the advisory will say so)")  # fmt: skip
        with contextlib.suppress(Exception):
            await msg.nak()

    async def _reject(self, msg: Msg, seq: int, reason: str) -> None:
        """Record an undecodable submission on the invalid stream, then never redeliver it."""
        self.counters.invalid += 1
        record = InvalidMessage.of(
            msg.data,
            stream=JOBS,
            subject=msg.subject,
            seq=seq,
            reason=reason,
            detected_by=self.speaker.source,
            headers={k: v for k, v in (msg.headers or {}).items() if isinstance(v, str)},
        )
        assert self.bus is not None
        await self.bus.store(record, self.speaker)
        await msg.term()
        log.info("rejected JOBS seq %s: %s", seq, reason)

    # -- events --------------------------------------------------------------------------
    async def _job_event(self, event: Event) -> None:
        """Publish a non-terminal lifecycle event without waiting for the stream's ack."""
        assert self.bus is not None
        await self.bus.send(event, self.speaker)

    async def _publish_leaving(self, event: Event) -> None:
        """Store `draining` / `deregistered`; if NATS stays away, log it and leave anyway (the
        missing pings tell the rest)."""
        try:
            bus = self.bus
            assert bus is not None
            await self._patiently(
                lambda: bus.store(event, self.speaker), "say goodbye", within_s=10.0
            )
        except Exception as exc:
            log.warning("could not store %s: %s", event.type, exc)  # type: ignore[attr-defined]

    async def _patiently(
        self, op: Callable[[], Awaitable[Any]], what: str, within_s: float = 30.0
    ) -> None:
        """Run `op`, retrying while NATS fails over (a stream leader election takes seconds);
        raise its last error after `within_s`. Every op here is idempotent (Msg-Id, or a
        create-if-missing)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            try:
                await op()
                return
            except PermissionDenied:
                raise  # a refusal is not a failover: waiting will not change the answer
            except Exception as exc:
                if loop.time() > deadline:
                    raise
                log.info("could not %s yet (%s); retrying", what, exc)
                await asyncio.sleep(0.5)

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

    def heartbeat(self, n: int, reading: Reading | None = None) -> WorkerHeartbeat:
        """The ping this worker sends at tick `n`, with the GPU health `reading` saw."""
        reading = reading or Reading(nvml=False, nvml_error="no GPU probe read")
        return WorkerHeartbeat(
            worker_id=self.id,
            n=n,
            interval_s=self.settings.heartbeat_interval_s,
            in_flight=len(self._in_flight),
            completed=self.counters.completed,
            failed=self.counters.failed,
            pools=[self.options.pool],
            models=list(self.options.models),
            **reading.heartbeat_fields(),
            problems=list(reading.problems),
            tier_factor=self.gate.factor,
            boot_id=self.boot_id,
            **self._backend_report(),
        )

    # -- pings and tiers (worker.pinger, worker.tiers) ----------------------------------
    def _init_tiers(self, probe: GpuProbe | None) -> None:
        s, o = self.settings, self.options
        self.probation_factor = load_policy(s.tier_policy_file, s.tier_policy).probation_factor
        self.gate = PullGate(
            concurrency=o.concurrency,
            rate=s.pull_rate,
            burst=s.pull_burst,
            factor=self.probation_factor,
            clock=self.clock,
        )
        schedule = None
        if o.simulate_uptime is not None:
            schedule = UptimeSchedule(o.simulate_uptime, seed=o.simulate_seed)
        self.pinger = Pinger(
            interval_s=s.heartbeat_interval_s,
            probe=probe or NvmlProbe(),
            build=self.heartbeat,
            send=self._send_ping,
            schedule=schedule,
            clock=self.clock,
        )
        self.tier_watch: TierWatch | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.pulls_withdrawn = 0

    def pull_allowance(self) -> int:
        """How many jobs to ask for now: free slots, within the tier's budget."""
        outstanding = sum(p.outstanding for p in self._pullers)
        return self.gate.allowance(len(self._tasks), outstanding)

    def _on_tier(self, update: TierUpdate | None) -> None:
        if update is None:  # no key (yet), or it was deleted: a new worker's factor
            tier, factor = PROBATION, self.probation_factor
        else:
            tier, factor = update.tier, update.factor
        if self.gate.set_factor(factor, tier):
            log.info("worker %s: tier %s, factor %g", self.id, tier, factor)
            if factor == 0:  # pull requests already out would still deliver: withdraw them
                task = asyncio.create_task(self._withdraw_pulls())
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)
        self._wake.set()

    async def _withdraw_pulls(self) -> None:
        for p in self._pullers:
            await p.withdraw()
        self.pulls_withdrawn += 1

    async def _send_ping(self, event: WorkerHeartbeat, n: int, at: float | None) -> None:
        assert self.bus is not None
        when = None if at is None else datetime.fromtimestamp(at, UTC)
        await self.bus.store(event, self.speaker, time=when)
        self.counters.pings += 1

    async def _heartbeats(self) -> None:
        """Ping on schedule and follow this worker's tier, until cancelled."""
        assert self.bus is not None
        self.tier_watch = TierWatch(
            self.bus.js,
            self.settings.tiers_bucket,
            self.id,
            self._on_tier,
            retry_s=max(0.2, min(2.0, self.settings.heartbeat_interval_s * 4)),
        )
        try:
            await asyncio.gather(self.pinger.run(), self.tier_watch.run())
        finally:
            self.pinger.close()
            await asyncio.to_thread(self.pinger.probe.close)
