"""The gateway's view of the fleet: the latest registration and ping per worker.

`FleetState` is a pure fold of WORKERS events (no I/O); `Fleet` follows the stream with an
ordered consumer and feeds it. A worker is *online* while its last heartbeat is within
`LIVE_INTERVALS` of its interval, measured against the newest event time seen on the stream
(so a replay gives the same answer at any wall-clock time); the live listing used by
/api/tags, /api/ps and /v1/models also drops workers whose last event is that stale by the
wall clock, so a fleet that went silent altogether does not advertise models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from jetgrid.events import (
    Envelope,
    InvalidEvent,
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
    decode,
    now,
)

log = logging.getLogger("jetgrid.gateway.fleet")

LIVE_INTERVALS = 3.0


@dataclass(frozen=True, slots=True)
class WorkerState:
    worker_id: str
    pools: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    backend: str | None = None
    concurrency: int = 1
    interval_s: float = 5.0
    registered_at: datetime | None = None
    last_ping: datetime | None = None
    last_event: datetime | None = None
    healthy: bool | None = None
    in_flight: int = 0
    completed: int = 0
    failed: int = 0
    nvml: bool = False
    gpus: tuple[dict[str, Any], ...] = ()
    tier_factor: float | None = None
    draining: bool = False
    gone: bool = False


@dataclass
class FleetState:
    """Workers by id, folded from WORKERS events in log order."""

    workers: dict[str, WorkerState] = field(default_factory=dict)
    newest: datetime | None = None

    def apply(self, env: Envelope) -> None:
        ev = env.event
        wid = getattr(ev, "worker_id", None)
        if wid is None:
            return
        w = self.workers.get(wid) or WorkerState(worker_id=wid)
        t = env.time
        self.newest = t if self.newest is None or t > self.newest else self.newest
        match ev:
            case WorkerRegistered():
                w = replace(
                    w,
                    pools=tuple(ev.pools),
                    models=tuple(ev.models),
                    backend=ev.backend,
                    concurrency=ev.concurrency,
                    interval_s=ev.heartbeat_interval_s,
                    registered_at=t,
                    draining=False,
                    gone=False,
                )
            case WorkerHeartbeat():
                w = replace(
                    w,
                    pools=tuple(ev.pools) or w.pools,
                    models=tuple(ev.models) or w.models,
                    interval_s=ev.interval_s,
                    last_ping=t,
                    healthy=ev.healthy,
                    in_flight=ev.in_flight,
                    completed=ev.completed,
                    failed=ev.failed,
                    nvml=ev.nvml,
                    gpus=tuple(g.model_dump(mode="json") for g in ev.gpus),
                    tier_factor=ev.tier_factor,
                    draining=w.draining or not ev.accepting,
                    gone=False,
                )
            case WorkerDraining():
                w = replace(w, draining=True)
            case WorkerDeregistered():
                w = replace(w, gone=True, draining=False)
        self.workers[wid] = replace(w, last_event=t)

    def availability(self, w: WorkerState, at: datetime | None = None) -> str:
        """online, stale, offline or draining, judged at `at` (default: the newest event)."""
        at = at or self.newest
        if w.gone:
            return "offline"
        seen = w.last_ping or w.registered_at
        if seen is None or at is None:
            return "offline"
        age = (at - seen).total_seconds()
        if age > 10 * LIVE_INTERVALS * w.interval_s:
            return "offline"
        if age > LIVE_INTERVALS * w.interval_s:
            return "stale"
        return "draining" if w.draining else "online"

    def live(self, wall: datetime) -> list[WorkerState]:
        """Online workers whose last event is also recent by the wall clock."""
        out = []
        for w in self.workers.values():
            if self.availability(w) != "online" or w.last_event is None:
                continue
            if wall - w.last_event > timedelta(seconds=LIVE_INTERVALS * w.interval_s):
                continue
            out.append(w)
        return out


def live_models(state: FleetState, wall: datetime) -> dict[str, set[str]]:
    """model -> pools served by live workers."""
    out: dict[str, set[str]] = {}
    for w in state.live(wall):
        for m in w.models:
            out.setdefault(m, set()).update(w.pools)
    return out


def worker_out(state: FleetState, w: WorkerState) -> dict[str, Any]:
    """A worker in the WorkerOut shape of /v1/workers (tier and uptime unknown here)."""
    return {
        "id": w.worker_id,
        "availability": state.availability(w),
        "pools": list(w.pools),
        "models": list(w.models),
        "backend": w.backend,
        "concurrency": w.concurrency,
        "in_flight": w.in_flight,
        "last_ping": w.last_ping.isoformat() if w.last_ping else None,
        "healthy": w.healthy,
        "nvml": w.nvml,
        "gpus": list(w.gpus),
        "tier": None,
        "tier_factor": w.tier_factor,
        "uptime": {"1h": None, "24h": None},
        "jobs": {"completed": w.completed, "failed": w.failed},
    }


class Fleet:
    """Follows WORKERS from the start with an ordered consumer."""

    def __init__(self, js: Any, settings: Any) -> None:
        self.js = js
        self.settings = settings
        self.state = FleetState()
        self._sub: Any = None

    async def start(self) -> None:
        from nats.js.api import DeliverPolicy

        self._sub = await self.js.subscribe(
            self.settings.subjects.worker_events(),
            stream=self.settings.streams.workers,
            cb=self._on_msg,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # connection already gone
                pass

    async def _on_msg(self, msg: Any) -> None:
        try:
            env = decode(msg.data).at(msg.metadata.sequence.stream, msg.subject)
        except InvalidEvent as exc:
            log.warning("undecodable worker event: %s", exc.reason)
            return
        self.state.apply(env)

    def live_models(self) -> dict[str, set[str]]:
        return live_models(self.state, now())

    def workers(self) -> list[dict[str, Any]]:
        return [worker_out(self.state, w) for w in self.state.workers.values()]
