"""Gather the audit's input by replaying the log (no database): tier timelines, claims, outcomes.

WORKERS is folded with the projector's own fold (projections.fold), so the tier timeline is
exactly the one the projector published (hours whose raw pings aged out come from their
rollups, projections.prelude, and each worker says up to when); JOBS and JOB_EVENTS give
submissions, claims (events.claim_of: the `started` events that carry `jobs_seq`, or an
outcome carrying its run's claim; one per delivery a worker took, also in old logs, whose
`claimed` events decode as such: events.catalogue) and the first terminal event of each job
(log order). Streams are read up to their last sequence when the audit starts, or to the last
message stored at or before `until` (the stream's timestamp).

Where JOB_EVENTS' oldest messages aged out, the jobs each worker took in the hours before the
first retained one (to the end of the hour that holds it) come from the rollups' counts
(`RolledClaims`, projections.hours); the retained claims of those hours are not counted again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JOB_EVENTS, JOBS, WORKERS, InvalidEvent, decode
from jetgrid.events.codec import decode_submission
from jetgrid.events.lifecycle import TERMINAL_EVENTS, claim_of
from jetgrid.events.workers import WorkerRollup
from jetgrid.projections.archive import ArchiveDir
from jetgrid.projections.audit import Claim, RolledClaims, Span, WorkerInput
from jetgrid.projections.fold import Fold, FoldConfig, check_job_event_speaker
from jetgrid.projections.folder import stream_filters
from jetgrid.projections.items import Item
from jetgrid.projections.prelude import before_cut, fold_rollups
from jetgrid.projections.replay import all_rollups, feed, first_time, purged_rollups
from jetgrid.projections.rollup import HOUR_S

__all__ = ["AuditLog", "gather"]


@dataclass
class AuditLog:
    fold: Fold
    timelines: dict[str, list[Span]] = field(default_factory=dict)
    claims: dict[str, list[Claim]] = field(default_factory=dict)
    submitted: dict[str, float] = field(default_factory=dict)
    last_claimer: dict[str, str] = field(default_factory=dict)
    terminal: dict[str, tuple[float, str, str | None]] = field(default_factory=dict)
    rollups_until: dict[str, datetime] = field(default_factory=dict)  # projections.prelude
    rolled: dict[str, list[RolledClaims]] = field(default_factory=dict)  # per worker
    claims_from: float = -math.inf  # claims before this (event time) come from `rolled`

    async def apply(self, items: list[Item]) -> None:
        """The Folder interface (projections.replay.Batches): fold one batch."""
        fold = self.fold
        for it in items:
            if it.stream == WORKERS:
                fold.worker_message(it.seq, it.subject, it.data, it.time)
            elif it.stream == JOBS:
                fold.positions[JOBS] = it.seq
                try:
                    env = decode_submission(
                        it.data, subject=it.subject, subjects=fold.subjects, seq=it.seq,
                        stream_time=it.time,
                    )  # fmt: skip
                except InvalidEvent:
                    fold.counts["invalid"] += 1  # skipped and counted: an audit publishes nothing
                    continue
                self.submitted.setdefault(env.event.job_id, env.time.timestamp())
            else:
                fold.positions[JOB_EVENTS] = it.seq
                try:
                    env = decode(it.data).at(it.seq, it.subject)
                except InvalidEvent:
                    fold.counts["invalid"] += 1
                    continue
                if check_job_event_speaker(fold.subjects, it.subject, env) is not None:
                    fold.counts["invalid"] += 1  # the fold's rule: it changes no view
                    continue
                ev, t = env.event, env.time.timestamp()
                taken = claim_of(ev, env.time)
                if taken is not None:
                    at = taken.at.timestamp()
                    if at >= self.claims_from:  # else counted by its hour's rollup
                        claim = Claim(at, ev.job_id, taken.attempt, fallback=taken.fallback)
                        self.claims.setdefault(taken.worker_id, []).append(claim)
                    self.last_claimer[ev.job_id] = taken.worker_id
                if isinstance(ev, TERMINAL_EVENTS) and ev.job_id not in self.terminal:
                    wid = getattr(ev, "worker_id", None) or self.last_claimer.get(ev.job_id)
                    name = ev.type.rsplit(".", 1)[-1]
                    self.terminal[ev.job_id] = (t, name, wid)
        for c in fold.take_changes().tier_changes:
            self.timelines.setdefault(c.worker_id, []).append(
                Span(c.since.timestamp(), c.tier, c.factor)
            )

    def roll_claims(self, rollups: list[WorkerRollup], purged: bool, cut: datetime | None) -> None:
        """Take the jobs taken before JOB_EVENTS' first retained message (`cut`; None: none
        retained) from the rollups of those hours, to the end of the hour that holds it."""
        if not purged:
            return
        chosen = [ev for ev in before_cut(rollups, cut) if ev.jobs_taken is not None]
        if not chosen:  # rollups published before jobs were counted: the claims are gone
            return
        self.claims_from = math.inf if cut is None else math.ceil(cut.timestamp() / HOUR_S) * HOUR_S
        for ev in chosen:
            got = RolledClaims(
                ev.hour, dict(ev.jobs_taken_per_tier or {}), ev.jobs_taken_fallback or 0
            )
            self.rolled.setdefault(ev.worker_id, []).append(got)

    def workers(self, at: datetime | None = None) -> list[WorkerInput]:
        """One WorkerInput per worker seen (in WORKERS or in claims), uptime judged at `at`."""
        when = at or self.fold.clock
        out = []
        finished: dict[str, list[tuple[float, str, float | None]]] = {}
        for job_id, (t, status, wid) in self.terminal.items():
            if wid is None:
                continue
            sub = self.submitted.get(job_id)
            finished.setdefault(wid, []).append((t, status, None if sub is None else t - sub))
        ids = sorted(set(self.fold.workers) | set(self.claims) | set(finished) | set(self.rolled))
        labels = self.fold.config.windows.labels
        for wid in ids:
            view = self.fold.workers.get(wid)
            uptime: dict[str, Any] = {label: None for label in labels}
            if view is not None and view.uptime is not None and when is not None:
                for w in view.uptime.windows(when.timestamp()):
                    uptime[w.label] = w.uptime
            out.append(
                WorkerInput(
                    wid,
                    self.timelines.get(wid, []),
                    self.claims.get(wid, []),
                    uptime,
                    finished.get(wid, []),
                    until.timestamp() if (until := self.rollups_until.get(wid)) else None,
                    self.rolled.get(wid, []),
                )
            )
        return out


async def gather(
    settings: Settings,
    bus: Bus,
    config: FoldConfig,
    until: datetime | None = None,
    archive: ArchiveDir | None = None,
) -> AuditLog:
    """Read the three streams (to `until`, if given; from `archive` first, if given) into an
    AuditLog."""
    audit = AuditLog(Fold(settings.subjects, config))
    rollups = await all_rollups(bus, settings, until)
    purged = await purged_rollups(bus, settings, until, rollups, archive)
    audit.rollups_until = fold_rollups(audit.fold, purged)
    await audit.apply([])
    events = await first_time(bus, settings.streams(JOB_EVENTS), archive, JOB_EVENTS)
    audit.roll_claims(rollups, *events)
    for logical, (stream, subject) in stream_filters(settings).items():
        last = await bus.last_seq(stream)
        await feed(bus, audit, logical, stream, subject, last, until, 20_000, None, archive)
    return audit
