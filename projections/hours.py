"""Open hours: hour rollups waiting for JOB_EVENTS, and the jobs each worker took. Pure.

An hour rollup (projections.rollup) is taken when the WORKERS log clock reaches the hour's end,
but JOB_EVENTS is folded independently, so the jobs taken in that hour may not all be folded
yet. `OpenHours` holds each rollup until the hour is closed on both streams, then adds the
jobs its worker took in the hour and hands it out for publishing:

- **A job taken** is a claim `taken` finds (one per delivery, redeliveries included, as the
  audit counts them: a `started`, or an outcome carrying its run's claim), counted in the hour
  of the claim's time, per tier (the
  worker's tier at that time exactly, from the fold's tier changes, as the audit's
  ``tier_at``) and apart when taken for want of better (``fallback``).
- **An hour closes** when the WORKERS clock, and the JOB_EVENTS mark less MAX_CLAIM_DELAY_S (a
  claim riding on its run's outcome is folded up to that long after its time), are both at or
  past its end. The mark is the newest ``min(event time, stream time)`` of the JOB_EVENTS messages
  folded, or, when the projector has read JOB_EVENTS to its end (`idle`), the stream time of
  the newest WORKERS message it had received before looking: anything stored later has a later
  stream time. So an hour closes while JOB_EVENTS is idle too.
- A claim folded after its hour closed (its worker's clock behind the others') is counted in
  the oldest open hour, so the totals stay exact; so are the claims of a worker that has no
  rollup in their hour (its tracker did not change in it).

The state is saved with each batch (`take_rows`, `from_rows`: the store's ``open_hours``
table, outside the digest), so a projector restarted, or started from a snapshot, between an
hour's end on WORKERS and on JOB_EVENTS still publishes that hour, with every claim counted.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from jetgrid.events.base import Event
from jetgrid.events.lifecycle import MAX_CLAIM_DELAY_S, claim_of
from jetgrid.events.workers import WorkerRollup
from jetgrid.projections.rollup import HOUR_S

__all__ = ["UNSEEN", "OpenHours", "taken"]

UNSEEN = "unseen"  # the tier before a worker's first tier entry (the audit's name)


def taken(ev: Event, time: datetime) -> tuple[str, bool, float] | None:
    """(worker, taken for want of better, when) if `ev` (its event time `time`) records that a
    worker took a job, else None: the claims events.claim_of finds (a `started` that names the
    submission's JOBS sequence, old logs' `claimed` events decoded as such, or an outcome that
    carries its run's claim)."""
    got = claim_of(ev, time)
    return None if got is None else (got.worker_id, got.fallback, got.at.timestamp())


def _hour(t: float) -> int:
    return int(t // HOUR_S) * HOUR_S


@dataclass
class OpenHours:
    """Rollups and claims of the hours not yet closed (module docstring)."""

    keep: bool = False  # False: rollups are dropped as taken (readers that publish nothing)
    rollups: dict[tuple[int, str], WorkerRollup] = field(default_factory=dict)
    claims: dict[tuple[int, str], list[tuple[float, bool]]] = field(default_factory=dict)
    spans: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # (since, tier)
    mark: float = -math.inf
    closed: int = -(2**62)  # hours that start before this are closed and published
    dirty: set[str] = field(default_factory=set)

    # -- input ---------------------------------------------------------------------------------
    def took_rollup(self, ev: WorkerRollup) -> None:
        """A rollup taken at its hour's end on WORKERS."""
        if self.keep:
            self.rollups[(ev.hour, ev.worker_id)] = ev
            self.dirty.add(f"r:{ev.hour}:{ev.worker_id}")

    def job_event(self, ev: Event, event_time: datetime, stream_time: datetime | None) -> None:
        """A valid JOB_EVENTS message folded: move the mark, count it if a job was taken."""
        if not self.keep:
            return
        t = event_time.timestamp()
        seen = t if stream_time is None else min(t, stream_time.timestamp())
        if seen > self.mark:
            self.mark = seen
            self.dirty.add("mark")
        took = taken(ev, event_time)
        if took is not None:
            self._claim(_hour(took[2]), took[0], took[2], took[1])

    def idle(self, stream_time: datetime) -> None:
        """The projector read JOB_EVENTS to its end after receiving a WORKERS message stored
        at `stream_time`."""
        if self.keep and stream_time.timestamp() > self.mark:
            self.mark = stream_time.timestamp()
            self.dirty.add("mark")

    def tier_changes(self, changes: Iterable[tuple[str, datetime, str]]) -> None:
        """The fold's tier changes, (worker, since, tier), in order."""
        if not self.keep:
            return
        for wid, since, tier in changes:
            self.spans.setdefault(wid, []).append((since.timestamp(), tier))
            self.dirty.add(f"s:{wid}")

    def _claim(self, hour: int, wid: str, t: float, fallback: bool) -> None:
        key = (max(hour, self.closed), wid)
        self.claims.setdefault(key, []).append((t, fallback))
        self.dirty.add(f"c:{key[0]}:{wid}")

    # -- closing -------------------------------------------------------------------------------
    def closed_to(self, clock: datetime) -> int:
        """Hours that start before this may close at WORKERS clock `clock`."""
        # A claim may be folded up to MAX_CLAIM_DELAY_S after its time (events.JobStarted).
        end = min(self.mark - MAX_CLAIM_DELAY_S, clock.timestamp())
        return max(self.closed, _hour(end) if end > -math.inf else self.closed)

    def waiting(self, clock: datetime | None) -> bool:
        """Whether a rollup waits only for JOB_EVENTS (WORKERS is past its hour)."""
        if clock is None:
            return False
        end = clock.timestamp()
        to = self.closed_to(clock)
        return any(to <= h and h + HOUR_S <= end for h, _ in self.rollups)

    def close(self, clock: datetime | None) -> list[Event]:
        """The rollups of the hours now closed, with the jobs taken, in (hour, worker) order."""
        if not self.keep or clock is None:
            return []
        to = self.closed_to(clock)
        out: list[Event] = []
        for key in sorted(k for k in self.claims if k[0] < to):
            h, wid = key
            if (h, wid) not in self.rollups:  # no rollup for it in that hour: the next one
                moved = self.claims.pop(key)
                self.claims.setdefault((max(h + HOUR_S, to), wid), []).extend(moved)
                self.dirty.update({f"c:{h}:{wid}", f"c:{max(h + HOUR_S, to)}:{wid}"})
        for key in sorted(k for k in self.rollups if k[0] < to):
            h, wid = key
            ev = self.rollups.pop(key)
            got = self.claims.pop(key, [])
            self.dirty.update({f"r:{h}:{wid}", f"c:{h}:{wid}"})
            per_tier = Counter(self._tier_at(wid, t) for t, _ in got)
            out.append(
                ev.model_copy(
                    update={
                        "jobs_taken": len(got),
                        "jobs_taken_per_tier": dict(sorted(per_tier.items())),
                        "jobs_taken_fallback": sum(1 for _, fb in got if fb),
                    }
                )
            )
        if to > self.closed:
            self.closed = to
            self.dirty.add("mark")
        self._trim(to)
        return out

    def _tier_at(self, wid: str, t: float) -> str:
        spans = self.spans.get(wid, [])
        i = bisect.bisect_right([s for s, _ in spans], t) - 1
        return UNSEEN if i < 0 else spans[i][1]

    def _trim(self, to: int) -> None:
        """Keep each worker's tier spans from the last one in force an hour before the oldest
        open hour (late claims reach back that far)."""
        keep_from = to - HOUR_S
        for wid, spans in self.spans.items():
            i = bisect.bisect_right([s for s, _ in spans], keep_from) - 1
            if i > 0:
                del spans[:i]
                self.dirty.add(f"s:{wid}")

    # -- saving --------------------------------------------------------------------------------
    def take_rows(self) -> dict[str, str | None]:
        """The state changed since the last call, key -> JSON (None: delete the key)."""
        out: dict[str, str | None] = {}
        for key in self.dirty:
            kind, _, rest = key.partition(":")
            if kind == "mark":
                out[key] = json.dumps([self.mark, self.closed])
            elif kind == "s":
                spans = self.spans.get(rest)
                out[key] = json.dumps(spans) if spans else None
            else:
                h, _, wid = rest.partition(":")
                k = (int(h), wid)
                if kind == "r":
                    ev = self.rollups.get(k)
                    out[key] = None if ev is None else ev.model_dump_json()
                else:
                    got = self.claims.get(k)
                    out[key] = json.dumps(got) if got else None
        self.dirty = set()
        return out

    @classmethod
    def from_rows(cls, rows: Mapping[str, str], keep: bool) -> OpenHours:
        """The state `take_rows` saved."""
        hours = cls(keep=keep)
        for key, value in rows.items():
            kind, _, rest = key.partition(":")
            if kind == "mark":
                mark, closed = json.loads(value)
                hours.mark, hours.closed = float(mark), int(closed)
            elif kind == "s":
                hours.spans[rest] = [(float(s), str(t)) for s, t in json.loads(value)]
            else:
                h, _, wid = rest.partition(":")
                k = (int(h), wid)
                if kind == "r":
                    hours.rollups[k] = WorkerRollup.model_validate_json(value)
                else:
                    hours.claims[k] = [(float(t), bool(fb)) for t, fb in json.loads(value)]
        return hours
