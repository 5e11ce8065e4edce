"""Absences: when a worker's uptime tracker stops counting. Pure; the rules, in event time:

- **Planned absence is not downtime.** When a worker leaves on purpose (``draining`` or
  ``deregistered`` turns it from active to not), its uptime tracker is paused at that event's
  time; when it is active again (its next registration, or a ping newer than the
  deregistration) the tracker resumes there. The slots in between count neither for nor
  against it, pings while draining included, and its tier stands still meanwhile: a worker
  restarted after an hour stopped cleanly is judged over the slots before it stopped. A worker
  that vanishes without saying so (SIGKILL, power loss) is never paused: a registration while
  active (a restart) leaves its silence counted as missed.

- **A silent fleet is not the worker's fault** (`projections.workers.silence`). When the
  WORKERS log (every worker) was silent for longer than ``ONLINE_INTERVALS`` of a live worker's
  heartbeats, the projector pauses that worker's tracker provisionally at the last event before
  the silence: the broker, or everyone's connection to it, was down. The worker's next event
  decides: if it is of the same boot (it lived through the outage) the tracker resumes where the
  silence ended, so the silence is cut out; its own lag after that is excused up to
  ``RECONNECT_GRACE_S`` or two heartbeat intervals, whichever is longer (clients reconnect on a
  0.5 s back-off), and counts beyond. If it is a new boot or a registration (it was restarted)
  the pause is cancelled, and the silence counts. A single worker's own network trouble never
  pauses anything while others keep pinging. (Workers do not hold pings for a reconnect, so
  the log shows an outage as a silence: see worker.heartbeats.)

Replays give the same tiers: pauses are decided by the log alone (its events, their times and
their order), like everything the reducer does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Protocol

from jetgrid.projections.uptime import UptimeTracker

__all__ = ["RECONNECT_GRACE_S", "Lifecycle", "lifecycle_of", "moved", "on_event"]

# After a fleet silence, how late a surviving worker may be heard from again without it counting.
RECONNECT_GRACE_S = 2.0

Lifecycle = Literal["active", "draining", "deregistered"]


def lifecycle_of(
    registered: datetime | None,
    pinged: datetime | None,
    drain: datetime | None,
    dereg: datetime | None,
) -> Lifecycle:
    """The lifecycle rule of projections.workers over the newest time of each event kind."""
    if dereg is None and drain is None:  # never left: the common case, decided at once
        return "active"
    alive = max((t for t in (registered, pinged) if t), default=None)
    if dereg is not None and (alive is None or dereg >= alive):
        return "deregistered"
    if (
        drain is not None
        and (registered is None or drain >= registered)
        and (dereg is None or drain > dereg)
    ):
        return "draining"
    return "active"


def moved(
    tracker: UptimeTracker, before: Lifecycle, after: Lifecycle, t: float, *, restarted: bool
) -> UptimeTracker:
    """The tracker after an event at `t` that takes the worker from `before` to `after`.

    `restarted`: the event shows a new process (a registration, a ping of a new boot), which
    decides a provisional pause (a fleet silence) against the worker.
    """
    held = tracker.provisional
    if held is not None:  # the first word after a fleet silence: did it live through it?
        grace = max(RECONNECT_GRACE_S, 2 * tracker.interval)
        tracker = tracker.cancel() if restarted else tracker.resume(min(held + grace, t))
    if before == "active" and after != "active":
        return tracker.pause(t)
    if before != "active" and after == "active":
        return tracker.resume(t)
    return tracker


class _View(Protocol):
    """What `on_event` reads of a projections.workers.WorkerView."""

    @property
    def uptime(self) -> UptimeTracker | None: ...
    @property
    def lifecycle(self) -> Lifecycle: ...
    @property
    def registered_at(self) -> datetime | None: ...
    @property
    def last_ping_at(self) -> datetime | None: ...
    @property
    def draining_at(self) -> datetime | None: ...
    @property
    def deregistered_at(self) -> datetime | None: ...


def on_event(view: _View, changes: dict[str, Any], t: float, *, restarted: bool) -> None:
    """Add the moved tracker to `changes`, the reducer's changes for a registration or a leave
    at event time `t` (`restarted`: a registration)."""
    if view.uptime is None:
        return
    after = lifecycle_of(
        changes.get("registered_at", view.registered_at),
        view.last_ping_at,
        changes.get("draining_at", view.draining_at),
        changes.get("deregistered_at", view.deregistered_at),
    )
    tracker = moved(view.uptime, view.lifecycle, after, t, restarted=restarted)
    if tracker is not view.uptime:
        changes["uptime"] = tracker
