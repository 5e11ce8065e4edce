"""The worker read model: a pure reducer from WORKERS events to one `WorkerView` per worker.

``apply(view, envelope, policy, windows) -> view`` folds one event; ``refresh(view, now, ...)``
re-judges the tier at a later log time (uptime decays while a worker is silent, and a silent
worker produces no events). Both are pure: the same calls in the same order give equal views,
which is what makes replays byte-identical. Nothing here reads a clock; ``now`` is always an
input: for the reducer and `refresh`, the projection's log clock (the latest event time it has
seen) or an event's own time; for `availability` and `is_live`, whatever the reader judges at
(log time in a replay, the wall clock in the gateway and ``jetgrid pools``).

Rules:

- **Duplicates.** A duplicate changes nothing: `apply` returns the very view it was given. A
  ping is a duplicate if its ``(boot_id, n)`` was seen: per boot the last 256 counters are kept
  as bits, and a ping 256 or more counters behind its boot's newest is dropped as a duplicate or
  hopelessly late (the uptime tracker would ignore it anyway). Any event is a duplicate if its
  envelope id is among the worker's last 32; older duplicates of boot-less pings and lifecycle
  events are stopped before they reach a reducer (JetStream drops re-published messages with the
  same ``Nats-Msg-Id`` within its duplicate window, and the store's checkpoint skips
  redeliveries). Pings are idempotent for uptime anyway (a slot is healthy once), and lifecycle
  is a function of maxima, so only counters are at stake.
- **Out of order.** A ping older than the last one seen counts into its slot (if within the
  tracker's exact horizon) and into the counters, but does not become `last_ping` or move the
  slot grid. A registration older than the latest one does not overwrite its details.
- **Lifecycle** (active / draining / deregistered) is a function of the newest registration,
  ping, draining and deregistration times, so it does not depend on arrival order:
  deregistered if the newest deregistration is at or after the newest registration and ping;
  else draining if the newest draining is at or after the newest registration and after the
  newest deregistration (a draining worker still pings); else active.
- **Unknown worker.** An event from a worker never seen registering creates its view with
  ``registered=False``; pools, models and interval come from its pings until a registration
  arrives. It is judged like any worker (its pings are facts), and it shows as unregistered so
  an operator can see a worker whose registration was lost or rejected.
- **Back from deregistration.** A ping newer than a deregistration makes the worker active
  again: it is evidently alive.
- **Absences** (planned ones, and a silence of the whole fleet) pause the uptime tracker instead
  of counting as missed slots: the rules are in projections.absence.
- **Interval change.** Pings that change ``interval_s`` start a new uptime tracker, so the
  worker is back on probation (slots of different lengths cannot be compared).
- **Availability** at time ``now`` (`availability`; the one rule every reader uses: projector,
  gateway, ``jetgrid pools``): ``offline`` after a deregistration; otherwise by the age of the
  last event seen from the worker, in heartbeat intervals: ``online`` up to 2 (one late or lost
  ping is not news), ``stale`` up to 5, ``offline`` beyond. Five intervals (25 s at the default
  5 s) is just inside the default AckWait of 30 s, so a worker is called offline about when
  JetStream starts redelivering its jobs. A draining worker is ``draining`` while it is still
  heard from (up to 5 intervals), then ``offline``. A replay judges at log time; live listings
  judge at the wall clock, so a fleet that went silent turns offline even when the log is quiet.
- **Live** (`is_live`): ``online`` or ``stale``: heard from within 5 intervals and neither
  draining nor deregistered. Live workers are the ones whose models are listed and who count as
  warm or cold capacity; ``stale`` is a warning for an operator, not yet a removal.
- **Last ping.** `last_ping` keeps what the newest ping said, including whether the backend is
  `accepting` jobs and the names of the models it reports loaded and available (empty for
  backends without models, such as echo).
- **Tier.** Judged from the uptime over ``windows.tier_window`` (default 1 h) and the number of
  complete slots since the first ping (probation, see coordinator.tiers), at the view's
  ``as_of``: the newest of the event times applied and the refresh times that changed the tier.
  `tier_history` keeps the last 256 changes as ``(from_time, tier)``; the audit, which replays
  the log, sees them all.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from jetgrid.coordinator.tiers import DEFAULT_POLICY, PROBATION, TierPolicy
from jetgrid.events.codec import Envelope
from jetgrid.events.errors import ConfigError
from jetgrid.events.records import record
from jetgrid.events.workers import (
    GpuTelemetry,
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
)
from jetgrid.projections import absence
from jetgrid.projections.absence import Lifecycle, lifecycle_of
from jetgrid.projections.uptime import DEFAULT_WINDOWS, UptimeTracker, UptimeWindows

__all__ = [
    "DEFAULT_INTERVAL_S",
    "LIVE",
    "ONLINE_INTERVALS",
    "STALE_INTERVALS",
    "Availability",
    "LastPing",
    "WorkerView",
    "apply",
    "apply_all",
    "availability",
    "clock_ticks",
    "is_live",
    "refresh",
    "silence",
    "worker_id_of",
]

Availability = Literal["online", "stale", "offline", "draining"]

LIVE: frozenset[Availability] = frozenset({"online", "stale"})

ONLINE_INTERVALS = 2.0
STALE_INTERVALS = 5.0
DEFAULT_INTERVAL_S = 5.0  # for a worker heard from only by a lifecycle event
RECENT_KEYS = 32
SEEN_PINGS = 256
TIER_HISTORY = 256
_WORKER_EVENTS = (WorkerRegistered, WorkerHeartbeat, WorkerDraining, WorkerDeregistered)


@record
class LastPing:
    """The newest ping seen from a worker, as it reported itself."""

    time: datetime
    n: int
    healthy: bool
    interval_s: float
    in_flight: int
    completed: int = 0
    failed: int = 0
    accepting: bool = True
    nvml: bool = False
    nvml_error: str | None = None
    gpus: tuple[GpuTelemetry, ...] = ()
    tier_factor: float | None = None
    boot_id: str | None = None
    models_loaded: tuple[str, ...] = ()  # names; stored only when non-empty (see _ping_dict)
    models_available: tuple[str, ...] = ()

    @classmethod
    def of(cls, ev: WorkerHeartbeat, t: datetime) -> LastPing:
        """The ping `ev`, at event time `t`."""
        return cls(
            t, ev.n, ev.healthy, ev.interval_s, ev.in_flight, ev.completed, ev.failed,
            ev.accepting, ev.nvml, ev.nvml_error, tuple(ev.gpus), ev.tier_factor, ev.boot_id,
            tuple(m.name for m in ev.models_loaded) if ev.models_loaded else (),
            tuple(m.name for m in ev.models_available) if ev.models_available else (),
        )  # fmt: skip

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def gpus_unresponsive(self) -> int:
        return sum(1 for g in self.gpus if not g.responsive)


@record
class WorkerView:
    """Everything the log says about one worker, as of `as_of` (a log time)."""

    worker_id: str
    first_seen: datetime
    last_seen: datetime
    as_of: datetime
    registered: bool = False
    registered_at: datetime | None = None
    registrations: int = 0
    pools: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    backend: str | None = None
    concurrency: int | None = None
    hostname: str | None = None
    jetgrid_version: str | None = None
    boot_id: str | None = None
    heartbeat_interval_s: float | None = None
    draining_at: datetime | None = None
    drain_reason: str | None = None
    deregistered_at: datetime | None = None
    deregister_reason: str | None = None
    last_ping: LastPing | None = None
    pings: int = 0
    healthy_pings: int = 0
    late_pings: int = 0
    uptime: UptimeTracker | None = None
    tier: str = PROBATION
    tier_since: datetime | None = None
    tier_history: tuple[tuple[datetime, str], ...] = ()
    recent: tuple[str, ...] = ()
    seen_boot: str | None = None
    seen_n: int = 0
    seen_mask: int = 0
    reanchor: bool = False

    @property
    def lifecycle(self) -> Lifecycle:
        """active, draining or deregistered: a function of the newest time of each event kind."""
        return lifecycle_of(
            self.registered_at, self.last_ping_at, self.draining_at, self.deregistered_at
        )

    @property
    def reason(self) -> str | None:
        """Why it is draining or left, as it said."""
        state = self.lifecycle
        if state == "deregistered":
            return self.deregister_reason
        return self.drain_reason if state == "draining" else None

    @property
    def last_ping_at(self) -> datetime | None:
        return None if self.last_ping is None else self.last_ping.time

    @property
    def interval_s(self) -> float:
        """The heartbeat interval availability is judged by."""
        if self.last_ping is not None:
            return self.last_ping.interval_s
        return self.heartbeat_interval_s or DEFAULT_INTERVAL_S


_VIEW_FIELDS = tuple(f.name for f in fields(WorkerView))
_ALL_FIELDS = operator.attrgetter(*_VIEW_FIELDS)
_FIELD_INDEX = {name: i for i, name in enumerate(_VIEW_FIELDS)}


def _ts(t: datetime) -> float:
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def worker_id_of(env: Envelope) -> str | None:
    """The worker an envelope is about, or None if it is not a worker event."""
    ev = env.event
    return ev.worker_id if isinstance(ev, _WORKER_EVENTS) else None


def _seen(state: WorkerView, ev: WorkerHeartbeat, t: datetime) -> dict[str, Any] | None:
    """The ping-counter window after this ping, or None if it is a duplicate (or too late).

    Per boot, the last SEEN_PINGS counters are kept as bits below the highest one seen.
    """
    if not ev.boot_id:
        return {}
    if state.seen_boot == ev.boot_id:
        d = ev.n - state.seen_n
        if d > 0:
            mask = ((state.seen_mask << d) | 1) & ((1 << SEEN_PINGS) - 1)
            return {"seen_n": ev.n, "seen_mask": mask}
        bit = 1 << -d
        if -d >= SEEN_PINGS or state.seen_mask & bit:
            return None
        return {"seen_mask": state.seen_mask | bit}
    if state.last_ping is None or t >= state.last_ping.time:
        return {"seen_boot": ev.boot_id, "seen_n": ev.n, "seen_mask": 1}
    return {}  # a late ping from an earlier boot: only its envelope id can tell a duplicate


# -- the reducer --------------------------------------------------------------------------------
def apply(
    state: WorkerView | None,
    env: Envelope,
    policy: TierPolicy = DEFAULT_POLICY,
    windows: UptimeWindows = DEFAULT_WINDOWS,
) -> WorkerView:
    """The view after one WORKERS event (the same view object if the event is a duplicate)."""
    ev = env.event
    if not isinstance(ev, _WORKER_EVENTS):
        raise TypeError(f"The worker reducer takes worker events, not {env.type!r}.")
    t = env.time
    if state is None:
        state = WorkerView(worker_id=ev.worker_id, first_seen=t, last_seen=t, as_of=t)
    elif state.worker_id != ev.worker_id:
        raise ValueError(f"Event for worker {ev.worker_id!r} applied to {state.worker_id!r}.")
    if env.id in state.recent:
        return state
    # Each helper returns the fields it changes; the view is rebuilt once per event (rebuilding
    # a frozen dataclass is most of a ping's cost, and 5,000 workers ping every second).
    if isinstance(ev, WorkerHeartbeat):
        seen = _seen(state, ev, t)
        if seen is None:
            return state
        changes = _ping(state, ev, t, windows)
        changes.update(seen)
    elif isinstance(ev, WorkerRegistered):
        changes = _registered(state, ev, t)
        absence.on_event(state, changes, _ts(t), restarted=True)
    else:
        changes = _left(state, ev, t)
        absence.on_event(state, changes, _ts(t), restarted=False)
    changes["recent"] = (*state.recent[1 - RECENT_KEYS :], env.id)
    if t < state.first_seen:
        changes["first_seen"] = t
    if t > state.last_seen:
        changes["last_seen"] = t
    as_of = changes["as_of"] = max(state.as_of, t)
    tracker = changes.get("uptime", state.uptime)
    changes.update(_judged(state, tracker, as_of, policy, windows))
    return _replace(state, changes)


def _replace(view: WorkerView, changes: dict[str, Any]) -> WorkerView:
    # dataclasses.replace, minus its checks and keyword plumbing: a third of a ping's cost.
    # attrgetter reads all 33 fields in one C call; only the ~10 changed ones are patched.
    values = list(_ALL_FIELDS(view))
    for name, value in changes.items():
        values[_FIELD_INDEX[name]] = value
    return WorkerView(*values)


def _left(
    state: WorkerView, ev: WorkerDraining | WorkerDeregistered, t: datetime
) -> dict[str, Any]:
    # Keep the newest of each kind; `WorkerView.lifecycle` is a function of these maxima, so
    # the outcome does not depend on the order events arrive in.
    if isinstance(ev, WorkerDraining):
        if state.draining_at is None or t >= state.draining_at:
            return {"draining_at": t, "drain_reason": ev.reason}
    elif state.deregistered_at is None or t >= state.deregistered_at:
        return {"deregistered_at": t, "deregister_reason": ev.reason}
    return {}


def _registered(state: WorkerView, ev: WorkerRegistered, t: datetime) -> dict[str, Any]:
    changes: dict[str, Any] = {"registered": True, "registrations": state.registrations + 1}
    if state.registered_at is None or t >= state.registered_at:
        changes.update(
            registered_at=t,
            pools=tuple(ev.pools),
            models=tuple(ev.models),
            backend=ev.backend,
            concurrency=ev.concurrency,
            hostname=ev.hostname,
            jetgrid_version=ev.jetgrid_version,
            boot_id=ev.boot_id or state.boot_id,
            heartbeat_interval_s=ev.heartbeat_interval_s,
        )
        if state.last_ping is None or t >= state.last_ping.time:
            changes["reanchor"] = True  # a restart: the next ping sets the new phase
    return changes


def _ping(
    state: WorkerView, ev: WorkerHeartbeat, t: datetime, windows: UptimeWindows
) -> dict[str, Any]:
    last = state.last_ping
    late = last is not None and t < last.time
    changes: dict[str, Any] = {
        "pings": state.pings + 1,
        "healthy_pings": state.healthy_pings + int(ev.healthy),
    }
    tracker = state.uptime
    if tracker is not None and tracker.windows_s != windows.windows_s:
        raise ConfigError(
            f"Worker {state.worker_id!r} was tracked over uptime windows {tracker.windows_s!r} "
            f"but the configured windows are {windows.windows_s!r}; replay the log to rebuild."
        )
    at = _ts(t)
    if late:
        changes["late_pings"] = state.late_pings + 1
        if tracker is not None and tracker.interval == ev.interval_s:
            changes["uptime"] = tracker.ping(at, ev.healthy)
        return changes
    new_boot = last is not None and ev.boot_id is not None and ev.boot_id != last.boot_id
    after = lifecycle_of(state.registered_at, t, state.draining_at, state.deregistered_at)
    if tracker is None or tracker.interval != ev.interval_s:
        tracker = UptimeTracker.start(ev.interval_s, windows)
    else:
        restarted = new_boot or state.reanchor
        tracker = absence.moved(tracker, state.lifecycle, after, at, restarted=restarted)
    if after == "active":  # pings while away count neither for nor against (absence)
        tracker = tracker.ping(at, ev.healthy, reanchor=state.reanchor or new_boot)
    changes["uptime"] = tracker
    if state.reanchor:
        changes["reanchor"] = False
    changes["last_ping"] = LastPing.of(ev, t)
    if ev.boot_id and ev.boot_id != state.boot_id:
        changes["boot_id"] = ev.boot_id
    if not state.registered:
        changes["heartbeat_interval_s"] = ev.interval_s
        if ev.pools:
            changes["pools"] = tuple(ev.pools)
        if ev.models:
            changes["models"] = tuple(ev.models)
    return changes


def _judged(
    view: WorkerView,
    tracker: UptimeTracker | None,
    now: datetime,
    policy: TierPolicy,
    windows: UptimeWindows,
) -> dict[str, Any]:
    """The tier fields after judging `tracker` at log time `now`: {} if the tier holds."""
    if tracker is None:
        tier = policy.tier_for(None, 0)
    else:
        at = _ts(now)
        w = tracker.window(at, windows.tier_window)
        tier = policy.tier_for(w.uptime, tracker.observed_slots(at), current=view.tier)
    if tier.name == view.tier and view.tier_since is not None:
        return {}
    return {
        "tier": tier.name,
        "tier_since": now,
        "tier_history": (*view.tier_history, (now, tier.name))[-TIER_HISTORY:],
    }


def refresh(
    view: WorkerView,
    now: datetime,
    policy: TierPolicy = DEFAULT_POLICY,
    windows: UptimeWindows = DEFAULT_WINDOWS,
) -> WorkerView:
    """Re-judge the tier at log time `now` (>= as_of); the same view if the tier holds.

    Call it at deterministic log times (see clock_ticks), never at batch boundaries, or a live
    projector and a replay would record tier changes at different times.
    """
    if now <= view.as_of:
        return view
    changes = _judged(view, view.uptime, now, policy, windows)
    return _replace(view, {**changes, "as_of": now}) if changes else view


def silence(view: WorkerView, since: datetime, until: datetime) -> WorkerView:
    """The view after the WORKERS log was silent from `since` to `until` (projections.absence)."""
    tracker, interval = view.uptime, view.interval_s
    if (
        tracker is None
        or view.lifecycle != "active"
        or (until - since).total_seconds() <= ONLINE_INTERVALS * interval  # a late ping at most
        or (since - view.last_seen).total_seconds() > STALE_INTERVALS * interval  # gone before
    ):
        return view
    paused = tracker.pause(_ts(since), until=_ts(until))
    return view if paused is tracker else _replace(view, {"uptime": paused})


def clock_ticks(prev: datetime | None, now: datetime, step_s: float) -> list[datetime]:
    """Log times in (prev, now] that are whole multiples of `step_s` since the epoch.

    The projector's use: before applying an event whose time moves the log clock from `prev`
    to `now`, refresh every view at each of these ticks, in order. Live and replay then judge
    at the same log times, whatever the batch boundaries.
    """
    if prev is None or now <= prev:
        return []
    first = int(_ts(prev) // step_s) + 1
    last = int(_ts(now) // step_s)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return [epoch + timedelta(seconds=k * step_s) for k in range(first, last + 1)]


def apply_all(
    views: Mapping[str, WorkerView],
    envs: Iterable[Envelope],
    policy: TierPolicy = DEFAULT_POLICY,
    windows: UptimeWindows = DEFAULT_WINDOWS,
) -> dict[str, WorkerView]:
    """Fold many envelopes into a copy of `views`, skipping non-worker events."""
    out = dict(views)
    for env in envs:
        wid = worker_id_of(env)
        if wid is not None:
            out[wid] = apply(out.get(wid), env, policy, windows)
    return out


# -- reading ------------------------------------------------------------------------------------
def availability(
    view: WorkerView,
    now: datetime,
    *,
    online_intervals: float = ONLINE_INTERVALS,
    stale_intervals: float = STALE_INTERVALS,
) -> Availability:
    """online / stale / offline / draining at `now` (rules in the module docstring)."""
    if view.lifecycle == "deregistered":
        return "offline"
    age = (now - view.last_seen).total_seconds()
    interval = view.interval_s
    if age > stale_intervals * interval:
        return "offline"
    if view.lifecycle == "draining":
        return "draining"
    return "online" if age <= online_intervals * interval else "stale"


def is_live(view: WorkerView, now: datetime) -> bool:
    """Whether the worker is online or stale at `now` (rules in the module docstring)."""
    return availability(view, now) in LIVE
