"""GET /v1/queue: the live queue per pool, model and tenant; and the gateway's expiry sweep.

The figures are projections.queue.QueueIndex's over the jobs this gateway's board follows (fed
by the board's fold: what is live, not history): per (pool, model) ``queued``, ``running``,
``oldest_wait_s``, ``wait_p50_s``, ``wait_p95_s`` and ``drain_per_s`` over the last
``window_s`` seconds, and the same per tenant (the job's submitter) with its ``share`` of the
running jobs. A queued job's own view (``GET /v1/jobs/{id}``) carries its ``position`` and
``eta_s``. A key scoped to some pools or models sees only those rows.

`check_load` is the gateway's part in shedding (coordinator.shedding): a submit to a pool and
model over the pool's ``max_backlog`` or ``max_wait_s``, on these figures, is answered 429 with
``Retry-After`` in the caller's API's error shape, before anything is stored.

`Expiry` is the gateway's part in deadlines (coordinator.deadlines): about once a second it
publishes `expired` for every job it follows that is still queued past its deadline and the
sweep's grace, under the terminal id, so gateways that sweep together publish one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.deadlines import expired_event
from jetgrid.coordinator.shedding import refuse
from jetgrid.events import JetgridError
from jetgrid.events.addressing import Speaker
from jetgrid.gateway import auth
from jetgrid.gateway.errors import HTTPError
from jetgrid.projections.queue import QueueIndex

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway

log = logging.getLogger("jetgrid.gateway.queue")

SWEEP_EVERY_S = 1.0


async def get_queue(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    rows = [
        r
        for r in gw.queue.figures(gw.clock())
        if auth.may_see(request, pool=r["pool"], model=r["model"])
    ]
    return JSONResponse({"window_s": gw.queue.window_s, "queues": rows})


def check_load(gw: Gateway, pool: str, model: str) -> None:
    """429 with Retry-After when (`pool`, `model`) is over the pool's max_backlog or
    max_wait_s (coordinator.shedding), judged on the queue this gateway follows."""
    cfg = gw.pools.get(pool)
    if cfg is None or (cfg.max_backlog is None and cfg.max_wait_s is None):
        return
    now = gw.clock()
    queued, oldest = gw.queue.backlog(pool, model, now, oldest=cfg.max_wait_s is not None)
    refusal = refuse(cfg, model, queued, oldest, gw.queue.drain(pool, model, now))
    if refusal is not None:
        raise HTTPError(
            429,
            refusal.reason,
            field="model",
            code="pool_over_limit",
            headers={"Retry-After": str(refusal.retry_after_s)},
        )


class QueueGauges:
    """The /v1/queue figures in /metrics, one series per (pool, model, tenant)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["pool", "model", "tenant"]
        self.jobs = Gauge(
            "jetgrid_queue_jobs",
            "Live jobs per pool, model and tenant, by state (queued, running), as in /v1/queue.",
            [*labels, "state"],
            registry=registry,
        )
        self.wait = Gauge(
            "jetgrid_queue_wait_seconds",
            "Queue waits per pool, model and tenant: the oldest queued job's (stat=oldest) and "
            "the p50/p95 of the jobs started in the window (stat=p50, p95), as in /v1/queue.",
            [*labels, "stat"],
            registry=registry,
        )
        self.drain = Gauge(
            "jetgrid_queue_drain_per_second",
            "Jobs started per second over the window, per pool, model and tenant.",
            labels,
            registry=registry,
        )

    def set(self, rows: list[dict[str, Any]]) -> None:
        for gauge in (self.jobs, self.wait, self.drain):
            gauge.clear()
        for row in rows:
            for t in row["tenants"]:
                key = (row["pool"], row["model"], t["tenant"])
                self.jobs.labels(*key, "queued").set(t["queued"])
                self.jobs.labels(*key, "running").set(t["running"])
                for stat, field in (("oldest", "oldest_wait_s"), ("p50", "wait_p50_s"),
                                    ("p95", "wait_p95_s")):  # fmt: skip
                    if t[field] is not None:
                        self.wait.labels(*key, stat).set(t[field])
                self.drain.labels(*key).set(t["drain_per_s"])


class Expiry:
    """Publishes `expired` for followed jobs still queued past their deadline (module doc)."""

    def __init__(
        self, bus: Bus, speaker: Speaker, queue: QueueIndex, clock: Callable[[], datetime]
    ) -> None:
        self.bus = bus
        self.speaker = speaker
        self.queue = queue
        self.clock = clock
        self.sent: set[str] = set()  # published, not yet folded back as ended
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """Publish `expired` for each overdue job at the clock's now; how many were published."""
        now = self.clock()
        overdue = self.queue.overdue(now)
        self.sent &= {v.job_id for v in overdue}
        n = 0
        for view in overdue:
            if view.job_id in self.sent or view.deadline is None:
                continue
            try:
                await self.bus.store(
                    expired_event(view.job_id, view.deadline, now, jobs_seq=view.jobs_seq),
                    self.speaker,
                )
            except JetgridError as exc:  # the next sweep tries again
                log.info("could not publish expired for job %s: %s", view.job_id, exc)
                continue
            self.sent.add(view.job_id)
            n += 1
        return n

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            try:
                await self.sweep()
            except Exception:  # a bug in one sweep must not stop the next
                log.exception("expiry sweep failed")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="expiry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


routes = [Route("/v1/queue", get_queue, methods=["GET"])]
