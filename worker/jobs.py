"""Running one job: a delivery in; its lifecycle events, outcome and ack out.

Per delivery (`JobRunner.handle`): decode the submission (a bad one, or one whose chosen id an
earlier job already holds, is rejected: `JobRunner.id_taken`); on the delivery after the last
run, only record `dead`; a job whose earlier runs too often ended with no outcome (its worker
died) is quarantined, `dead`; a job taken past its deadline is `expired` and acked, never run
(`JobRunner.expired`), and one that waited past its pool's max_wait_s is `rejected`
(`JobRunner.shed`, coordinator.shedding); otherwise claim it: `started`, not waiting for its ack
(it names the worker, attempt, JOBS sequence and tier; ``fallback: true`` when the tier budget
did not cover the delivery: coordinator.fallback), said at once on a redelivery and on a first
delivery once the run has lasted the `started_after_s` setting, a shorter run's outcome carrying
the claim instead (worker.outcomes); skip the job if a cancel was requested
(worker.cancels), and run the backend under the job's timeout (its own, capped by the pool); a
job still held ack_wait/3 after it arrived gets a `KeepAlive`, which sends an in-progress ack
then and every ack_wait/3 after (a short job never starts one: `Lease`), the stall watchdog
watches its tokens (worker.stalls) and its spans are recorded (worker.tracing). The result
decides the outcome: `completed`; `failed` for a BackendError, a timeout or a backend bug;
`retrying` (or `dead`) for a TransientError or a stall; `cancelled` when a cancel request
arrived. A job this worker stalled on lately is handed back untaken. The delivery frees its
slot once the backend returns (`release`, worker.held): the next job runs while its outcome is
stored. worker.outcomes publishes each and acks or naks. A delivery that arrives while the
worker drains is handed straight back; one still running (or storing its outcome) when the
drain grace runs out is stopped and handed back too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.deadlines import deadline_of, expired_event, late_start
from jetgrid.coordinator.delivery import is_recording_delivery, keepalive_period
from jetgrid.coordinator.pools import PoolConfig
from jetgrid.coordinator.settings import Settings
from jetgrid.coordinator.shedding import shed_at_take
from jetgrid.coordinator.stalls import WATCHED_KINDS, avoid_s, stall_reason
from jetgrid.coordinator.tracecontext import HEADER as TRACE_HEADER
from jetgrid.coordinator.tracecontext import parse as trace_parse
from jetgrid.events import (
    InvalidEvent,
    JetgridError,
    JobCompleted,
    JobRejected,
    JobStarted,
    JobSubmitted,
    claim_of,
    decode,
    decode_submission,
    unique_by_construction,
)
from jetgrid.events import now as wall_clock
from jetgrid.worker.backends.base import Backend, Result, RunContext
from jetgrid.worker.cancels import Cancels
from jetgrid.worker.delivery import Delivery
from jetgrid.worker.errors import BackendError, TransientError
from jetgrid.worker.held import Held, Running
from jetgrid.worker.options import Counters
from jetgrid.worker.outcomes import Outcomes
from jetgrid.worker.stalls import Avoid, Watchdog
from jetgrid.worker.tiers import PullGate
from jetgrid.worker.tokens import TokenPublisher
from jetgrid.worker.tracing import BACKEND_TRACEPARENT, Tracing

__all__ = ["JobRunner", "KeepAlive", "Lease", "send_in_progress"]

log = logging.getLogger("jetgrid.worker")

# How many of a job's events `JobRunner.id_taken` reads for its first claim.
CLAIM_SCAN = 32

# Runs beside a job held for one in-progress period, given its delivery and the period, until
# cancelled.
KeepAlive = Callable[[Delivery, float], Coroutine[Any, Any, None]]


async def send_in_progress(msg: Delivery, period_s: float) -> None:
    """+WPI now and every `period_s`, so a long job is not redelivered while this worker lives."""
    while True:
        with contextlib.suppress(Exception):
            await msg.in_progress()
        await asyncio.sleep(period_s)


class Lease:
    """Starts a job's KeepAlive once the job has been held `period_s`, and stops it: a timer
    per job instead of a task, since most jobs end well before their first in-progress ack."""

    __slots__ = ("_task", "_timer")

    def __init__(self, keep_alive: KeepAlive, msg: Delivery, period_s: float) -> None:
        self._task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(period_s, self._start, keep_alive, msg, period_s)

    def _start(self, keep_alive: KeepAlive, msg: Delivery, period_s: float) -> None:
        self._task = asyncio.create_task(keep_alive(msg, period_s))

    def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


async def _hand_back(msg: Delivery) -> None:
    with contextlib.suppress(Exception):
        await msg.nak()


class JobRunner:
    """Handles each delivery in a task of its own; `on_message` is the pullers' callback."""

    def __init__(
        self,
        *,
        bus: Bus,
        settings: Settings,
        pool: PoolConfig,
        backend: Backend,
        worker_id: str,
        counters: Counters,
        held: Held,
        gate: PullGate,
        outcomes: Outcomes,
        cancels: Cancels,
        keep_alive: KeepAlive,
        stopping: asyncio.Event,
        wake: asyncio.Event,
        clock: Callable[[], datetime] = wall_clock,
        tracing: Tracing | None = None,
    ) -> None:
        self.clock = clock  # judges deadlines (coordinator.deadlines), times spans
        self.tracing = tracing or Tracing()
        self.bus = bus
        self.settings = settings
        self.subjects = settings.subjects  # built once: the property builds one per call
        self.pool = pool
        self.backend = backend
        self.worker_id = worker_id
        self.counters = counters
        self.held = held
        self.gate = gate
        self.outcomes = outcomes
        self.cancels = cancels
        self.keep_alive = keep_alive
        self.keepalive_s = keepalive_period(pool.ack_wait_s)
        self.stopping = stopping
        self.wake = wake
        self.avoid = Avoid()

    def on_message(self, msg: Delivery) -> asyncio.Task[None]:
        """Start handling a delivery (while the worker drains: hand it straight back); returns
        the task that handles it."""
        if self.stopping.is_set():
            # A pull request sent before draining began can still deliver.
            task = asyncio.create_task(_hand_back(msg))
        else:
            within = self.gate.charge()
            task = asyncio.create_task(self.handle(msg, fallback=not within))
        self.held.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def release(self) -> None:
        """The current delivery's outcome is stored (Outcomes.on_stored): free its slot now, if
        it still holds one (a delivery that ran no backend; `_run` frees it earlier)."""
        task = asyncio.current_task()
        if task is not None:
            self._free(task)

    def _free(self, task: asyncio.Task[None]) -> None:
        """`task`'s delivery gives its slot up (Held.finishing): wake the pull loop, so the
        next job is taken while this one's outcome is stored and acked."""
        if self.held.free(task):
            self.wake.set()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.held.done(task)
        self.wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("job handler crashed: %r", task.exception())

    async def handle(self, msg: Delivery, *, fallback: bool = False) -> None:
        """Everything one delivery does, up to its ack, nak or term (see the module doc)."""
        md = msg.metadata
        seq, attempt = md.sequence.stream, md.num_delivered
        try:
            env = decode_submission(
                msg.data,
                subject=msg.subject,
                subjects=self.subjects,
                seq=seq,
                stream_time=md.timestamp,
            )
        except InvalidEvent as exc:
            await self.outcomes.reject(msg, seq, exc.reason)
            return
        job: JobSubmitted = env.event
        taken = await self.id_taken(job.job_id, seq, (msg.headers or {}).get("Nats-Msg-Id"))
        if taken is not None:
            await self.outcomes.reject(msg, seq, taken)
            return
        log.debug("job %s: delivery %d of JOBS seq %d", job.job_id, attempt, seq)
        if is_recording_delivery(attempt, self.pool):
            await self.outcomes.record_dead(msg, job, seq)
            return
        if await self.outcomes.quarantine(msg, job, seq, attempt):
            return
        if await self.expired(msg, job, env.time, attempt, seq):
            return
        if await self.shed(msg, job, seq, md.timestamp, attempt):
            return
        if avoid := self.avoid.remaining(job.job_id):  # it stalled here lately (worker.stalls)
            await msg.nak(delay=avoid)
            return
        ctx = RunContext(
            worker_id=self.worker_id,
            attempt=attempt,
            emit=TokenPublisher(
                self.bus,
                self.subjects.tokens(job.job_id, self.worker_id),
                job.job_id,
                attempt,
            ),
        )
        self.held.contexts[job.job_id] = ctx
        self.counters.claimed += 1
        lease = Lease(self.keep_alive, msg, self.keepalive_s)
        try:
            await self.outcomes.start(
                JobStarted(
                    job_id=job.job_id,
                    worker_id=self.worker_id,
                    attempt=attempt,
                    jobs_seq=seq,
                    tier_factor=self.gate.factor,
                    fallback=fallback,
                )
            )
            before = await self.cancels.requested_before_start(job.job_id, ctx, md.timestamp)
            # or heard live while that was looked up: no await from here to the backend's call
            if before or ctx.cancelled.is_set():
                await self.outcomes.cancel(msg, job, attempt, "cancelled before start")
                return
            parent = trace_parse((msg.headers or {}).get(TRACE_HEADER))
            trace = self.tracing.begin(parent, job, worker_id=self.worker_id, attempt=attempt,
                                       submitted_at=env.time, started_at=self.clock())  # fmt: skip
            ctx.traceparent = trace.backend
            BACKEND_TRACEPARENT.set(trace.backend)  # this task's context: the backend runs in it
            try:
                await self._run(msg, job, ctx, attempt)
            finally:
                trace.end(self.clock())
        except asyncio.CancelledError:
            # Drain grace ran out: hand the job back (redelivered at once) rather than lose it.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        finally:
            lease.stop()
            self.outcomes.forget(job.job_id)
            self.held.contexts.pop(job.job_id, None)

    async def expired(
        self, msg: Delivery, job: JobSubmitted, submitted_at: datetime, attempt: int, seq: int
    ) -> bool:
        """A job taken past its deadline (coordinator.deadlines) is not run: store `expired`,
        ack it and return True."""
        deadline, now = deadline_of(job, submitted_at), self.clock()
        if deadline is None or not late_start(deadline, now):
            return False
        event = expired_event(
            job.job_id, deadline, now, worker_id=self.worker_id, attempt=attempt, jobs_seq=seq
        )
        await self.outcomes.finish(msg, event)
        log.info("job %s: %s", job.job_id, event.reason)
        return True

    async def shed(
        self, msg: Delivery, job: JobSubmitted, seq: int, stored_at: datetime, attempt: int
    ) -> bool:
        """A job that waited past its pool's max_wait_s for its first delivery is not run
        (coordinator.shedding): store `rejected` with the reason, ack it and return True."""
        waited = (self.clock() - stored_at).total_seconds()
        reason = shed_at_take(self.pool, waited, attempt)
        if reason is None:
            return False
        event = JobRejected(
            job_id=job.job_id, jobs_seq=seq, reason=reason, worker_id=self.worker_id
        )
        await self.outcomes.finish(msg, event)
        log.info("job %s: %s", job.job_id, reason)
        return True

    async def id_taken(self, job_id: str, seq: int, msg_id: str | None) -> str | None:
        """Why this submission may not use `job_id` (an earlier one was claimed under it), or
        None. Looked up only when JetStream has not already made the id unique
        (events.unique_by_construction): a bare NATS job that chose its id without sending it as
        its Nats-Msg-Id. The first claim is the first of the job's events in JOB_EVENTS that
        records one (events.claim_of: a `started`, an outcome carrying its run's claim, or in
        old logs a `claimed`), among its first CLAIM_SCAN. Unknown when NATS does not answer:
        then the job runs."""
        if unique_by_construction(job_id, seq, msg_id):
            return None
        subject = self.subjects.job_events(job_id)
        at = 1
        for _ in range(CLAIM_SCAN):
            try:
                stored = await self.bus.message(
                    self.settings.streams.job_events, at, subject=subject, next=True
                )
                if stored is None:
                    return None
                at = stored.seq + 1
                env = decode(stored.data)
            except InvalidEvent:
                continue
            except JetgridError as exc:
                log.info("could not check whether job id %s is taken: %s", job_id, exc)
                return None
            taken = claim_of(env.event, env.time)
            if taken is None or env.event.job_id != job_id:
                continue
            if taken.jobs_seq == seq:
                return None
            return (
                f"field 'id': {job_id!r} is already the id of the job at JOBS seq "
                f"{taken.jobs_seq}; choose another id."
            )
        return None

    async def _run(self, msg: Delivery, job: JobSubmitted, ctx: RunContext, attempt: int) -> None:
        """Run the backend under the job's timeout, its cancel signal and the stall watchdog;
        report the outcome. The backend is awaited in this delivery's task (no task of its
        own: a loop step fewer each way): a cancel request and the watchdog cancel it through
        its `Running`, which tells their cancellations from the drain's."""
        timeout = self.pool.timeout_for(job.timeout_s)
        t0 = time.perf_counter()
        after = self.pool.stall_after_s if job.kind in WATCHED_KINDS else None
        dog = None if after is None else Watchdog(after)
        if dog is not None:
            ctx.emit = dog.wrap(ctx.emit)
        task = asyncio.current_task()
        assert task is not None  # handle runs in the delivery's task
        running = self.held.runs[job.job_id] = Running(task)
        watch = None if dog is None else asyncio.create_task(dog.watch(running.cancel))
        limit = asyncio.timeout(timeout)
        result: Result | None = None
        error: Exception | None = None
        try:
            async with limit:
                result = await self.backend.run(job, ctx)
        except asyncio.CancelledError:
            if not running.settle():
                raise  # the drain grace ran out: handle hands the job back
        except Exception as exc:  # the backend's, or the timeout's (`limit.expired()`)
            error = exc
        finally:
            # Synchronously after the call: nothing cancels this task for the job from here on.
            self.held.runs.pop(job.job_id, None)
            if watch is not None:
                watch.cancel()
        # The backend is done with its slot: free it a loop turn from now, once this outcome's
        # publish (made within this turn, below) has been written, so a pull round does not
        # delay it.
        asyncio.get_running_loop().call_soon(self._free, task)
        if limit.expired() and not ctx.cancelled.is_set():
            self.counters.timed_out += 1
            await self.outcomes.fail(
                msg,
                job,
                attempt,
                f"ran past its timeout of {timeout:g} s (job timeout_s "
                f"{job.timeout_s}, pool cap {self.pool.job_timeout_cap_s:g} s)",
                "timeout",
            )
            return
        if dog is not None and dog.stalled_s is not None and not ctx.cancelled.is_set():
            await self._stalled(msg, job, attempt, dog)
            return
        if ctx.cancelled.is_set():
            await self.outcomes.cancel(msg, job, attempt, self.cancels.reason(job.job_id))
            return
        if isinstance(error, TransientError):
            await self.outcomes.retry(msg, job, attempt, str(error))
            return
        if isinstance(error, BackendError):
            await self.outcomes.fail(msg, job, attempt, str(error), error.error_type)
            return
        if error is not None or result is None:
            # A backend bug is not going to fix itself on retry: fail with its message.
            log.error(
                "backend %s raised unexpectedly on job %s",
                self.backend.name,
                job.job_id,
                exc_info=error,
            )
            what = f"{type(error).__name__}: {error}" if error else "the backend returned nothing"
            await self.outcomes.fail(msg, job, attempt, what, "internal")
            return
        await ctx.emit.flush()  # type: ignore[attr-defined]  # the last chunks before the result
        await self.outcomes.finish(
            msg,
            JobCompleted(
                job_id=job.job_id,
                worker_id=self.worker_id,
                attempt=attempt,
                output=result.output,
                usage=result.usage,
                duration_s=time.perf_counter() - t0,
            ),
        )
        self.counters.completed += 1

    async def _stalled(self, msg: Delivery, job: JobSubmitted, attempt: int, dog: Watchdog) -> None:
        """Hand a stalled job back (coordinator.stalls): `retrying` with its stall, a nak with
        the pool's backoff, and this worker avoids it for a while."""
        stall_s = dog.stalled_s or 0.0
        self.counters.stalled += 1
        self.avoid.add(job.job_id, avoid_s(dog.stall_after_s, self.pool.retry_delay(attempt)))
        log.warning("job %s stalled: no progress for %.3g s; handing it back", job.job_id, stall_s)
        await self.outcomes.retry(
            msg, job, attempt, stall_reason(stall_s, dog.stall_after_s), stall_s=stall_s
        )
