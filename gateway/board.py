"""The gateway's job board: a bounded cache of job views, kept current by following the log.

Serving does not depend on how long the log is. At start the board follows JOB_EVENTS from its
current end and JOBS from the oldest submission a work-queue consumer with work left has not yet
acknowledged (the oldest job that may still be unclaimed), or from the last LOOK_BACK submissions
if that is earlier (jobs in subjects no consumer covers yet), so its start time and memory depend
on what is live, not on history:

- `jobs` holds every job the board has seen whole and not yet ended (what is live), and at most
  `capacity` ended ones, least recently used first out (those with waiters or live listeners
  stay while they have them). A job is seen whole when its submission was folded after start,
  or when `find` read it back.
- `find(job_id)` answers a job not in the cache by reading it from the log: its lifecycle
  events by batched direct get of ``<prefix>.job.<id>.>`` from JOB_EVENTS, and its submission by
  direct get of the JOBS sequence its events name (``jobs_seq``), the sequence `pending` recorded
  for it, or the one its derived id names (``seq-<N>``).
- `pending` maps each job submitted before start but not yet seen ended to its JOBS sequence:
  a job that is queued and never claimed has no events to find it by. It is bounded by the jobs
  in that window at start. A job queued before it, in subjects no consumer covers, is found by
  its derived id or through the job list (which reads JOBS), not by a chosen id.

A submission this gateway stores itself is folded from the envelope it stored when the same
bytes come back (gateway.own), not decoded again.

The two streams are followed by two consumers, so a new job's events may reach the board before
its submission does: they are kept (for at most `capacity` jobs) and folded, in log order, when
the submission is.

Every gateway reads the same log the same way, so any number of gateways agree without talking
to each other, and `?wait=` resolves as soon as the terminal event is in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from jetgrid.coordinator.bus import Bus, StoredMessage
from jetgrid.coordinator.position import position, stream_seq
from jetgrid.coordinator.settings import Settings
from jetgrid.events import (
    Envelope,
    InvalidEvent,
    JetgridError,
    check_id,
    decode,
    decode_submission,
)
from jetgrid.events.codec import DERIVED_PREFIX
from jetgrid.gateway.own import OwnSubmissions
from jetgrid.projections.fold import check_job_event_speaker
from jetgrid.projections.jobs import JobView, apply

log = logging.getLogger("jetgrid.gateway.board")

CAPACITY = 10_000  # job views cached
MAX_EVENTS = 10_000  # lifecycle events read back for one job
LOOK_BACK = 10_000  # JOBS submissions before start always read (see `_oldest_unclaimed`)


@dataclass(slots=True)
class Entry:
    """A cached job: its view and the JOB_EVENTS sequences folded into it, in order."""

    view: JobView
    seqs: list[int] = field(default_factory=list)

    @property
    def upto(self) -> int:
        return self.seqs[-1] if self.seqs else 0


class JobBoard:
    """Job views by id: recent ones cached, any retained one read back from the log."""

    def __init__(
        self, bus: Bus, settings: Settings, *, capacity: int = CAPACITY, look_back: int = LOOK_BACK
    ) -> None:
        self.bus = bus
        self.look_back = look_back
        self.js = bus.js
        self.settings = settings
        # Derived once: the settings' properties build a new object on every read.
        self.subjects, self.names = settings.subjects, settings.streams
        self.capacity = capacity
        self.own = OwnSubmissions(self.subjects)  # fed by Bus.before_store (gateway.app)
        self.jobs: dict[str, Entry] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()  # ended jobs cached, LRU first
        self.pending: dict[str, int] = {}
        # Messages the live fold skipped because they cannot be used (the gateway records
        # nothing: the workers and the projector record them on the invalid stream).
        self.invalid = 0
        self.caught_up = asyncio.Event()
        self._waiters: dict[str, list[asyncio.Future[JobView]]] = defaultdict(list)
        self._holds: dict[str, int] = defaultdict(int)
        self._start: dict[str, int] = {}
        self._targets: dict[str, int] = {}
        self._seen: dict[str, int] = {}
        self._syncs: dict[asyncio.Future[None], dict[str, int]] = {}
        self._subs: list[JetStreamContext.PushSubscription] = []
        self._loads: set[asyncio.Task[JobView | None]] = set()
        # Live events of jobs whose submission the fold has not reached yet (at most `capacity`
        # jobs, oldest out), folded when it does.
        self._early: OrderedDict[str, list[tuple[int, str, Envelope]]] = OrderedDict()
        # Called with (job view before, after) for every folded event (metrics, the dashboard).
        self.observers: list[Callable[[JobView | None, JobView], None]] = []
        # Called with (job id, JOB_EVENTS sequence, subject, envelope) after every job event
        # of a cached job is folded (live streams, gateway.live).
        self.taps: list[Callable[[str, int, str, Envelope], None]] = []

    async def start(self) -> None:
        names, subj = self.names, self.subjects
        # JOB_EVENTS' end first: a submission stored after JOBS' end below has all its events
        # after this one.
        events_end = await self.bus.last_seq(names.job_events)
        jobs_end = await self.bus.last_seq(names.jobs)
        self._start = {names.job_events: events_end + 1, names.jobs: jobs_end + 1}
        look_back = await self._oldest_unclaimed(jobs_end)
        follow = (
            (names.jobs, subj.submissions(), self._on_submission, look_back),
            (names.job_events, subj.job_events(), self._on_event, events_end + 1),
        )
        for stream, _, _, first in follow:
            self._targets[stream] = self._start[stream] - 1
            self._seen[stream] = first - 1
        self._check_caught_up()
        for stream, filter_subject, cb, first in follow:
            sub = await self.js.subscribe(
                filter_subject,
                stream=stream,
                cb=cb,
                ordered_consumer=True,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=first
                ),
                # Two missed heartbeats make the ordered consumer recreate itself from the last
                # sequence it saw: 1 s (instead of 5 s) resumes the board soon after a NATS restart.
                idle_heartbeat=1.0,
            )
            jsi = getattr(sub, "_jsi", None)
            if jsi is not None:  # a recreated consumer resumes here, not at sequence 1
                jsi._sseq = first - 1
            self._subs.append(sub)

    async def _oldest_unclaimed(self, jobs_end: int) -> int:
        """The JOBS sequence to read submissions from: the oldest one a pool consumer with work
        left has not acknowledged (its ack floor + 1), and at least the last LOOK_BACK
        submissions (jobs no consumer's subjects cover)."""
        jobs = self.names.jobs
        floors = [
            (c.ack_floor.stream_seq if c.ack_floor and c.ack_floor.stream_seq else 0) + 1
            for c in await self.bus.consumers_info(jobs)
            # Pool consumers only (coordinator.consumers; not a reader's, such as a projector
            # replaying from sequence 1); one with nothing left claims nothing old.
            if c.name.startswith("pool-") and (c.num_pending or c.num_ack_pending)
        ]
        return max(1, min([*floors, jobs_end + 1 - self.look_back]))

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:  # connection already gone
                pass
        for task in self._loads:
            task.cancel()
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
        targets = {s: await self.bus.last_seq(s) for s in self._targets}
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

    # -- the live fold ----------------------------------------------------------------------
    def _submission(self, data: bytes, subject: str, seq: int, when: datetime) -> Envelope | None:
        try:
            return decode_submission(
                data,
                subject=subject,
                subjects=self.subjects,
                seq=seq,
                stream_time=when,
            )
        except InvalidEvent:
            return None  # the projector and the worker that pulls it record it

    async def _on_submission(self, msg: Msg) -> None:
        seq, when = position(msg)
        msg_id = msg.headers.get("Nats-Msg-Id") if msg.headers else None
        env = self.own.take(msg_id, msg.subject, msg.data, seq)
        env = env or self._submission(msg.data, msg.subject, seq, when)
        if env is None:
            self.invalid += 1
        else:
            job_id = env.event.job_id
            if seq >= self._start[self.names.jobs]:
                if job_id in self.jobs or job_id not in self.pending:
                    self._apply(job_id, env)  # a new job: the board sees all of it
                    self._fold_early(job_id)
            elif job_id not in self.jobs:
                self.pending.setdefault(job_id, seq)  # queued before start, perhaps unclaimed
        self._mark(self.names.jobs, seq)

    def _job_event(self, data: bytes, subject: str, seq: int) -> tuple[str, Envelope] | None:
        try:
            env = decode(data).at(seq, subject)
        except InvalidEvent as exc:  # the projector records it on the invalid stream
            log.debug("undecodable job event at seq %s: %s", seq, exc.reason)
            return None
        job_id = getattr(env.event, "job_id", None)
        forged = check_job_event_speaker(self.subjects, subject, env)
        if forged is not None or not job_id:  # the projector records it too
            log.debug("job event at seq %s does not count: %s", seq, forged)
            return None
        return job_id, env

    async def _on_event(self, msg: Msg) -> None:
        seq = stream_seq(msg)
        got = self._job_event(msg.data, msg.subject, seq)
        if got is None:
            self.invalid += 1
        else:
            job_id, env = got
            entry = self.jobs.get(job_id)
            if entry is not None and seq > entry.upto:
                self._fold_event(job_id, seq, msg.subject, env)
            elif entry is None:
                self._keep_early(job_id, seq, msg.subject, env)
                if self._waiters.get(job_id):
                    self._load_soon(job_id)  # a waited-for job out of the cache: read it back
        self._mark(self.names.job_events, seq)

    def _fold_event(self, job_id: str, seq: int, subject: str, env: Envelope) -> None:
        self._apply(job_id, env, seq)
        for tap in self.taps:
            try:
                tap(job_id, seq, subject, env)
            except Exception:  # a tap's bug must not stop the fold
                log.exception("job board tap failed")

    def _keep_early(self, job_id: str, seq: int, subject: str, env: Envelope) -> None:
        """Keep a live event of a job the board has not seen yet: the two streams are followed
        by two consumers, so a job's events may arrive before its submission does."""
        if seq < self._start[self.names.job_events] or job_id in self.pending:
            return  # a job from before start: `find` reads it back whole
        self._early.setdefault(job_id, []).append((seq, subject, env))
        self._early.move_to_end(job_id)
        while len(self._early) > self.capacity:
            self._early.popitem(last=False)

    def _fold_early(self, job_id: str) -> None:
        """Fold the events of `job_id` that arrived before its submission, in log order."""
        entry = self.jobs.get(job_id)
        for seq, subject, env in self._early.pop(job_id, ()):
            if entry is not None and seq > entry.upto:
                self._fold_event(job_id, seq, subject, env)

    def _apply(self, job_id: str, env: Envelope, seq: int | None = None) -> None:
        entry = self.jobs.get(job_id)
        before = entry.view if entry is not None else None
        view = apply(before, env)
        if entry is None:
            entry = Entry(view)
            self._cache(job_id, entry)
        else:
            entry.view = view
            self._touch(job_id, view)
        if seq is not None:
            entry.seqs.append(seq)
        for observe in self.observers:
            try:
                observe(before, view)
            except Exception:  # an observer's bug must not stop the fold
                log.exception("job board observer failed")
        self._settled(job_id, view)

    def _settled(self, job_id: str, view: JobView) -> None:
        if view.terminal:
            self.pending.pop(job_id, None)
            if job_id in self._waiters:
                for f in self._waiters.pop(job_id):
                    if not f.done():
                        f.set_result(view)

    def _cache(self, job_id: str, entry: Entry) -> None:
        self.jobs[job_id] = entry
        self.pending.pop(job_id, None)
        self._touch(job_id, entry.view)

    def _touch(self, job_id: str, view: JobView) -> None:
        """Mark a cached job used; past `capacity` ended jobs, forget the least recently used."""
        if not view.terminal:
            return
        self._ended[job_id] = None
        self._ended.move_to_end(job_id)
        for _ in range(len(self._ended)):
            if len(self._ended) <= self.capacity:
                break
            old_id = next(iter(self._ended))
            if self._holds.get(old_id) or self._waiters.get(old_id):
                self._ended.move_to_end(old_id)  # in use: kept while it is
                continue
            del self._ended[old_id]
            self.jobs.pop(old_id, None)

    # -- reading a job back ----------------------------------------------------------------
    def get(self, job_id: str) -> JobView | None:
        """The cached view of `job_id` (None when it is not cached: see `find`)."""
        entry = self.jobs.get(job_id)
        return entry.view if entry is not None else None

    def seqs(self, job_id: str) -> list[int]:
        """The JOB_EVENTS sequences of a cached job's lifecycle events, in log order."""
        entry = self.jobs.get(job_id)
        return list(entry.seqs) if entry is not None else []

    async def find(self, job_id: str, *, jobs_seq: int | None = None) -> JobView | None:
        """The view of `job_id`, from the cache or read back from the log (`jobs_seq`: where
        its submission is, when the caller knows); None if the log holds nothing of it."""
        entry = self.jobs.get(job_id)
        if entry is not None:
            self._touch(job_id, entry.view)
            return entry.view
        return await self._load(job_id, jobs_seq)

    def submission(self, msg: StoredMessage) -> Envelope | None:
        """The submission a JOBS message holds, or None when it holds none."""
        if msg.time is None:
            return None
        return self._submission(msg.data, msg.subject, msg.seq, msg.time)

    async def _load(self, job_id: str, known_seq: int | None = None) -> JobView | None:
        subjects, names = self.subjects, self.names
        try:
            check_id(job_id, "job id")  # one subject token: no wildcard reads many jobs
        except JetgridError:
            return None
        view: JobView | None = None
        seqs: list[int] = []
        submission_read = False
        for _ in range(8):  # read until the fold did not pass anything while this read
            seen = self._seen.get(names.job_events, 0)
            msgs = await self.bus.messages(
                names.job_events,
                seq=(seqs[-1] + 1) if seqs else 1,
                subject=subjects.job_events(job_id),
                limit=MAX_EVENTS,
            )
            for m in msgs:
                got = self._job_event(m.data, m.subject, m.seq)
                if got is not None and got[0] == job_id:
                    view = apply(view, got[1])
                    seqs.append(m.seq)
            jobs_seq = view.jobs_seq if view is not None else None
            jobs_seq = jobs_seq or known_seq or self.pending.get(job_id) or _derived_seq(job_id)
            if jobs_seq is not None and not submission_read:
                submission_read = True
                msg = await self.bus.message(names.jobs, jobs_seq)
                env = self.submission(msg) if msg is not None else None
                if env is not None and env.event.job_id == job_id:
                    view = apply(view, env)
            if self._seen.get(names.job_events, 0) == seen:
                break
        entry = self.jobs.get(job_id)
        if entry is not None:  # cached meanwhile (its submission arrived): that one is whole
            return entry.view
        if view is None or (view.jobs_seq is None and not seqs):
            return None
        self._cache(job_id, Entry(view, seqs))
        self._early.pop(job_id, None)  # the read covered them
        self._settled(job_id, view)
        return view

    def _load_soon(self, job_id: str) -> None:
        if any(t.get_name() == job_id for t in self._loads):
            return
        task = asyncio.get_running_loop().create_task(self._safe_load(job_id), name=job_id)
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)

    async def _safe_load(self, job_id: str) -> JobView | None:
        try:
            return await self._load(job_id)
        except JetgridError as exc:
            log.info("could not read job %s back from the log: %s", job_id, exc)
            return None

    # -- waiting and holding -----------------------------------------------------------------
    def waiter(self, job_id: str) -> asyncio.Future[JobView]:
        """A future resolved with the job's view when its terminal event is folded."""
        fut: asyncio.Future[JobView] = asyncio.get_running_loop().create_future()
        view = self.get(job_id)
        if view is not None and view.terminal:
            fut.set_result(view)
        else:
            self._waiters[job_id].append(fut)
        return fut

    async def outcome(
        self, job_id: str, fut: asyncio.Future[JobView], timeout_s: float
    ) -> JobView | None:
        """The view `fut` (a `waiter` of `job_id`) resolves to within `timeout_s`, else None;
        the waiter is forgotten either way. One timer, where ``wait_for(shield(fut))`` costs two
        more futures and their callbacks on every waited request."""
        if not fut.done():
            expired = False

            def expire() -> None:
                nonlocal expired
                expired = True
                fut.cancel()

            timer = asyncio.get_running_loop().call_later(timeout_s, expire)
            try:
                await fut
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not expired or (task is not None and task.cancelling()):
                    raise  # the request itself was cancelled
            finally:
                timer.cancel()
                self.forget_waiter(job_id, fut)
        return None if fut.cancelled() else fut.result()

    def forget_waiter(self, job_id: str, fut: asyncio.Future[JobView]) -> None:
        futures = self._waiters.get(job_id)
        if futures and fut in futures:
            futures.remove(fut)
            if not futures:
                del self._waiters[job_id]

    def hold(self, job_id: str) -> None:
        """Keep `job_id` cached (a live listener follows it) until `release`."""
        self._holds[job_id] += 1

    def release(self, job_id: str) -> None:
        left = self._holds.get(job_id, 0) - 1
        if left > 0:
            self._holds[job_id] = left
        else:
            self._holds.pop(job_id, None)


def _derived_seq(job_id: str) -> int | None:
    """The JOBS sequence a derived id (``seq-<N>``) names, else None."""
    tail = job_id.removeprefix(DERIVED_PREFIX)
    return int(tail) if tail != job_id and tail.isdigit() else None
