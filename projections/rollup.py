"""Hour rollups of an uptime tracker: what survives of a worker's pings once they age out. Pure.

A rollup (`HourRollup`) is the tracker's own record of one hour, in its slot numbering, so that
folding it (`fold_rollup`) leaves a tracker exactly as the raw pings of that hour would have:

- ``top`` and ``bits``: the newest slot at the end of the hour and the healthy slots up to it,
  bit i for slot ``top - i`` (the tracker's ``mask`` convention), from ``lo`` on. ``lo`` reaches
  back over the previous rollup's exact horizon (``horizon_slots`` slots), so a late ping that
  marked an earlier slot after that rollup was taken is carried too. Slots are per heartbeat
  interval, and pauses (planned absences, fleet silences) stop the slot clock, so the slots a
  pause excluded are simply not there: nothing else is needed to keep the windows exact.
- ``origin``, ``first_slot``, ``away``, ``provisional``, ``resumed``: the tracker's grid and
  pause state at the end of the hour (they move with reboots and pauses).

Size: at 1 Hz an hour plus the horizon is 3,856 bits, 482 bytes before compression (less at the
5 s default: 976 bits); `encode_bits` stores them zlib-compressed in base64, a steady worker's
hour in a few dozen bytes.

`HourLog` is the producer's side: `observe` the tracker after every change, `take` the rollup
at the end of the hour. `fold_rollup` is the consumer's: applied in hour order, rollups give a
tracker equal to the one the raw pings gave (tests/projections/test_rollup.py checks this for
random ping patterns with pauses, resumes, late and duplicate pings).
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from jetgrid.coordinator.tiers import DEFAULT_POLICY, TierPolicy
from jetgrid.events.workers import WorkerRollup
from jetgrid.projections import workers as wr
from jetgrid.projections.uptime import DEFAULT_WINDOWS, UptimeTracker, UptimeWindows
from jetgrid.projections.workers import WorkerView

__all__ = [
    "HOUR_S",
    "HourLog",
    "HourRollup",
    "apply_rollup",
    "decode_bits",
    "encode_bits",
    "fold_rollup",
    "rollup_event",
    "rollup_of",
]

HOUR_S = 3600


@dataclass(frozen=True, slots=True)
class HourRollup:
    """One worker's uptime tracker over one hour, exactly (module docstring)."""

    interval: float
    origin: float
    first_slot: int
    lo: int
    top: int
    bits: int  # bit i: slot top - i was healthy (only slots >= lo)
    away: int | None = None
    provisional: float | None = None
    resumed: float | None = None

    @property
    def healthy(self) -> int:
        """Healthy slots carried (those of the hour, plus late ones behind the last rollup)."""
        return self.bits.bit_count()


def encode_bits(bits: int) -> str:
    """A bitmap as base64 of its zlib-compressed little-endian bytes."""
    raw = bits.to_bytes((bits.bit_length() + 7) // 8, "little")
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def decode_bits(text: str, max_bits: int = 1 << 20) -> int:
    """Inverse of encode_bits; ValueError if it is not one, or longer than `max_bits`."""
    try:
        d = zlib.decompressobj()
        raw = d.decompress(base64.b64decode(text, validate=True), (max_bits + 7) // 8 + 1)
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"Not an encoded slot bitmap: {exc}.") from exc
    if d.unconsumed_tail or len(raw) > (max_bits + 7) // 8:
        raise ValueError(f"A slot bitmap is longer than {max_bits} bits.")
    return int.from_bytes(raw, "little")


@dataclass(slots=True)
class HourLog:
    """Accumulates a tracker's healthy slots between rollups (the producer's side)."""

    top: int | None = None
    bits: int = 0
    lo: int | None = None  # the first slot the next rollup carries; None: from the first

    def observe(self, tracker: UptimeTracker) -> None:
        """Record `tracker`'s exact slots; call after every change to it."""
        if tracker.first_slot is None:
            return
        if self.top is None or tracker.top < self.top:  # first, or a new tracker
            self.top, self.bits, self.lo = tracker.top, tracker.mask, None
            return
        self.bits = (self.bits << (tracker.top - self.top)) | tracker.mask
        self.top = tracker.top

    def take(self, tracker: UptimeTracker) -> HourRollup | None:
        """The rollup of the hour that ends now (`tracker` as it stands then); None if the
        tracker never saw a ping. The next rollup reaches back over this one's horizon."""
        self.observe(tracker)
        if self.top is None or tracker.first_slot is None:
            return None
        lo = tracker.first_slot if self.lo is None else max(self.lo, tracker.first_slot)
        keep = self.top - lo + 1
        bits = self.bits & ((1 << keep) - 1) if keep > 0 else 0
        rollup = HourRollup(
            tracker.interval,
            tracker.origin,
            tracker.first_slot,
            lo,
            self.top,
            bits,
            tracker.away,
            tracker.provisional,
            tracker.resumed,
        )
        self.lo = self.top - tracker.horizon + 1
        self.bits &= (1 << tracker.horizon) - 1
        return rollup


def fold_rollup(
    tracker: UptimeTracker | None, rollup: HourRollup, windows: UptimeWindows = DEFAULT_WINDOWS
) -> UptimeTracker:
    """The tracker after `rollup`, as the raw pings of its hour would have left it.

    A rollup older than the tracker (its ``top`` behind the tracker's) changes nothing. A
    tracker of another interval is replaced, as the reducer does when pings change interval.
    """
    if tracker is None or tracker.first_slot is None or tracker.interval != rollup.interval:
        fresh = UptimeTracker.start(rollup.interval, windows)
        t = fresh._with(rollup.origin, rollup.first_slot, rollup.lo - 1, 0, fresh.rings)
    else:
        t = tracker
    if rollup.top < t.top:
        return t
    h = t.horizon
    d = rollup.top - t.top
    late = (rollup.bits >> d) & ((1 << h) - 1)
    t = t._with(t.origin, t.first_slot, t.top, t.mask | late, t.rings)
    fresh_bits = rollup.bits & ((1 << d) - 1)
    while fresh_bits:
        j = fresh_bits.bit_length() - 1  # the oldest new healthy slot first
        t = t._advance(rollup.top - j, True)
        fresh_bits ^= 1 << j
    if t.top < rollup.top:
        t = t._advance(rollup.top, False)
    first = rollup.first_slot if t.first_slot is None else min(rollup.first_slot, t.first_slot)
    return replace(
        t,
        origin=rollup.origin,
        first_slot=first,
        away=rollup.away,
        provisional=rollup.provisional,
        resumed=rollup.resumed,
    )


# -- as events, and in a worker view ---------------------------------------------------------
def rollup_event(
    worker_id: str,
    hour: int,
    rollup: HourRollup,
    tracker: UptimeTracker,
    tier: str,
    windows: UptimeWindows = DEFAULT_WINDOWS,
    view: WorkerView | None = None,
) -> WorkerRollup:
    """The event for `rollup`, the hour starting at `hour` (epoch seconds) of `worker_id`,
    with the hour's summary: healthy and judged slots of the hour as `tracker` (the tracker at
    the hour's end) counts them, and the tier then; with `view` (the worker
    at the hour's end), its lifecycle too."""
    end = float(hour + HOUR_S)
    w = tracker.window(end, HOUR_S) if HOUR_S in tracker.windows_s else None
    healthy = int(w.healthy) if w is not None else rollup.healthy
    total = w.slots if w is not None else rollup.top - rollup.lo + 1
    return WorkerRollup(
        worker_id=worker_id,
        hour=hour,
        interval_s=rollup.interval,
        origin=rollup.origin,
        first_slot=rollup.first_slot,
        lo=rollup.lo,
        top=rollup.top,
        bits=encode_bits(rollup.bits),
        away=rollup.away,
        provisional=rollup.provisional,
        resumed=rollup.resumed,
        healthy_slots=healthy,
        total_slots=total,
        tier=tier,
        **(_lifecycle(view) if view is not None else {}),
    )


def _lifecycle(view: WorkerView) -> dict[str, Any]:
    def ts(t: datetime | None) -> float | None:
        return None if t is None else t.timestamp()

    return {
        "registered_at": ts(view.registered_at),
        "draining_at": ts(view.draining_at),
        "deregistered_at": ts(view.deregistered_at),
        "last_ping_at": ts(view.last_ping_at),
        "boot_id": view.boot_id,
        "reanchor": view.reanchor,
    }


def _with_lifecycle(view: WorkerView, ev: WorkerRollup, changes: dict[str, Any]) -> None:
    """Add to `changes` the lifecycle the rollup carries where it is newer than the view's."""

    def newer(name: str, value: float | None) -> None:
        t = None if value is None else datetime.fromtimestamp(value, UTC)
        if t is not None and (getattr(view, name) is None or t > getattr(view, name)):
            changes[name] = t

    newer("registered_at", ev.registered_at)
    newer("draining_at", ev.draining_at)
    newer("deregistered_at", ev.deregistered_at)
    if ev.registered_at is not None:
        changes["registered"] = True
    if ev.boot_id is not None:
        changes["boot_id"] = ev.boot_id
    if ev.last_ping_at is not None and (
        view.last_ping is None or view.last_ping.time.timestamp() < ev.last_ping_at
    ):  # what the rollup knows of the last ping: its time and boot
        t = datetime.fromtimestamp(ev.last_ping_at, UTC)
        changes["last_ping"] = wr.LastPing(t, 0, True, ev.interval_s, 0, boot_id=ev.boot_id)
        changes["reanchor"] = ev.reanchor


def rollup_of(ev: WorkerRollup) -> HourRollup:
    """The HourRollup an event carries; ValueError if its bitmap is not one."""
    return HourRollup(
        ev.interval_s,
        ev.origin,
        ev.first_slot,
        ev.lo,
        ev.top,
        decode_bits(ev.bits, max_bits=min(max(0, ev.top - ev.lo + 1), 1 << 20)),
        ev.away,
        ev.provisional,
        ev.resumed,
    )


def apply_rollup(
    view: WorkerView | None,
    ev: WorkerRollup,
    policy: TierPolicy = DEFAULT_POLICY,
    windows: UptimeWindows = DEFAULT_WINDOWS,
) -> WorkerView:
    """The worker view after an hour rollup: its tracker folded as the raw pings of the hour
    would have, and the tier judged at the hour's end. The same view when its tracker already
    holds that hour (raw pings or the rollup itself folded: its newest slot is at or past the
    rollup's), so a log with both raw pings and rollups gives the same answer as without.
    The tier is the one the rollup names (the raw pings' tier at the hour's end: hysteresis
    makes it depend on the path, which the bitmap alone does not give); a tier the policy does
    not know is judged from the folded tracker instead. Tier changes inside the hour are not
    carried: the history shows the hour's end. The lifecycle the rollup carries (registration,
    drain, deregistration and last ping times, boot) replaces the view's where newer, so the
    absence rules go on as after the raw events; registration details (pools, models) are not
    carried."""
    end = datetime.fromtimestamp(ev.hour + HOUR_S, UTC)
    start = datetime.fromtimestamp(ev.hour, UTC)
    if view is None:
        view = WorkerView(worker_id=ev.worker_id, first_seen=start, last_seen=start, as_of=start)
    elif view.worker_id != ev.worker_id:
        raise ValueError(f"Rollup for worker {ev.worker_id!r} applied to {view.worker_id!r}.")
    tracker = view.uptime
    if tracker is not None and tracker.interval == ev.interval_s and tracker.top >= ev.top:
        return view
    folded = fold_rollup(tracker, rollup_of(ev), windows)
    last = datetime.fromtimestamp(folded.origin + (folded.top + 0.5) * folded.interval, UTC)
    changes: dict[str, Any] = {"uptime": folded, "as_of": max(view.as_of, end)}
    _with_lifecycle(view, ev, changes)
    if view.heartbeat_interval_s is None:
        changes["heartbeat_interval_s"] = ev.interval_s
    if last > view.last_seen:
        changes["last_seen"] = last
    if ev.tier in policy.names:  # the tier the raw pings gave (hysteresis depends on the path)
        if ev.tier != view.tier or view.tier_since is None:
            changes.update(
                tier=ev.tier,
                tier_since=end,
                tier_history=(*view.tier_history, (end, ev.tier))[-wr.TIER_HISTORY :],
            )
    else:
        changes.update(wr._judged(view, folded, changes["as_of"], policy, windows))
    return wr._replace(view, changes)
