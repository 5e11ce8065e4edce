"""What a worker says about the jobs it holds, and how each delivery ends (ack, nak or term).

`started` (the claim: worker, attempt, JOBS sequence, tier) and `retrying` are sent without
waiting for the stream's ack (`start`, `say`, through Bus.send: stored all the same, in order, on
the same connection). A first delivery's `started` waits until the run has lasted the
`started_after_s` setting (then it is said under the claim's time); a run over sooner (the usual
short job) says none: its `completed`, `failed`, `cancelled` or `retrying` carries the claim
(events.Claim), so the log holds each claim once and a short job costs one stored event, not
two. A run handed back before either, or ended by `dead`, says its `started` then.

A terminal event (`completed`, `failed`, `cancelled`, `dead`; ``Nats-Msg-Id: <job>:terminal``,
events.addressing) is stored and awaited first, and only then is
the submission acked (`finish`): if NATS stays away through the coordinator.backoff.TERMINAL_STORE
tries, the delivery is naked after NOT_STORED_NAK_S so the job runs again. A completed job whose
output is too big to store is recorded as failed instead. Before a delivery that published
`started` is acked or naked for a retry, its ack must have come (it comes before the terminal
event's, the usual case); if it has not, `started` is stored again and awaited, under the same
``Nats-Msg-Id`` (`_started_stored`), so every claim is in the log, if need be after its outcome.
A `retrying` that carries its run's claim is stored and awaited before the nak, for the same
reason.

A transient failure publishes `retrying` and naks with the pool's backoff; on the last run it
stores `dead` and naks at once (coordinator.delivery.after_transient). The delivery after the
last run only records `dead` (`record_dead`, holding the delivery through a NATS outage). A
redelivered job whose earlier runs ended with no outcome too often is quarantined: `dead` with
the reason, and terminated (`quarantine`). An undecodable submission goes to the invalid
stream, gets a `rejected` event on its job's subject (so whoever submitted it sees why), and is
terminated (`reject`). Tests and benchmarks inject a subclass through ``Worker(outcomes=...)``
to change what one of these does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar, cast

from jetgrid.coordinator.backoff import (
    LAST_DEAD,
    NOT_STORED_NAK_S,
    TERMINAL_STORE,
    Backoff,
    Stop,
    after_failure,
)
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
    CLAIM_CARRIERS,
    JOBS,
    Claim,
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
from jetgrid.events import now as wall_clock
from jetgrid.events.addressing import Speaker
from jetgrid.worker.deadletter import last_retry_reason
from jetgrid.worker.delivery import Delivery
from jetgrid.worker.options import Counters
from jetgrid.worker.quarantine import run_history

__all__ = ["Outcomes"]

log = logging.getLogger("jetgrid.worker")

E = TypeVar("E", bound=TerminalEvent | JobRetrying)

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
        # job id -> its `started`, the claim's time (None: now) and the future of the stream's
        # ack (None: the publish failed)
        self.unconfirmed: dict[
            str, tuple[JobStarted, datetime | None, asyncio.Future[Any] | None]
        ] = {}
        # job id -> its `started` not said yet, the claim's time, and the timer that says it
        self.pending: dict[str, tuple[JobStarted, datetime, asyncio.TimerHandle]] = {}
        self._sending: set[asyncio.Future[Any]] = set()
        # Called once a delivery's outcome is stored, before its ack (JobRunner.release).
        self.on_stored: Callable[[], None] = lambda: None

    async def say(self, event: Event, time: datetime | None = None) -> asyncio.Future[Any]:
        """Publish a non-terminal lifecycle event without waiting for the stream's ack."""
        return await self.bus.send(event, self.speaker, time=time)

    async def start(self, event: JobStarted) -> None:
        """Say the job's `started` (its claim) without waiting for the ack: at once on a
        redelivery, on a first delivery once the run has lasted the `started_after_s` setting
        (`claim_due`); a run over sooner carries the claim on its outcome instead (`_settle`)."""
        after = self.settings.started_after_s
        if after <= 0 or event.attempt > 1:
            await self._send_started(event, None)
            return
        handle = asyncio.get_running_loop().call_later(after, self.claim_due, event.job_id)
        self.pending[event.job_id] = (event, wall_clock(), handle)

    async def _send_started(self, event: JobStarted, at: datetime | None) -> None:
        try:
            ack: asyncio.Future[Any] | None = await self.say(event, at)
        except JetgridError as exc:  # stored later, when the delivery ends (_started_stored)
            log.info("publishing started of job %s failed (%s)", event.job_id, exc)
            ack = None
        self.unconfirmed[event.job_id] = (event, at, ack)

    async def _confirm(self, event: JobStarted, at: datetime) -> None:
        await (await self.say(event, at))

    def _say_claim(self, job_id: str) -> None:
        """Say a pending `started` now, under its claim's time; its ack is checked before the
        delivery ends, as any `started`'s (`_started_stored`)."""
        got = self.pending.pop(job_id, None)
        if got is None:
            return
        event, at, handle = got
        handle.cancel()
        sent = asyncio.ensure_future(self._confirm(event, at))
        self._sending.add(sent)
        sent.add_done_callback(self._sent)
        self.unconfirmed[job_id] = (event, at, sent)

    def _sent(self, sent: asyncio.Future[Any]) -> None:
        self._sending.discard(sent)
        if not sent.cancelled():
            sent.exception()  # retrieved: a failed one is stored again (_started_stored)

    def claim_due(self, job_id: str) -> None:
        """The run has lasted `started_after_s`: say its `started`."""
        self._say_claim(job_id)

    def _settle(self, event: E) -> E:
        """The event that ends or hands back a run: if the run's `started` was not said yet, it
        carries the claim (events.Claim), or, for an event that cannot (`dead`), the `started`
        is said now."""
        got = self.pending.get(event.job_id)
        if got is None:
            return event
        started, at, _ = got
        if not isinstance(event, CLAIM_CARRIERS) or (event.worker_id, event.attempt) != (
            started.worker_id,
            started.attempt,
        ):
            self._say_claim(event.job_id)
            return event
        self.pending.pop(event.job_id)[2].cancel()
        claim = Claim(
            jobs_seq=started.jobs_seq or 1,
            tier_factor=started.tier_factor,
            fallback=started.fallback,
            at=at,
        )
        return cast(E, event.model_copy(update={"claim": claim}))

    def forget(self, job_id: str) -> None:
        """The delivery ended or was handed back: a `started` not said yet is said now (the
        worker took the delivery); stop following its ack."""
        if job_id in self.pending:
            self._say_claim(job_id)
        _, _, ack = self.unconfirmed.pop(job_id, (None, None, None))
        if ack is not None and not isinstance(ack, asyncio.Task):
            ack.cancel()

    async def _started_stored(self, job_id: str) -> None:
        """Make sure the job's `started` is stored (see the module doc): a stored duplicate and
        a `started` after the outcome both fold right (projections.jobs, projections.audit)."""
        event, at, ack = self.unconfirmed.pop(job_id, (None, None, None))
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
        if await self._store(event, at) is None:
            log.warning("started of job %s could not be stored; its claim is not in the log",
                        job_id)  # fmt: skip

    async def finish(self, msg: Delivery, event: TerminalEvent) -> None:
        """Store the terminal event (deduplicated per job; with its run's claim when `started`
        was not said: `_settle`), then ack the submission."""
        job_id = event.job_id
        if await self.store_terminal(self._settle(event)):
            await self._started_stored(job_id)
            self.on_stored()
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

    async def _store(
        self,
        event: TerminalEvent | JobStarted | JobRetrying,
        time: datetime | None = None,
        *,
        policy: Backoff = TERMINAL_STORE,
        holding: Delivery | None = None,
    ) -> Stored | None:
        """Store an event, trying again (same Msg-Id) through the `policy` tries, telling the
        server before each wait that `holding` is still in progress; None if NATS stayed away
        through them."""
        tries = 0
        while True:
            tries += 1
            try:
                stored = await self.bus.store(event, self.speaker, time=time)
            except PayloadTooLarge:
                raise  # no try will fit it (store_terminal decides what to record)
            except JetgridError as exc:  # NATS down or slow: same Msg-Id, so retrying is safe
                log.warning(
                    "storing %s of job %s failed (%s); retrying", event.type, event.job_id, exc
                )
                step = after_failure(policy, tries, error=exc)
                if isinstance(step, Stop):
                    return None
                if holding is not None:
                    with contextlib.suppress(Exception):  # NATS away: the next wait tries again
                        await holding.in_progress()
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
            claim=event.claim,
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
            self._say_claim(job.job_id)  # `dead` cannot carry the claim
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
        retrying = self._settle(
            JobRetrying(
                job_id=job.job_id,
                worker_id=self.worker_id,
                attempt=attempt,
                reason=reason,
                delay_s=decision.delay_s,
                stall_s=stall_s,
            )
        )
        if retrying.claim is None:
            await self.say(retrying)
        else:  # it carries the run's claim: stored before the nak, as a `started` is
            await self._store(retrying)
        await self._started_stored(job.job_id)
        await msg.nak(delay=decision.delay_s)

    async def record_dead(self, msg: Delivery, job: JobSubmitted, seq: int) -> None:
        """The delivery after the last run (coordinator.delivery.consumer_max_deliver): store
        `dead` without running the job, then nak, which ends its deliveries (JetStream's
        advisory follows, and the watchers' `dead` is dropped as a duplicate). No delivery comes
        after this one, and NATS away now may lose the advisory too (its stream without a
        leader), so a `dead` not stored through TERMINAL_STORE is tried on through LAST_DEAD
        while the delivery is held (in progress); only then does the nak leave it to the
        advisory."""
        runs = self.pool.max_deliver
        last_error = await last_retry_reason(self.bus, self.settings, job.job_id)
        dead = JobDead(
            job_id=job.job_id, attempts=runs, jobs_seq=seq, reason=dead_reason(runs, last_error)
        )
        stored = await self.store_terminal(dead)
        if not stored:
            stored = await self._store(dead, policy=LAST_DEAD, holding=msg) is not None
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
