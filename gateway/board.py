"""The gateway's job board: a fold of JOBS and JOB_EVENTS into job views, with waiters.

Every gateway folds the log itself (ordered consumers from sequence 1), so any number of gateways
agree without talking to each other, and `?wait=` resolves as soon as the terminal event is in
the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from jetgrid.coordinator.settings import Settings
from jetgrid.events import Envelope, InvalidEvent, decode, decode_submission
from jetgrid.projections.fold import check_job_event_speaker
from jetgrid.projections.jobs import JobView, apply

log = logging.getLogger("jetgrid.gateway.board")


class JobBoard:
    """Job views by id, kept current by following the log."""

    def __init__(self, js: JetStreamContext, settings: Settings) -> None:
        self.js = js
        self.settings = settings
        self.jobs: dict[str, JobView] = {}
        self.caught_up = asyncio.Event()
        self._waiters: dict[str, list[asyncio.Future[JobView]]] = defaultdict(list)
        self._targets: dict[str, int] = {}
        self._seen: dict[str, int] = {}
        self._syncs: dict[asyncio.Future[None], dict[str, int]] = {}
        self._subs: list[JetStreamContext.PushSubscription] = []
        # Called with (job view before, after) for every folded event (metrics, the dashboard).
        self.observers: list[Callable[[JobView | None, JobView], None]] = []
        # Called with (job id, JOB_EVENTS sequence, subject, envelope) after every job event
        # is folded (live streams, gateway.live).
        self.taps: list[Callable[[str, int, str, Envelope], None]] = []

    async def start(self) -> None:
        names, subj = self.settings.streams, self.settings.subjects
        follow = (
            (names.jobs, subj.submissions(), self._on_submission),
            (names.job_events, subj.job_events(), self._on_event),
        )
        for stream, _, _ in follow:
            self._targets[stream] = (await self.js.stream_info(stream)).state.last_seq
            self._seen[stream] = 0
        self._check_caught_up()
        for stream, filter_subject, cb in follow:
            sub = await self.js.subscribe(
                filter_subject,
                stream=stream,
                cb=cb,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL,
                # Two missed heartbeats make the ordered consumer recreate itself from the last
                # sequence it saw: 1 s (instead of 5 s) resumes the board soon after a NATS restart.
                idle_heartbeat=1.0,
            )
            self._subs.append(sub)

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:  # connection already gone
                pass
        for futures in self._waiters.values():
            for f in futures:
                f.cancel()

    def _mark(self, stream: str, seq: int) -> None:
        self._seen[stream] = seq
        if not self.caught_up.is_set():
            self._check_caught_up()
        if self._syncs:
            for fut, targets in list(self._syncs.items()):
                if all(self._seen.get(s, 0) >= t for s, t in targets.items()):
                    del self._syncs[fut]
                    if not fut.done():
                        fut.set_result(None)

    async def sync(self, limit_s: float = 5.0) -> None:
        """Wait until the fold has reached the streams' current ends (read-your-writes)."""
        targets = {s: (await self.js.stream_info(s)).state.last_seq for s in self._targets}
        if all(self._seen.get(s, 0) >= t for s, t in targets.items()):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._syncs[fut] = targets
        try:
            await asyncio.wait_for(fut, limit_s)
        except TimeoutError:
            pass
        finally:
            self._syncs.pop(fut, None)

    def _check_caught_up(self) -> None:
        if all(self._seen.get(s, 0) >= t for s, t in self._targets.items()):
            self.caught_up.set()

    async def _on_submission(self, msg: Msg) -> None:
        md = msg.metadata
        try:
            env = decode_submission(
                msg.data,
                subject=msg.subject,
                subjects=self.settings.subjects,
                seq=md.sequence.stream,
                stream_time=md.timestamp,
            )
        except InvalidEvent:
            pass  # the worker that pulls it records it on the invalid stream
        else:
            self._apply(env.event.job_id, env)
        self._mark(self.settings.streams.jobs, md.sequence.stream)

    async def _on_event(self, msg: Msg) -> None:
        md = msg.metadata
        try:
            env = decode(msg.data).at(md.sequence.stream, msg.subject)
        except InvalidEvent as exc:
            log.warning("undecodable job event at seq %s: %s", md.sequence.stream, exc.reason)
        else:
            job_id = getattr(env.event, "job_id", None)
            forged = check_job_event_speaker(self.settings.subjects, msg.subject, env)
            if forged is not None:  # the projector records it on the invalid stream
                log.warning("job event at seq %s does not count: %s", md.sequence.stream, forged)
            elif job_id:
                self._apply(job_id, env)
                for tap in self.taps:
                    try:
                        tap(job_id, md.sequence.stream, msg.subject, env)
                    except Exception:  # a tap's bug must not stop the fold
                        log.exception("job board tap failed")
        self._mark(self.settings.streams.job_events, md.sequence.stream)

    def _apply(self, job_id: str, env: Envelope) -> None:
        before = self.jobs.get(job_id)
        view = apply(before, env)
        self.jobs[job_id] = view
        for observe in self.observers:
            try:
                observe(before, view)
            except Exception:  # an observer's bug must not stop the fold
                log.exception("job board observer failed")
        if view.terminal and job_id in self._waiters:
            for f in self._waiters.pop(job_id):
                if not f.done():
                    f.set_result(view)

    def get(self, job_id: str) -> JobView | None:
        return self.jobs.get(job_id)

    def waiter(self, job_id: str) -> asyncio.Future[JobView]:
        """A future resolved with the job's view when its terminal event is folded."""
        fut: asyncio.Future[JobView] = asyncio.get_running_loop().create_future()
        view = self.jobs.get(job_id)
        if view is not None and view.terminal:
            fut.set_result(view)
        else:
            self._waiters[job_id].append(fut)
        return fut

    def forget_waiter(self, job_id: str, fut: asyncio.Future[JobView]) -> None:
        futures = self._waiters.get(job_id)
        if futures and fut in futures:
            futures.remove(fut)
            if not futures:
                del self._waiters[job_id]
