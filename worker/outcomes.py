"""What a worker says about the jobs it holds, and how each delivery ends (ack, nak or term).

`started` (the claim: worker, attempt, JOBS sequence, tier) and `retrying` are sent without
waiting for the stream's ack (`start`, `say`, through Bus.send: stored all the same, in order, on
the same connection). A terminal event (`completed`, `failed`, `cancelled`, `dead`;
``Nats-Msg-Id: <job>:terminal``, events.addressing) is stored and awaited first, and only then is
the submission acked (`finish`): if NATS stays away through the coordinator.backoff.TERMINAL_STORE
tries, the delivery is naked after NOT_STORED_NAK_S so the job runs again. A completed job whose
output is too big to store is recorded as failed instead. Before a delivery that published
`started` is acked or naked for a retry, its ack must have come (it comes before the terminal
event's, the usual case); if it has not, `started` is stored again and awaited, under the same
``Nats-Msg-Id`` (`_started_stored`), so every claim is in the log, if need be after its outcome.

A transient failure publishes `retrying` and naks with the pool's backoff; on the last run it
stores `dead` and naks at once (coordinator.delivery.after_transient). The delivery after the
last run only records `dead` (`record_dead`). A redelivered job whose earlier runs ended with no
outcome too often is quarantined: `dead` with the reason, and terminated (`quarantine`). An
undecodable submission goes to the invalid stream, gets a `rejected` event on its job's subject
(so whoever submitted it sees why), and is terminated (`reject`). Tests and benchmarks inject a
subclass through
``Worker(outcomes=...)`` to change what one of these does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from jetgrid.coordinator.backoff import NOT_STORED_NAK_S, TERMINAL_STORE, Stop, after_failure
from jetgrid.coordinator.bus import Bus, Stored
from jetgrid.coordinator.delivery import (
    GiveUp,
    after_transient,
    dead_reason,
    may_quarantine,
    quarantine_reason,
)
from jetgrid.coordinator.errors import PayloadTooLarge
from jetgrid.coordinator.pools import PoolConfig
from jetgrid.coordinator.settings import Settings
from jetgrid.events import (
    JOBS,
    Event,
    JetgridError,
    JobCancelled,
    JobCompleted,
    JobDead,
    JobFailed,
    JobRejected,
    JobRetrying,
    JobStarted,
    JobSubmitted,
    TerminalEvent,
    encode,
    refused_job_id,
)
from jetgrid.events.addressing import Speaker
from jetgrid.worker.deadletter import last_retry_reason
from jetgrid.worker.delivery import Delivery
from jetgrid.worker.options import Counters
from jetgrid.worker.quarantine import run_history

__all__ = ["Outcomes"]

log = logging.getLogger("jetgrid.worker")

# A `rejected` event's reason is cut to this many characters (the invalid record keeps it all).
MAX_REASON = 2000


class Outcomes:
    """Publishes a worker's job events and acks, naks or terminates its deliveries."""

    def __init__(
        self,
        *,
        bus: Bus,
        settings: Settings,
        pool: PoolConfig,
        speaker: Speaker,
        worker_id: str,
        counters: Counters,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`sleep` waits between tries of the terminal store (tests record the waits)."""
        self.sleep = sleep
        self.bus = bus
        self.settings = settings
        self.pool = pool
        self.speaker = speaker
        self.worker_id = worker_id
        self.counters = counters
        # job id -> its `started` and the future of the stream's ack (None: the publish failed)
        self.unconfirmed: dict[str, tuple[JobStarted, asyncio.Future[Any] | None]] = {}

    async def say(self, event: Event) -> asyncio.Future[Any]:
        """Publish a non-terminal lifecycle event without waiting for the stream's ack."""
        return await self.bus.send(event, self.speaker)

    async def start(self, event: JobStarted) -> None:
        """Publish the job's `started` without waiting; checked before the delivery ends."""
        try:
            ack: asyncio.Future[Any] | None = await self.say(event)
        except JetgridError as exc:  # stored later, when the delivery ends (_started_stored)
            log.info("publishing started of job %s failed (%s)", event.job_id, exc)
            ack = None
        self.unconfirmed[event.job_id] = (event, ack)

    def forget(self, job_id: str) -> None:
        """Stop following the ack of a job's `started` (its delivery ended or was handed back)."""
        _, ack = self.unconfirmed.pop(job_id, (None, None))
        if ack is not None:
            ack.cancel()

    async def _started_stored(self, job_id: str) -> None:
        """Make sure the job's `started` is stored (see the module doc): a stored duplicate and
        a `started` after the outcome both fold right (projections.jobs, projections.audit)."""
        event, ack = self.unconfirmed.pop(job_id, (None, None))
        if event is None:
            return
        if ack is not None and not ack.done():
            await asyncio.wait({ack}, timeout=self.settings.nats_js_timeout_s)
        if ack is not None and ack.done() and not ack.cancelled() and ack.exception() is None:
            return
        if ack is not None:
            ack.cancel()
        log.info("started of job %s: no ack from the stream; storing it again", job_id)
        self.counters.started_restored += 1
        if await self._store(event) is None:
            log.warning("started of job %s could not be stored; its claim is not in the log",
                        job_id)  # fmt: skip

    async def finish(self, msg: Delivery, event: TerminalEvent) -> None:
        """Store the terminal event (deduplicated per job), then ack the submission."""
        job_id = event.job_id
        if await self.store_terminal(event):
            await self._started_stored(job_id)
            await msg.ack()
            log.debug("job %s: %s stored, acked", job_id, event.type)
        else:
            await msg.nak(delay=NOT_STORED_NAK_S)  # could not record the outcome: run it again
            log.debug("job %s: outcome not stored, handed back", job_id)

    async def store_terminal(self, event: TerminalEvent) -> bool:
        """Store a terminal event; False if NATS stayed away through the TERMINAL_STORE tries."""
        try:
            stored = await self._store(event)
        except PayloadTooLarge:
            # The outcome itself is too big to store: record that, not a retry loop.
            if not isinstance(event, JobCompleted):
                raise
            stored = await self._store(self._too_large(event))
        if stored is not None and stored.duplicate:
            self.counters.duplicates += 1
        return stored is not None

    async def _store(self, event: TerminalEvent | JobStarted) -> Stored | None:
        """Store an event, trying again (same Msg-Id) through the TERMINAL_STORE tries; None
        if NATS stayed away through them."""
        tries = 0
        while True:
            tries += 1
            try:
                stored = await self.bus.store(event, self.speaker)
            except PayloadTooLarge:
                raise  # no try will fit it (store_terminal decides what to record)
            except JetgridError as exc:  # NATS down or slow: same Msg-Id, so retrying is safe
                log.warning(
                    "storing %s of job %s failed (%s); retrying", event.type, event.job_id, exc
                )
                step = after_failure(TERMINAL_STORE, tries, error=exc)
                if isinstance(step, Stop):
                    return None
                await self.sleep(step.delay_s)
                continue
            return stored

    def _too_large(self, event: JobCompleted) -> JobFailed:
        size = len(encode(event, source=self.speaker.source))
        return JobFailed(
            job_id=event.job_id,
            worker_id=event.worker_id,
            attempt=event.attempt,
            reason=f"the output ({size} bytes) exceeds the NATS max_payload",
            error_type="output_too_large",
        )

    async def fail(
        self, msg: Delivery, job: JobSubmitted, attempt: int, reason: str, error_type: str
    ) -> None:
        """Record the job as failed (no retry), then ack."""
        await self.finish(
            msg,
            JobFailed(
                job_id=job.job_id,
                worker_id=self.worker_id,
                attempt=attempt,
                reason=reason,
                error_type=error_type,
            ),
        )
        self.counters.failed += 1

    async def cancel(
        self, msg: Delivery, job: JobSubmitted, attempt: int, reason: str | None
    ) -> None:
        """Record the job as cancelled, then ack."""
        await self.finish(
            msg,
            JobCancelled(
                job_id=job.job_id,
                worker_id=self.worker_id,
                attempt=attempt,
                reason=reason or "cancelled",
            ),
        )
        self.counters.cancelled += 1

    async def retry(
        self,
        msg: Delivery,
        job: JobSubmitted,
        attempt: int,
        reason: str,
        *,
        stall_s: float | None = None,
    ) -> None:
        """After a transient failure or a stall (`stall_s`, coordinator.stalls): `retrying` and
        a nak with backoff, or `dead` at the end."""
        decision = after_transient(attempt, self.pool)
        self.counters.retried += 1
        if isinstance(decision, GiveUp):
            # The last delivery. This worker knows the job is dead, so it says so (with the real
            # last error); it also naks, so JetStream's max-deliveries advisory fires and the
            # dead-letter watchers publish the same `dead` (dropped as a duplicate). Either one
            # suffices: an advisory can be lost while its stream fails over, and a worker that
            # crashes on the last delivery leaves only the advisory.
            log.info("job %s failed on its last delivery (%d): %s", job.job_id, attempt, reason)
            if await self.store_terminal(
                JobDead(
                    job_id=job.job_id,
                    attempts=attempt,
                    jobs_seq=msg.metadata.sequence.stream,
                    reason=dead_reason(attempt, reason),
                )
            ):
                await self._started_stored(job.job_id)
            await msg.nak()
            return
        await self.say(
            JobRetrying(
                job_id=job.job_id,
                worker_id=self.worker_id,
                attempt=attempt,
                reason=reason,
                delay_s=decision.delay_s,
                stall_s=stall_s,
            )
        )
        await self._started_stored(job.job_id)
        await msg.nak(delay=decision.delay_s)

    async def record_dead(self, msg: Delivery, job: JobSubmitted, seq: int) -> None:
        """The delivery after the last run (coordinator.delivery.consumer_max_deliver): store
        `dead` without running the job, then nak, which ends its deliveries (JetStream's
        advisory follows, and the watchers' `dead` is dropped as a duplicate). If the event
        cannot be stored, the nak still lets the advisory make it dead."""
        runs = self.pool.max_deliver
        last_error = await last_retry_reason(self.bus, self.settings, job.job_id)
        stored = await self.store_terminal(
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

    async def quarantine(self, msg: Delivery, job: JobSubmitted, seq: int, attempt: int) -> bool:
        """Before running a redelivered job: if enough earlier runs ended with no outcome
        (coordinator.delivery.quarantine_reason), store `dead` with the reason, terminate the
        delivery and return True. If the history cannot be read the job runs (the next
        delivery checks again); if `dead` cannot be stored, the delivery is handed back."""
        if not may_quarantine(attempt, self.pool):
            return False
        try:
            started, retried = await run_history(self.bus, self.settings, job.job_id)
        except JetgridError as exc:
            log.warning("job %s: run history unreadable (%s); running it", job.job_id, exc)
            return False
        reason = quarantine_reason(attempt, started, retried, self.pool)
        if reason is None:
            return False
        dead = JobDead(job_id=job.job_id, attempts=attempt - 1, jobs_seq=seq, reason=reason)
        if await self.store_terminal(dead):
            with contextlib.suppress(Exception):
                await msg.term()
            log.warning("job %s %s", job.job_id, reason)
        else:
            with contextlib.suppress(Exception):
                await msg.nak(delay=NOT_STORED_NAK_S)
        return True

    async def reject(self, msg: Delivery, seq: int, reason: str) -> None:
        """Record an undecodable submission on the invalid stream and as `rejected` on its job's
        subject (events.refused_job_id), then never redeliver it."""
        self.counters.invalid += 1
        await self.bus.record_invalid(
            msg.data,
            self.speaker,
            stream=JOBS,
            subject=msg.subject,
            seq=seq,
            reason=reason,
            headers=msg.headers,
        )
        rejected = JobRejected(
            job_id=refused_job_id(msg.data, seq),
            jobs_seq=seq,
            reason=reason[:MAX_REASON],
            worker_id=self.worker_id,
        )
        if not await self.store_terminal(rejected):
            await msg.nak(delay=NOT_STORED_NAK_S)  # both records are idempotent: try again later
            return
        await msg.term()
        log.info("rejected JOBS seq %s: %s", seq, reason)
