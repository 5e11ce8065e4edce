"""GET /metrics in the Prometheus text format.

Job counters and the two histograms are counted from the events this gateway folds since it
started (the board follows the log from its end: gateway.board), not from the requests it
served: gateways that ran over the same period count the same fleet-wide facts, and a restarted
gateway starts its counters at zero, as Prometheus counters do (use rate() or increase()).
Counters are taken when a fact is known together with the job's pool and model, each fact once
per job. Queue depth and workers are gauges refreshed at scrape time
from JetStream consumer info (one series per pool consumer, priorities apart), the unserved
jobs per pool and model (projections.pools.pool_status's `unserved`, as /v1/pools shows them),
the live queue per pool, model and tenant (gateway.queue_api, as /v1/queue shows it), and the
workers: the projector's views (tiers included) when its database is readable, else the
gateway's own fleet fold (gateway.fleet), whose `tier` is "none". Both judge availability by
the one rule, projections.workers.availability, at the wall clock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jetgrid.coordinator.backlog import (
    merge_priorities,
    read_consumer_backlogs,
    read_stored_submissions,
)
from jetgrid.events import TERMINAL_NAMES, JetgridError
from jetgrid.gateway.queue_api import QueueGauges
from jetgrid.projections.jobs import JobView
from jetgrid.projections.pools import pool_status

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_FACTS = ("submitted", "started", *sorted(TERMINAL_NAMES))
COUNTED = 100_000  # jobs whose counted facts are remembered (a duplicate comes soon after)
_BIT = {name: 1 << i for i, name in enumerate(_FACTS)}


def facts(view: JobView) -> list[str]:
    """The countable facts a job view holds (pure; see the module docstring)."""
    out = []
    if view.jobs_seq is not None:
        out.append("submitted")
    if view.started_at is not None:
        out.append("started")
    if view.status in TERMINAL_NAMES:
        out.append(view.status)
    return out


class Metrics:
    """The gateway's registry and the observer that counts folded job events (in plain
    numbers, added to the registry's series when /metrics is read: `flush`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = {
            name: Counter(
                f"jetgrid_jobs_{name}",
                f"Jobs {name}, counted from the log since the gateway started, by pool and model.",
                ["pool", "model"],
                registry=r,
            )
            for name in _FACTS
        }
        self.queue_wait = Histogram(
            "jetgrid_job_queue_seconds",
            "Submit-to-start time (event times), by pool and model.",
            ["pool", "model"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.run_time = Histogram(
            "jetgrid_job_run_seconds",
            "Start-to-finish time of finished jobs (event times), by pool and model.",
            ["pool", "model"],
            buckets=_BUCKETS,
            registry=r,
        )
        labels = ["pool", "model", "consumer"]
        self.backlog = Gauge(
            "jetgrid_queue_depth",
            "Jobs waiting in a pool consumer (num_pending).",
            labels,
            registry=r,
        )
        self.ack_pending = Gauge(
            "jetgrid_queue_ack_pending",
            "Jobs delivered and not yet acked, per pool consumer.",
            labels,
            registry=r,
        )
        self.waiting = Gauge(
            "jetgrid_queue_waiting_pulls",
            "Pull requests waiting on a pool consumer (idle worker slots).",
            labels,
            registry=r,
        )
        self.unserved = Gauge(
            "jetgrid_queue_unserved",
            "Jobs waiting for a pool and model that no live worker serves (as in /v1/pools).",
            ["pool", "model"],
            registry=r,
        )
        self.workers = Gauge(
            "jetgrid_workers",
            "Workers by availability and tier.",
            ["availability", "tier"],
            registry=r,
        )
        self._counted: OrderedDict[str, int] = OrderedDict()  # the last COUNTED jobs' facts
        # The labelled children by (series, pool, model): `labels()` costs more than the count.
        self._children: dict[tuple[str, str, str], Any] = {}
        # What the fold counted since the last scrape, by child: a counter's increments, a
        # histogram's [per-bucket counts..., sum]. Added to the series when /metrics is read
        # (`flush`): a plain addition per event instead of a locked one per count and bucket.
        self._counts: dict[Any, int] = {}
        self._observed: dict[Any, list[float]] = {}
        self.queue = QueueGauges(r)  # per pool, model and tenant (gateway.queue_api)

    def observe(self, before: JobView | None, view: JobView) -> None:
        if view.pool is None or view.model is None:
            return  # counted once the submission is folded
        done = self._counted.get(view.job_id, 0)
        labels = (view.pool, view.model)
        for fact in facts(view):
            bit = _BIT[fact]
            if done & bit:
                continue
            done |= bit
            child = self._child(fact, labels)
            self._counts[child] = self._counts.get(child, 0) + 1
            if fact == "started" and view.submitted_at and view.started_at:
                wait = (view.started_at - view.submitted_at).total_seconds()
                self._observe(self._child("queue_wait", labels), max(0.0, wait))
            elif fact != "submitted" and fact != "started" and view.started_at and view.finished_at:
                ran = (view.finished_at - view.started_at).total_seconds()
                self._observe(self._child("run_time", labels), max(0.0, ran))
        self._counted[view.job_id] = done
        self._counted.move_to_end(view.job_id)
        while len(self._counted) > COUNTED:
            self._counted.popitem(last=False)

    def _observe(self, child: Any, value: float) -> None:
        """Count `value` in the histogram `child`'s bucket (the first bound >= it, as
        prometheus_client does; +Inf past the last) and sum, until the next `flush`."""
        acc = self._observed.get(child)
        if acc is None:
            acc = self._observed[child] = [0.0] * (len(_BUCKETS) + 2)
        acc[bisect_left(_BUCKETS, value)] += 1
        acc[-1] += value

    def flush(self) -> None:
        """Add what the fold counted since the last flush to the registry's series."""
        counts, observed = self._counts, self._observed
        self._counts, self._observed = {}, {}
        for child, n in counts.items():
            child.inc(n)
        for child, acc in observed.items():
            # prometheus_client keeps a histogram child's buckets uncumulated, one value each.
            for bucket, hits in zip(child._buckets, acc[:-1], strict=True):
                if hits:
                    bucket.inc(hits)
            child._sum.inc(acc[-1])

    def _child(self, series: str, labels: tuple[str, str]) -> Any:
        """The child of a job fact's counter (or of "queue_wait" / "run_time") for (pool,
        model), looked up once per series and labels."""
        key = (series, labels[0], labels[1])
        child = self._children.get(key)
        if child is None:
            parent: Any = {"queue_wait": self.queue_wait, "run_time": self.run_time}.get(series)
            child = (parent or self.jobs[series]).labels(*labels)
            self._children[key] = child
        return child

    async def refresh(self, gw: Gateway, workers: list[dict[str, Any]] | None = None) -> None:
        """Set the gauges from consumer info and the workers: the projector's views (with
        tiers) when given, else this gateway's own fleet fold (tier "none"), and add the
        fold's counts (`flush`)."""
        self.flush()
        self.backlog.clear()
        self.ack_pending.clear()
        self.waiting.clear()
        self.unserved.clear()
        try:
            backlogs = await read_consumer_backlogs(gw.bus, gw.settings, oldest_job=False)
            stored = await read_stored_submissions(gw.bus, gw.settings)
        except JetgridError:
            backlogs, stored = [], {}  # NATS unreachable: no queue series, not a failed scrape
        rows = pool_status(
            gw.pools, merge_priorities(backlogs), gw.fleet.views.values(), gw.fleet.clock(), stored
        )
        for row in rows:
            self.unserved.labels(row.pool, row.model).set(row.unserved)
        for b in backlogs:
            labels = (b.pool, b.model, b.consumer)
            self.backlog.labels(*labels).set(b.pending)
            self.ack_pending.labels(*labels).set(b.running)
            self.waiting.labels(*labels).set(b.waiting_pulls)
        self.queue.set(gw.queue.figures(gw.clock()))
        self.workers.clear()
        counts: dict[tuple[str, str], int] = {}
        if workers is None:
            workers = gw.fleet.workers()
        for w in workers:
            key = (w["availability"], w["tier"] or "none")
            counts[key] = counts.get(key, 0) + 1
        for (availability, tier), n in counts.items():
            self.workers.labels(availability, tier).set(n)


async def metrics(request: Request) -> Response:
    from jetgrid.gateway.workers_api import projected_workers

    gw: Gateway = request.app.state.gateway
    await gw.metrics.refresh(gw, await projected_workers(request))
    return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics, methods=["GET"])]
