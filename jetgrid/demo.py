"""The engine of `jetgrid demo`: simulated workers at chosen uptimes, a job stream, live stats.

`Fleet` runs in-process workers (worker.agent.Worker with ``simulate_uptime``), each with a
base pull rate, so their tier factors show as shares of the work; keeps the queue of the demo's
(pool, model) topped up to a backlog (a saturated queue, without piling up jobs nobody will run
after the demo); and folds the lifecycle events of its own jobs into per-worker statistics.
What it shows comes from the log (job events on NATS) and from the workers themselves (tier
factor in force, pings sent), never from a shortcut.

The rendering (rich) lives in jetgrid/cli/demo.py; this module only counts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.msg import Msg

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.consumers import consumer_name
from jetgrid.coordinator.settings import Settings
from jetgrid.events import TERMINAL_NAMES, JetgridError, JobSubmitted, decode
from jetgrid.events.addressing import Speaker
from jetgrid.worker.agent import Worker, WorkerOptions
from jetgrid.worker.backends import EchoBackend

__all__ = ["DEMO_UPTIMES", "Fleet", "FleetOptions", "WorkerStats", "expected_shares"]

log = logging.getLogger("jetgrid.demo")

DEMO_UPTIMES = (0.995, 0.98, 0.92, 0.85)
RATE_WINDOW_S = 5.0


def expected_shares(factors: list[float]) -> list[float | None]:
    """Each worker's share of the jobs a saturated queue gives out: factor / sum of factors."""
    total = sum(factors)
    return [f / total if total else None for f in factors]


@dataclass
class FleetOptions:
    uptimes: tuple[float, ...] = DEMO_UPTIMES
    pool: str = "standard"
    model: str = "demo"
    pull_rate: float = 10.0  # jobs/s per worker at factor 1
    pull_burst: float = 2.0
    concurrency: int = 4
    backlog: int = 40  # jobs kept waiting in the queue
    job_latency_s: float = 0.02
    fail_share: float = 0.02  # jobs that fail for good (bad input)
    transient_share: float = 0.03  # jobs whose every attempt fails transiently (retried)
    seed: int = 1


@dataclass
class WorkerStats:
    """What one worker did during the demo, from the job events."""

    worker_id: str
    simulated_uptime: float
    taken: int = 0  # claims (one per delivery)
    succeeded: int = 0
    failed: int = 0
    delayed: int = 0  # transient failures, handed back with a backoff
    latency_min: float | None = None
    latency_max: float | None = None
    latency_sum: float = 0.0
    done_at: deque[float] = field(default_factory=deque)
    succeeded_since_settled: int = 0

    @property
    def latency_avg(self) -> float | None:
        return self.latency_sum / self.succeeded if self.succeeded else None

    def completed(self, latency: float, now: float, settled: bool) -> None:
        self.succeeded += 1
        self.succeeded_since_settled += int(settled)
        self.latency_sum += latency
        self.latency_min = latency if self.latency_min is None else min(self.latency_min, latency)
        self.latency_max = latency if self.latency_max is None else max(self.latency_max, latency)
        self.done_at.append(now)

    def rate(self, now: float) -> float:
        """Jobs/s completed over the last RATE_WINDOW_S seconds."""
        while self.done_at and self.done_at[0] < now - RATE_WINDOW_S:
            self.done_at.popleft()
        return len(self.done_at) / RATE_WINDOW_S


class Fleet:
    """Simulated workers plus a job stream against one NATS; `start`, then `stop`."""

    def __init__(
        self,
        settings: Settings,
        options: FleetOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = o = options or FleetOptions()
        self.run_id = uuid.uuid4().hex[:4]
        self.settings = settings.replace(pull_rate=o.pull_rate, pull_burst=o.pull_burst)
        self.clock = clock
        self.workers = [
            Worker(
                self.settings,
                WorkerOptions(
                    pool=o.pool,
                    models=(o.model,),
                    worker_id=f"demo-{self.run_id}-{i + 1}",
                    concurrency=o.concurrency,
                    simulate_uptime=u,
                    simulate_seed=o.seed + i,
                ),
                EchoBackend(latency_s=o.job_latency_s),
            )
            for i, u in enumerate(o.uptimes)
        ]
        self.stats = {
            w.id: WorkerStats(w.id, u) for w, u in zip(self.workers, o.uptimes, strict=True)
        }
        self.status: Counter[str] = Counter()
        self.submitted = 0
        self.backlog = 0
        self.started_at = clock()
        self.settled_at: float | None = None  # when every worker had left probation
        self._jobs: dict[str, tuple[float, str]] = {}  # job id -> (submitted at, status)
        self._rng = random.Random(o.seed)
        self._bus: Bus | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._feeding = True

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self._bus = await Bus.connect(self.settings, name="jetgrid-demo")
        await self._bus.nc.subscribe(self.settings.subjects.job_events(), cb=self._on_event)
        self.started_at = self.clock()
        for w in self.workers:
            self._tasks.append(asyncio.create_task(w.run(), name=w.id))
        await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in self.workers)), 30)
        self._tasks.append(asyncio.create_task(self._feed(), name="demo-feed"))

    async def stop(self) -> None:
        self._feeding = False
        for w in self.workers:
            w.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._bus is not None:
            await self._bus.close()

    # -- the job stream ---------------------------------------------------------------------
    def _job(self) -> JobSubmitted:
        o, r = self.options, self._rng.random()
        job_id = f"demo-{self.run_id}-{self.submitted + 1}"
        if r < o.fail_share:
            inp = {"fail": "permanent"}
        elif r < o.fail_share + o.transient_share:
            inp = {"fail": "transient"}
        else:
            return JobSubmitted(
                job_id=job_id, model=o.model, pool=o.pool, prompt=f"demo job {self.submitted + 1}"
            )
        return JobSubmitted(job_id=job_id, model=o.model, pool=o.pool, input=inp)

    async def _feed(self) -> None:
        """Keep `backlog` jobs waiting: a saturated queue that stays small."""
        bus = self._bus
        assert bus is not None
        o, s = self.options, self.settings
        speaker = Speaker.service("demo")
        consumer = consumer_name(o.pool, o.model)
        while self._feeding:
            try:
                info = await bus.consumer_info(s.streams.jobs, consumer)
                self.backlog = info.num_pending or 0
                for _ in range(max(0, o.backlog - self.backlog)):
                    job = self._job()
                    self._jobs[job.job_id] = (self.clock(), "queued")
                    self.status["queued"] += 1
                    self.submitted += 1
                    await bus.store(job, speaker)
            except JetgridError as exc:  # NATS busy or away: the stream resumes on the next round
                log.warning("demo job stream: %s", exc)
            self._check_settled()
            await asyncio.sleep(0.2)

    def _check_settled(self) -> None:
        if self.settled_at is None and all(w.gate.tier != "probation" for w in self.workers):
            self.settled_at = self.clock()

    # -- statistics -------------------------------------------------------------------------
    async def _on_event(self, msg: Msg) -> None:
        job_id, name = self.settings.subjects.parse_job_event(msg.subject)
        known = self._jobs.get(job_id)
        if known is None:
            return
        try:
            ev = decode(msg.data).event
        except Exception:  # not ours to judge; the projector records invalid events
            return
        submitted_at, status = known
        stats = self.stats.get(getattr(ev, "worker_id", None) or "")
        now = self.clock()
        if name == "started" and stats:
            stats.taken += 1
        elif name == "completed" and stats:
            stats.completed(now - submitted_at, now, self.settled_at is not None)
        elif name == "failed" and stats:
            stats.failed += 1
        elif name == "retrying" and stats:
            stats.delayed += 1
        new = {"claimed": "running", "started": "running"}.get(name, name)
        if new in ("running", "retrying") or new in TERMINAL_NAMES:
            if status in TERMINAL_NAMES:
                return  # the first terminal event counts
            self.status[status] -= 1
            self.status[new] += 1
            self._jobs[job_id] = (submitted_at, new)

    def rows(self) -> list[dict[str, object]]:
        """Per-worker statistics, now."""
        now = self.clock()
        out = []
        for w in self.workers:
            st, c = self.stats[w.id], w.pinger.counters
            ticks = c.healthy + c.unhealthy + c.missed + c.skipped + c.failed
            out.append(
                {
                    "worker": w.id,
                    "simulated": st.simulated_uptime,
                    "tier": w.gate.tier,
                    "factor": w.gate.factor,
                    "uptime": c.healthy / ticks if ticks else None,
                    "rate": st.rate(now),
                    "budget": w.gate.effective_rate,
                    "sent": st.taken,
                    "succeeded": st.succeeded,
                    "failed": st.failed,
                    "delayed": st.delayed,
                    "latency": (st.latency_min, st.latency_avg, st.latency_max),
                    "settled_succeeded": st.succeeded_since_settled,
                }
            )
        return out

    def shares(self) -> list[tuple[str, float, float | None, float | None]]:
        """(worker, factor, expected share, actual share) of jobs completed since tiers settled."""
        rows = self.rows()
        factors = [w.gate.factor for w in self.workers]
        done = [self.stats[w.id].succeeded_since_settled for w in self.workers]
        total = sum(done)
        expected = expected_shares(factors)
        return [
            (str(r["worker"]), f, e, d / total if total else None)
            for r, f, e, d in zip(rows, factors, expected, done, strict=True)
        ]
