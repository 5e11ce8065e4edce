"""The gateway's live fleet: every worker's view, folded from WORKERS as the projector folds it.

`Fleet` does not read WORKERS' history (mostly pings): at start it folds the newest message of
each worker subject (its last registration, ping, draining and deregistration, by one batched
direct get with a ``multi_last`` filter) stored before its last `RECENT` messages, then follows
WORKERS with an ordered consumer from the first of those. Availability and `served` need only
each worker's newest events, so its start time and memory depend on the number of workers, not
on how long the log is (a worker's `first_seen` and uptime are the projector's to
tell). It checks each message as the projector does (projections.fold.check_worker_message:
undecodable events, subjects that name another worker, event times far ahead of the stream's
are skipped) and folds the rest with the worker read model's reducer, projections.workers.apply,
under the configured tier policy and uptime windows (projections.fold.fold_config).

Availability is the read model's one rule (projections.workers.availability) judged at the wall
clock, so a worker, or a whole fleet, that went silent drops out of the listings although the
log is quiet; a worker is live while it is online or stale (projections.workers.is_live). The
pure parts (`live_workers`, `live_models`, `workers_out`) take the views and the time; only
`Fleet` reads the clock.

Used by /api/tags, /api/ps, /api/show, /v1/models and the drop-in APIs' model resolution (the
models live workers serve), GET /v1/pools (projections.pools.pool_status over these views),
/dashboard/workers, the metrics' worker gauge when no projector database is readable, and
POST /v1/jobs's unserved-model check (`Fleet.served`: projections.pools.served_within, after
`Fleet.sync` has folded WORKERS up to its end when the model looked unserved). Tiers
are the projector's to judge and publish (it re-judges silent workers at its log ticks; this
fold does not), so the WorkerOut here has ``tier`` None and the ``tier_factor`` the worker's
last ping reported, and its job counts are the worker's own ping counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from jetgrid.coordinator.settings import Settings
from jetgrid.events import now as wall_clock
from jetgrid.projections import workers as wr
from jetgrid.projections.fold import FoldConfig, check_worker_message, fold_config
from jetgrid.projections.pools import served_within
from jetgrid.projections.views import worker_out
from jetgrid.projections.workers import WorkerView

__all__ = ["Fleet", "live_models", "live_workers", "workers_out"]

log = logging.getLogger("jetgrid.gateway.fleet")

RECENT = 10_000  # WORKERS messages read whole at start; before them, each subject's newest
MAX_SUBJECTS = 100_000  # worker subjects read by their newest message at start


def live_workers(views: Iterable[WorkerView], now: datetime) -> list[WorkerView]:
    """The workers live at `now` (online or stale), in the order given."""
    return [v for v in views if wr.is_live(v, now)]


def live_models(views: Iterable[WorkerView], now: datetime) -> dict[str, set[str]]:
    """model -> the pools that live workers serve it in."""
    out: dict[str, set[str]] = {}
    for v in live_workers(views, now):
        for m in v.models:
            out.setdefault(m, set()).update(v.pools)
    return out


def workers_out(views: Iterable[WorkerView], now: datetime) -> list[dict[str, Any]]:
    """Each view as a WorkerOut at `now` (tier unknown here: see the module docstring)."""
    out = []
    for v in sorted(views, key=lambda v: v.worker_id):
        ping = v.last_ping
        counts = {} if ping is None else {"completed": ping.completed, "failed": ping.failed}
        factor = None if ping is None else ping.tier_factor
        out.append(worker_out(v, now, tier_factor=factor, jobs=counts))
    return out


class Fleet:
    """Each worker's newest events, then WORKERS followed from a recent window; `views` by
    worker id."""

    def __init__(
        self,
        bus: Any,
        settings: Settings,
        config: FoldConfig | None = None,
        *,
        clock: Callable[[], datetime] = wall_clock,
        recent: int = RECENT,
    ) -> None:
        self.recent = recent
        self.bus = bus
        self.js: Any = bus.js if bus is not None else None
        self.settings = settings
        self.config = config or fold_config(settings)
        self.clock = clock
        self.views: dict[str, WorkerView] = {}
        self.seq = 0  # the last WORKERS sequence folded
        self._syncs: list[tuple[int, asyncio.Future[None]]] = []
        self.invalid = 0  # messages skipped; the projector records them on the invalid stream
        self._sub: Any = None
        # (pool, model, window) -> (worker id, its view, until when that view alone makes
        # `served` true): every submission asks, and the answer holds while that view does.
        self._served: dict[tuple[str, str, float], tuple[str, WorkerView, datetime]] = {}

    async def start(self) -> None:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        stream, subjects = self.settings.streams.workers, self.settings.subjects.worker_events()
        start = max(1, await self.bus.last_seq(stream) + 1 - self.recent)
        if start > 1:
            newest = await self.bus.messages(
                stream, last_of=subjects, up_to_seq=start - 1, limit=MAX_SUBJECTS
            )
            for m in sorted(newest, key=lambda m: m.seq):
                if m.time is not None:
                    self.fold(m.subject, m.data, m.time)
        self.seq = start - 1
        self._sub = await self.js.subscribe(
            subjects,
            stream=stream,
            cb=self._on_msg,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
            ),
        )
        jsi = getattr(self._sub, "_jsi", None)
        if jsi is not None:  # a recreated consumer resumes here, not at sequence 1
            jsi._sseq = start - 1

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # connection already gone
                pass

    async def _on_msg(self, msg: Any) -> None:
        md = msg.metadata
        self.fold(msg.subject, msg.data, md.timestamp)
        self.seq = max(self.seq, md.sequence.stream)
        for target, fut in list(self._syncs):
            if self.seq >= target and not fut.done():
                fut.set_result(None)

    async def sync(self, limit_s: float = 5.0) -> None:
        """Wait (at most `limit_s`) until the fold has reached WORKERS' current end, so that a
        worker registered before this call is in `views` (read-your-writes)."""
        info = await self.js.stream_info(self.settings.streams.workers)
        target = info.state.last_seq
        if self.seq >= target:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (target, fut)
        self._syncs.append(entry)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, limit_s)
        finally:
            self._syncs.remove(entry)

    def served(self, pool: str, model: str, window_s: float) -> bool:
        """Whether a worker serves `model` in `pool`, live now or heard from within `window_s`
        (projections.pools.served_within at the wall clock). A yes is remembered with the
        worker whose last word falls within the window, and holds while that worker's view is
        the same and the window has not passed, so a submission does not scan the fleet."""
        now, key = self.clock(), (pool, model, window_s)
        hit = self._served.get(key)
        if hit is not None and self.views.get(hit[0]) is hit[1] and now < hit[2]:
            return True
        if not served_within(self.views.values(), pool, model, now, window_s):
            return False
        window = timedelta(seconds=window_s)
        best = max(
            (v for v in self.views.values() if pool in v.pools and model in v.models),
            key=lambda v: v.last_seen,
        )
        if best.last_seen + window > now:  # else live by its heartbeats alone: not remembered
            self._served[key] = (best.worker_id, best, best.last_seen + window)
        return True

    def fold(self, subject: str, data: bytes, stream_time: datetime) -> None:
        """Fold one WORKERS message (skipped and counted if the projector would reject it)."""
        cfg = self.config
        got = check_worker_message(
            self.settings.subjects, subject, data, stream_time, cfg.max_future_s
        )
        if isinstance(got, str):
            self.invalid += 1
            log.debug("skipping worker message on %s: %s", subject, got)
            return
        wid = wr.worker_id_of(got)
        if wid is None:  # check_worker_message lets only worker events through
            return
        self.views[wid] = wr.apply(self.views.get(wid), got, cfg.policy, cfg.windows)

    def live(self) -> list[WorkerView]:
        """The workers live now (wall clock)."""
        return live_workers(self.views.values(), self.clock())

    def live_models(self) -> dict[str, set[str]]:
        """model -> pools, served by workers live now (wall clock)."""
        return live_models(self.views.values(), self.clock())

    def workers(self) -> list[dict[str, Any]]:
        """Every worker as a WorkerOut, judged now (wall clock)."""
        return workers_out(self.views.values(), self.clock())
