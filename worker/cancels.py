"""Cancel requests as a worker hears them: live, remembered, or looked up before a job starts.

The worker subscribes on core NATS to every job's ``cancel_requested`` (the events are stored
in JOB_EVENTS too). A request for a job it holds sets the job's cancel signal and cancels its
backend call (worker.held.Held.abort), and the job ends `cancelled`. Requests for jobs it has
not seen are remembered (the last KEPT of them), so a job about to start is skipped. A job that
the listener may have missed a request for (submitted before the listener went live, or around
a reconnect: coordinator.delivery.cancel_heard_live) is looked up in JOB_EVENTS first. Which
jobs those are is judged by the server's clock where it can be (`mark`: the JOBS consumer's
answer to an info request, made once the listener is live, carries the server's time, the
clock submissions are stamped by), so a worker just started looks up only the backlog; after
a reconnect, or once it forgot a request, by its own clock with the clock margin. A request
made before the job's submission was placed in advance for an id another job later took, and
cancels nothing (coordinator.delivery.cancel_is_for). A bad message never stops the listener.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import datetime

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.delivery import (
    CLOCK_MARGIN_S,
    SERVER_CLOCK_MARGIN_S,
    cancel_heard_live,
    cancel_is_for,
)
from jetgrid.coordinator.settings import Settings
from jetgrid.events import InvalidEvent, JetgridError, JobCancelRequested, decode
from jetgrid.worker.backends.base import RunContext
from jetgrid.worker.delivery import Message
from jetgrid.worker.held import Held
from jetgrid.worker.options import Counters

__all__ = ["Cancels"]

log = logging.getLogger("jetgrid.worker")


class Cancels:
    """The worker's cancel listener and what it has heard; `listen()` once connected."""

    KEPT = 10_000  # cancel requests remembered for jobs this worker has not seen yet

    def __init__(
        self,
        *,
        bus: Bus,
        settings: Settings,
        counters: Counters,
        held: Held,
        clock_margin_s: float = CLOCK_MARGIN_S,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.counters = counters
        self.held = held
        # How far this worker's clock may be behind the server's, and two servers' clocks
        # apart (coordinator.delivery).
        self.clock_margin_s = clock_margin_s
        self.server_margin_s = SERVER_CLOCK_MARGIN_S
        # job id -> (reason, when it was heard: worker clock), most recent last
        self._requests: dict[str, tuple[str | None, float]] = {}
        # Since when (worker clock) the listener has heard every request: set once it is
        # subscribed, moved on when it forgets one (KEPT); inf before.
        self.heard_since = math.inf
        # The same moment by the server's clock (`mark`), and what it holds for: the worker
        # clock marks (heard_since, connection continuity) it was taken under.
        self.heard_since_server: float | None = None
        self._marked_under: tuple[float, float] | None = None

    async def listen(self) -> None:
        """Subscribe to every job's cancel_requested; hears every request from its return on."""
        subject = f"{self.settings.subjects.prefix}.job.*.cancel_requested"
        await self.bus.nc.subscribe(subject, cb=self.on_request)
        await self.bus.flush()  # the server has the subscription: it hears from now on
        self.heard_since = time.time()

    async def mark(self, stream: str, consumer: str) -> None:
        """Take the server's time, now that the listener is live, from an info request on one
        of the worker's JOBS consumers (its reply's ``ts``); left unmarked if that fails."""
        subject = f"$JS.API.CONSUMER.INFO.{stream}.{consumer}"
        before = (self.heard_since, self.bus.continuity.since)
        try:
            reply = await self.bus.call(
                self.bus.nc.request(subject, b"", timeout=self.settings.nats_js_timeout_s),
                f"read consumer {consumer}",
            )
            server_now = datetime.fromisoformat(json.loads(reply.data)["ts"]).timestamp()
        except Exception as exc:  # an older server, a refusal: judge by this worker's clock
            log.info("no server time for the cancel listener: %s", exc)
            return
        if before == (self.heard_since, self.bus.continuity.since):
            self.heard_since_server, self._marked_under = server_now, before

    def heard_live(self, submitted: datetime) -> bool:
        """Would the listener have heard every cancel request for a job submitted (stored in
        JOBS) at `submitted`? By the server's clock while the mark holds, else by this one's."""
        under = (self.heard_since, self.bus.continuity.since)
        if self.heard_since_server is not None and under == self._marked_under:
            mark, margin = self.heard_since_server, self.server_margin_s
            return cancel_heard_live(submitted.timestamp(), mark, margin)
        return cancel_heard_live(submitted.timestamp(), max(under), self.clock_margin_s)

    async def on_request(self, msg: Message) -> None:
        """One message on the cancel subject: remember it, and abort the job if it is held."""
        try:
            job_id = self.target(msg.subject, msg.data)
        except Exception as exc:  # a bad message must never stop this listener
            log.info("ignored cancel request on %s: %s", msg.subject, exc)
            return
        if job_id is None:
            return
        self._requests[job_id] = ("cancel requested", time.time())
        while len(self._requests) > self.KEPT:
            self._requests.pop(next(iter(self._requests)))
            self.heard_since = time.time()  # what it forgot, a lookup must find
        self.held.abort(job_id)

    def target(self, subject: str, data: bytes) -> str | None:
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

    def reason(self, job_id: str) -> str | None:
        """Why the job was cancelled, if a request for it was heard."""
        heard = self._requests.get(job_id)
        return heard[0] if heard else None

    async def requested_before_start(
        self, job_id: str, ctx: RunContext, submitted: datetime | None
    ) -> bool:
        """Was the job cancelled before it started? Seen live, or stored in JOB_EVENTS (looked
        up only when the live listener may have missed it: coordinator.delivery)."""
        if ctx.cancelled.is_set():
            return True
        margin = self.clock_margin_s
        heard = self._requests.get(job_id)
        if heard is not None:
            if submitted is None or cancel_is_for(heard[1], submitted.timestamp(), margin):
                return True
            del self._requests[job_id]  # placed before this job existed: not about it
            log.info("ignored a cancel request for %s made before its submission", job_id)
        if submitted is not None and self.heard_live(submitted):
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
        if (
            stored.time
            and submitted
            # both stamped by servers: their clocks' margin, not this worker's
            and not cancel_is_for(
                stored.time.timestamp(), submitted.timestamp(), self.server_margin_s
            )
        ):
            log.info("ignored a cancel request for %s stored before its submission", job_id)
            return False
        try:
            return self.target(subject, stored.data) is not None
        except Exception:
            return False
