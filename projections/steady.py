"""The worker reducer's common case, a steady ping, in one step. Pure.

Almost every WORKERS event is a ping from a registered, active worker of the boot it has been
pinging from, the next counter of that boot, on time: nothing changes but the counters, the
uptime tracker, the last ping, the dedupe keys and the times. `steady_ping` returns exactly the
view `projections.workers.apply` returns for such a ping (tests/projections/test_steady.py
compares the two over generated histories), without the reducer's general bookkeeping (the
lifecycle, absence and reboot rules, which leave such a ping alone), and None for any other
event, which then goes through `projections.workers.apply`. The tier is judged as the reducer
judges it, except that a tracker with fewer complete slots than the policy's probation is on
probation whatever its uptime (coordinator.tiers.TierPolicy.tier_for), so its uptime is not
computed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from jetgrid.coordinator.tiers import TierPolicy
from jetgrid.events.codec import Envelope
from jetgrid.events.workers import WorkerHeartbeat
from jetgrid.projections import workers as wr
from jetgrid.projections.uptime import UptimeTracker, UptimeWindows
from jetgrid.projections.workers import RECENT_KEYS, SEEN_PINGS, TIER_HISTORY, LastPing, WorkerView

__all__ = ["apply", "steady_ping"]

_MASK = (1 << SEEN_PINGS) - 1


def steady_ping(
    state: WorkerView | None, env: Envelope, policy: TierPolicy, windows: UptimeWindows
) -> WorkerView | None:
    """`projections.workers.apply(state, env, policy, windows)` if `env` is a steady ping
    (module docstring), else None."""
    ev = env.event
    if type(ev) is not WorkerHeartbeat or state is None:
        return None
    last, tracker, boot, t = state.last_ping, state.uptime, ev.boot_id, env.time
    if (
        last is None
        or tracker is None
        or not boot
        or boot != state.seen_boot
        or ev.n <= state.seen_n
        or t < last.time
        or boot != last.boot_id
        or boot != state.boot_id
        or state.reanchor
        or not state.registered
        or state.draining_at is not None
        or state.deregistered_at is not None
        or tracker.provisional is not None
        or tracker.interval != ev.interval_s
        or ev.worker_id != state.worker_id
        or not _same_windows(tracker, windows)
        or env.id in state.recent
    ):
        return None
    tracker = tracker.ping(_ts(t), ev.healthy)
    as_of = state.as_of if state.as_of >= t else t
    tier, tier_since, tier_history = _judged(state, tracker, as_of, policy, windows)
    return WorkerView(
        state.worker_id,
        t if t < state.first_seen else state.first_seen,
        t if t > state.last_seen else state.last_seen,
        as_of,
        state.registered,
        state.registered_at,
        state.registrations,
        state.pools,
        state.models,
        state.backend,
        state.concurrency,
        state.hostname,
        state.jetgrid_version,
        state.boot_id,
        state.heartbeat_interval_s,
        state.draining_at,
        state.drain_reason,
        state.deregistered_at,
        state.deregister_reason,
        LastPing.of(ev, t),
        state.pings + 1,
        state.healthy_pings + int(ev.healthy),
        state.late_pings,
        tracker,
        tier,
        tier_since,
        tier_history,
        (*state.recent[1 - RECENT_KEYS :], env.id),
        boot,
        ev.n,
        ((state.seen_mask << (ev.n - state.seen_n)) | 1) & _MASK,
        False,
    )


def _same_windows(tracker: UptimeTracker, windows: UptimeWindows) -> bool:
    """Whether the tracker counts over the configured windows (else the reducer refuses it)."""
    return tracker.windows_s == windows.windows_s


def _ts(t: datetime) -> float:
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def _judged(
    view: WorkerView,
    tracker: UptimeTracker,
    now: datetime,
    policy: TierPolicy,
    windows: UptimeWindows,
) -> tuple[str, datetime | None, tuple[tuple[datetime, str], ...]]:
    """The tier fields as projections.workers judges them at `now` (its _judged)."""
    at = _ts(now)
    observed = tracker.observed_slots(at)
    if observed < policy.probation_slots:
        name = policy.tier_for(None, observed).name  # probation, whatever the uptime
    else:
        w = tracker.window(at, windows.tier_window)
        name = policy.tier_for(w.uptime, observed, current=view.tier).name
    if name == view.tier and view.tier_since is not None:
        return view.tier, view.tier_since, view.tier_history
    return name, now, (*view.tier_history, (now, name))[-TIER_HISTORY:]


def apply(
    state: WorkerView | None, env: Envelope, policy: TierPolicy, windows: UptimeWindows
) -> WorkerView:
    """`projections.workers.apply`, through `steady_ping` when the event is a steady ping."""
    new = steady_ping(state, env, policy, windows)
    return wr.apply(state, env, policy, windows) if new is None else new
