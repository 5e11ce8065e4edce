"""The projector's fold: WORKERS, JOBS and JOB_EVENTS messages -> worker and job views. Pure.

No I/O here: the runner (projections.runner) reads messages, calls `Fold.worker_message`,
`Fold.submission` and `Fold.job_event`, then persists what `take_changes` returns together with
the positions, in one transaction.

**Order and determinism.** The state is a function of the per-stream positions (the last
sequence applied from each stream), not of how the three streams were interleaved:

- Worker views read only WORKERS, in sequence order. The worker log clock is the newest event
  time seen on WORKERS (never the wall clock, never a job event's time). Before a WORKERS event
  that moves the clock from ``prev`` to ``now``, every view is re-judged at each tick of
  ``clock_ticks(prev, now, tick_s)`` (whole multiples of ``tick_s`` since the epoch), so batch
  boundaries do not matter. Before those ticks, a jump of the clock is a silence of the whole
  fleet, and every view goes through `workers.silence` (a broker outage is not the workers'
  fault; the rule is in projections.workers).
- Job views read JOBS and JOB_EVENTS, each in sequence order. The job reducer commutes across the
  two streams (a submission only fills in fields and never moves a status backwards; lifecycle
  events never read submission fields), so any interleaving of the two gives the same views.

So a live projector (streams interleaved as messages arrive) and a replay (one after another)
agree exactly at the same positions; `projections.store.Store.digest` proves it.

**Rules for WORKERS messages** (`check_worker_message`): a message that does not decode, is not a
worker event, whose subject names another worker or another event than its body, or whose event
time is more than `max_future_s` ahead of the stream's own timestamp (a worker clock far in the
future would drag the log clock and everyone's uptime with it) is invalid: it is recorded on
``<prefix>.invalid.WORKERS`` with the reason, advances the position, and changes no view.
Duplicates, out-of-order events and unknown workers are handled by `projections.workers.apply`
(see its docstring).

**Rules for JOB_EVENTS messages** (`check_job_event_speaker`): an event whose payload is about
another job than its subject, or names another worker than the worker token its subject ends in
(the worker that published it: NATS permissions allow nothing else), is recorded on
``<prefix>.invalid.JOB_EVENTS`` and changes no view, as is one that does not decode or is not
a job event; so is an invalid JOBS message (one decode_submission refuses), on
``<prefix>.invalid.JOBS``. No message stops the fold; each is recorded once (id
``invalid:<stream>:<seq>``, whoever records it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from jetgrid.coordinator.settings import Settings
from jetgrid.coordinator.tiers import DEFAULT_POLICY, TierPolicy, load_policy
from jetgrid.events import JOB_EVENTS, JOBS, WORKERS, Envelope, InvalidEvent, Subjects, decode
from jetgrid.events.base import Event
from jetgrid.events.codec import decode_submission, format_time
from jetgrid.events.errors import InvalidSubject
from jetgrid.events.workers import (
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
)
from jetgrid.projections import jobs as jobs_reducer
from jetgrid.projections import steady
from jetgrid.projections import workers as wr
from jetgrid.projections.hours import OpenHours
from jetgrid.projections.jobs import JobView
from jetgrid.projections.rollup import HOUR_S, HourLog, rollup_event
from jetgrid.projections.uptime import DEFAULT_WINDOWS, UptimeWindows
from jetgrid.projections.workers import WorkerView

__all__ = [
    "STREAMS",
    "Fold",
    "FoldConfig",
    "Invalid",
    "TierChange",
    "check_worker_message",
    "fold_config",
    "ticks",
]

STREAMS = (WORKERS, JOBS, JOB_EVENTS)  # logical names, in the order a replay reads them
_EVENT_NAMES: dict[type[Event], str] = {
    WorkerRegistered: "registered",
    WorkerHeartbeat: "heartbeat",
    WorkerDraining: "draining",
    WorkerDeregistered: "deregistered",
}
MAX_TICKS = 10_000  # a jump of more ticks than this is judged at its last tick only
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class FoldConfig:
    """What the views depend on besides the log; recorded in the store's meta table."""

    policy: TierPolicy = DEFAULT_POLICY
    windows: UptimeWindows = DEFAULT_WINDOWS
    tick_s: float = 1.0
    max_future_s: float = 300.0

    def meta(self) -> dict[str, str]:
        """The config as strings, to refuse a store built under another config."""
        return {
            "uptime_windows": ",".join(repr(w) for w in self.windows.windows_s),
            "tier_window": repr(self.windows.tier_window),
            "tier_policy": self.policy.to_string(),
            "probation": f"{self.policy.probation_slots}:{self.policy.probation_factor!r}",
            "hysteresis": repr(self.policy.hysteresis),
            "tick_s": repr(self.tick_s),
            "max_future_s": repr(self.max_future_s),
        }


@dataclass(frozen=True, slots=True)
class Invalid:
    """A WORKERS or JOB_EVENTS message that failed the rules: what to record on the invalid
    stream (``<prefix>.invalid.<stream>``)."""

    seq: int
    subject: str
    data: bytes
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    stream: str = WORKERS


@dataclass(frozen=True, slots=True)
class TierChange:
    """One row of tier history: `worker_id` entered `tier` (factor `factor`) at `since`."""

    worker_id: str
    n: int
    since: datetime
    tier: str
    factor: float | None


def ticks(prev: datetime | None, now: datetime, step_s: float) -> list[datetime]:
    """clock_ticks, bounded: a jump over more than MAX_TICKS ticks is judged at its last one."""
    if prev is None or now <= prev:
        return []
    first = int((prev - _EPOCH).total_seconds() // step_s) + 1
    last = int((now - _EPOCH).total_seconds() // step_s)
    if last - first >= MAX_TICKS:
        first = last
    return [_EPOCH + timedelta(seconds=k * step_s) for k in range(first, last + 1)]


def check_job_event_speaker(subjects: Subjects, subject: str, env: Envelope) -> str | None:
    """Why a lifecycle event must not count, or None. A worker publishes under its own id,
    the subject's last token (NATS permissions enforce that), so an event whose payload names
    another worker, or another job, is a forgery or a bug: it changes no view; so is an event
    that is about no job (a worker event published on a job's subject)."""
    try:
        job_id, _, speaker = subjects.parse_job_event_by(subject)
    except InvalidSubject as exc:
        return str(exc)
    said = getattr(env.event, "job_id", None)
    if not said:
        return f"Event type {env.type!r} does not belong on the JOB_EVENTS stream."
    if said != job_id:
        return f"the event is about job {said!r} but was published on job {job_id!r}'s subject"
    named = getattr(env.event, "worker_id", None)
    if speaker is not None and named is not None and named != speaker:
        return (
            f"the event names worker {named!r} but was published by worker {speaker!r} "
            f"(subject {subject})"
        )
    return None


def check_worker_message(
    subjects: Subjects,
    subject: str,
    data: bytes,
    stream_time: datetime,
    max_future_s: float,
) -> Envelope | str:
    """The decoded envelope of a WORKERS message, or the reason it is invalid."""
    try:
        env = decode(data)
    except InvalidEvent as exc:
        return exc.reason
    ev = env.event
    name = _EVENT_NAMES.get(type(ev))
    if name is None:
        return f"Event type {env.type!r} does not belong on the WORKERS stream."
    try:
        wid, event_name = subjects.parse_worker_event(subject)
    except Exception as exc:  # InvalidSubject
        return str(exc)
    if wid != ev.worker_id:
        return f"Subject names worker {wid!r} but the event is from worker {ev.worker_id!r}."
    if event_name != name:
        return f"Subject says {event_name!r} but the event is a {name!r} ({env.type})."
    ahead = (env.time - stream_time).total_seconds()
    if ahead > max_future_s:
        return (
            f"Event time {format_time(env.time)} is {ahead:.0f} s ahead of the stream's "
            f"timestamp {format_time(stream_time)} (at most {max_future_s:.0f} s allowed)."
        )
    return env


class Fold:
    """Worker views, a window of job views, the worker log clock and the per-stream positions."""

    def __init__(
        self,
        subjects: Subjects,
        config: FoldConfig | None = None,
        *,
        workers: dict[str, WorkerView] | None = None,
        clock: datetime | None = None,
        positions: dict[str, int] | None = None,
        history_counts: dict[str, int] | None = None,
    ) -> None:
        self.subjects = subjects
        self.config = config or FoldConfig()
        self.workers: dict[str, WorkerView] = dict(workers or {})
        self.jobs: dict[str, JobView] = {}
        self.clock = clock
        self.positions: dict[str, int] = {s: 0 for s in STREAMS}
        self.positions.update(positions or {})
        self.workers_seq = self.positions[WORKERS]  # of the newest applied event (the KV value)
        self._history_n: dict[str, int] = dict(history_counts or {})
        self.dirty_workers: set[str] = set()
        self.dirty_jobs: set[str] = set()
        self.tier_changes: list[TierChange] = []
        self.invalid: list[Invalid] = []
        self.counts = {"applied": 0, "duplicates": 0, "invalid": 0, "skipped": 0}
        self.hours = OpenHours()  # hour rollups waiting to be published (projections.hours)
        self._factors: dict[str, float | None] = {}  # tier -> factor (the policy is fixed)
        self._hours: dict[str, tuple[HourLog, Any]] = {}  # per worker: its log, last taken
        # No view can be silenced by a gap this short (a guard only: `wr.silence` decides).
        quiet = (wr.ONLINE_INTERVALS * v.interval_s for v in self.workers.values())
        self._quiet_s = min(quiet, default=math.inf)

    # -- WORKERS ------------------------------------------------------------------------------
    def worker_message(
        self,
        seq: int,
        subject: str,
        data: bytes,
        stream_time: datetime,
        headers: Mapping[str, str] | None = None,
    ) -> bool:
        """Fold one WORKERS message at `seq`; False if it was at or below the position."""
        if seq <= self.positions[WORKERS]:
            self.counts["skipped"] += 1
            return False
        self.positions[WORKERS] = seq
        got = check_worker_message(
            self.subjects, subject, data, stream_time, self.config.max_future_s
        )
        if isinstance(got, str):
            self.invalid.append(Invalid(seq, subject, data, got, dict(headers or {})))
            self.counts["invalid"] += 1
            return True
        self.apply_worker(got)
        self.workers_seq = seq
        return True

    def apply_worker(self, env: Envelope) -> None:
        """Apply a valid worker envelope: refresh ticks first, then the reducer."""
        cfg = self.config
        t = env.time
        if self.clock is None or t > self.clock:
            if self.clock is not None and (t - self.clock).total_seconds() > self._quiet_s:
                self.silence_all(self.clock, t)
            for tick in ticks(self.clock, t, cfg.tick_s):
                self.refresh_all(tick)
                if tick.timestamp() % HOUR_S == 0:
                    self.take_rollups(tick)
            self.clock = t
        wid = env.event.worker_id
        old = self.workers.get(wid)
        new = steady.apply(old, env, cfg.policy, cfg.windows)
        if new is old:
            self.counts["duplicates"] += 1
            return
        self.counts["applied"] += 1
        self._changed(old, new)

    def silence_all(self, since: datetime, until: datetime) -> None:
        """The WORKERS log was silent from `since` to `until`: `workers.silence` every view.

        Called before the ticks of the silence are judged, so a fleet-wide outage (the broker
        down) moves no tier while the log catches up.
        """
        for view in list(self.workers.values()):
            new = wr.silence(view, since, until)
            if new is not view:
                self._changed(view, new)

    def refresh_all(self, now: datetime) -> None:
        """Re-judge, at log time `now` (a tick), every view not heard from in the last
        ONLINE_INTERVALS heartbeat intervals.

        A worker that pings is judged at each of its pings anyway; the ticks exist for silent
        workers, whose uptime decays without events. Skipping the others is a function of the
        view and the tick alone, so it keeps live and replay identical, and it saves a refresh
        per worker per tick (the bulk of the work at thousands of workers).
        """
        cfg = self.config
        for view in self.workers.values():
            if view.as_of >= now:
                continue
            if (now - view.last_seen).total_seconds() <= wr.ONLINE_INTERVALS * view.interval_s:
                continue
            new = wr.refresh(view, now, cfg.policy, cfg.windows)
            if new is not view:
                self._changed(view, new)

    def take_rollups(self, end: datetime) -> None:
        """At the log tick `end` that closes an hour: a rollup of each worker whose tracker
        changed since its last one (hour ends are ticks when tick_s divides an hour)."""
        hour = int(end.timestamp()) - HOUR_S
        for wid, (hours, last) in self._hours.items():
            view = self.workers[wid]
            if view.uptime is None or view.uptime is last:
                continue
            r = hours.take(view.uptime)
            if r is not None:
                windows = self.config.windows
                ev = rollup_event(wid, hour, r, view.uptime, view.tier, windows, view)
                self.hours.took_rollup(ev)
            self._hours[wid] = (hours, view.uptime)

    def changed(self, old: WorkerView | None, new: WorkerView) -> None:
        """Record a view change made outside the reducer (projections.prelude)."""
        self._changed(old, new)

    def _changed(self, old: WorkerView | None, new: WorkerView) -> None:
        wid = new.worker_id
        if new.uptime is not None and (old is None or new.uptime is not old.uptime):
            hours = (self._hours.get(wid) or self._hours.setdefault(wid, (HourLog(), None)))[0]
            hours.observe(new.uptime)
        self._quiet_s = min(self._quiet_s, wr.ONLINE_INTERVALS * new.interval_s)
        self.workers[wid] = new
        self.dirty_workers.add(wid)
        if old is None or old.tier != new.tier or old.tier_since != new.tier_since:
            n = self._history_n.get(wid, 0) + 1
            self._history_n[wid] = n
            since = new.tier_since or new.as_of
            self.tier_changes.append(TierChange(wid, n, since, new.tier, self.factor(new.tier)))

    def factor(self, tier: str) -> float | None:
        """The policy's factor of `tier`; None for a name the policy does not have."""
        if tier not in self._factors:
            policy = self.config.policy
            self._factors[tier] = policy.factor(tier) if tier in policy.names else None
        return self._factors[tier]

    # -- JOBS and JOB_EVENTS --------------------------------------------------------------------
    def needed_jobs(self, ids: Iterable[str]) -> list[str]:
        """Ids the runner must load from the store before folding their events."""
        return [j for j in ids if j not in self.jobs]

    def submission(
        self,
        seq: int,
        subject: str,
        data: bytes,
        stream_time: datetime,
        *,
        decoded: Envelope | str | None = None,
    ) -> bool:
        """Fold one JOBS message; an invalid one is recorded in `invalid` and only moves the
        position (a worker that pulls it records the same record: both use its stable id).

        `decoded`: the envelope if the caller already decoded it, or the reason it is invalid.
        """
        if seq <= self.positions[JOBS]:
            self.counts["skipped"] += 1
            return False
        self.positions[JOBS] = seq
        got: Envelope | str
        if decoded is None:
            try:
                got = decode_submission(
                    data, subject=subject, subjects=self.subjects, seq=seq, stream_time=stream_time
                )
            except InvalidEvent as exc:
                got = exc.reason
        else:
            got = decoded
        if isinstance(got, str):
            self.invalid.append(Invalid(seq, subject, data, got, stream=JOBS))
            self.counts["invalid"] += 1
            return True
        env = got
        self._apply_job(env.event.job_id, env)
        return True

    def job_event(
        self, seq: int, subject: str, data: bytes, stream_time: datetime | None = None
    ) -> bool:
        """Fold one JOB_EVENTS message (`stream_time`: its stream timestamp)."""
        if seq <= self.positions[JOB_EVENTS]:
            self.counts["skipped"] += 1
            return False
        self.positions[JOB_EVENTS] = seq
        try:
            env = decode(data).at(seq, subject)
        except InvalidEvent as exc:
            reason: str | None = exc.reason
        else:
            reason = check_job_event_speaker(self.subjects, subject, env)
        if reason is not None:
            self.invalid.append(Invalid(seq, subject, data, reason, stream=JOB_EVENTS))
            self.counts["invalid"] += 1
            return True
        self._apply_job(str(env.event.job_id), env)
        self.hours.job_event(env.event, env.time, stream_time)
        return True

    def _apply_job(self, job_id: str, env: Envelope) -> None:
        old = self.jobs.get(job_id)
        new = jobs_reducer.apply(old, env)
        self.counts["applied"] += 1
        if new is not old and new != old:
            self.jobs[job_id] = new
            self.dirty_jobs.add(job_id)

    # -- handing changes to the store ---------------------------------------------------------
    def take_changes(self) -> Changes:
        """What changed since the last call; clears the dirty sets."""
        self.hours.tier_changes((c.worker_id, c.since, c.tier) for c in self.tier_changes)
        changes = Changes(
            workers=[self.workers[w] for w in sorted(self.dirty_workers)],
            jobs=[self.jobs[j] for j in sorted(self.dirty_jobs)],
            tier_changes=self.tier_changes,
            invalid=self.invalid,
            positions=dict(self.positions),
            clock=self.clock,
            rollups=self.hours.close(self.clock),
            hours=self.hours.take_rows(),
        )
        self.dirty_workers = set()
        self.dirty_jobs = set()
        self.tier_changes = []
        self.invalid = []
        return changes

    def trim_jobs(self, keep: int) -> None:
        """Forget clean job views beyond `keep` (the store has them)."""
        if len(self.jobs) <= keep:
            return
        self.jobs = {j: v for j, v in self.jobs.items() if j in self.dirty_jobs}


@dataclass
class Changes:
    """One batch's effect, written by the store in one transaction with its positions."""

    workers: list[WorkerView]
    jobs: list[JobView]
    tier_changes: list[TierChange]
    invalid: list[Invalid]
    positions: dict[str, int]
    clock: datetime | None
    rollups: list[Event] = field(default_factory=list)  # to publish (projections.hours)
    hours: dict[str, str | None] = field(default_factory=dict)  # OpenHours.take_rows

    @property
    def empty(self) -> bool:
        return not (self.workers or self.jobs or self.tier_changes)


def kv_value(view: WorkerView, fold: Fold) -> dict[str, Any]:
    """The tiers KV value for one worker (the contract in the README)."""
    now = fold.clock or view.as_of
    uptime: dict[str, float | None] = {label: None for label in fold.config.windows.labels}
    slots = 0
    if view.uptime is not None:
        at = now.timestamp()
        for w in view.uptime.windows(at):
            uptime[w.label] = w.uptime
        slots = view.uptime.observed_slots(at)
    return {
        "worker_id": view.worker_id,
        "tier": view.tier,
        "factor": fold.factor(view.tier),
        "uptime": uptime,
        "observed_slots": slots,
        "since": format_time(view.tier_since or view.as_of),
        "log_time": format_time(now),
        "jobs_seq": fold.workers_seq,
    }


def fold_config(settings: Settings, tick_s: float = 1.0) -> FoldConfig:
    """The fold's config from settings (tier policy, uptime windows): the one every reader of
    the log (projector, replay, audit, the gateway's fleet, `jetgrid pools`) folds under."""
    return FoldConfig(
        policy=load_policy(settings.tier_policy_file, settings.tier_policy),
        windows=UptimeWindows.parse(settings.uptime_windows, settings.tier_window),
        tick_s=tick_s,
    )
