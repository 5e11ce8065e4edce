"""Usage from the log: each run's GPU-seconds and energy, summed per key, model or worker.

Definitions (all times are event times; nothing here reads a clock):

- **Run.** One attempt of a job on one worker: from its `started` event to the end of that
  attempt, a `retrying` of the same attempt (a transient failure or a stall) or the job's first
  terminal event. A run whose worker died with no outcome has no end and is not counted. A run
  belongs to the period its end falls in (``from <= end < to``), whole.
- **GPU-seconds.** A job holds one of its worker's `concurrency` slots, so a run holds
  ``gpus / concurrency`` of the worker's GPUs: ``gpu_s = run_s * gpus / concurrency``, with
  ``gpus`` the GPUs the worker's last ping before the run reported (the first ping after it, if
  none came before) and ``concurrency`` its latest registration's. A worker whose pings report no
  GPU (no NVML) has 0 GPU-seconds; its runs still count their ``run_s``.
- **Energy.** The worker's power is its pings' ``power_w`` summed over its GPUs, held from each
  ping to the next (a ping without power leaves it unknown until the next one). At each moment
  the power is shared evenly among the worker's runs open at that moment (runs still open at the
  period's end included); a run's energy is the integral of its share, in joules. A run with any
  unknown stretch has ``energy_j`` None.
- **Tenant.** The job's `submitter` (projections.jobs), ``-`` when it has none.

`UsageFold.apply` takes envelopes of every stream in any interleaving (JOBS, JOB_EVENTS,
WORKERS); `UsageFold.runs` gives the runs that end in a period; `totals` sums them by key, model
or worker. Prices are applied at report time (projections.prices).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from jetgrid.events import (
    TERMINAL_EVENTS,
    Envelope,
    JobCompleted,
    JobRetrying,
    JobStarted,
    WorkerHeartbeat,
    WorkerRegistered,
    claim_of,
)
from jetgrid.projections.jobs import JobView
from jetgrid.projections.jobs import apply as apply_job

__all__ = ["BY", "Run", "Total", "UsageFold", "totals"]

By = Literal["key", "model", "worker"]
BY: tuple[By, ...] = ("key", "model", "worker")
NO_KEY = "-"


@dataclass(frozen=True, slots=True)
class Run:
    """One counted run: who, what, and what it used."""

    job_id: str
    attempt: int
    worker_id: str
    key: str
    model: str
    start: datetime
    end: datetime
    run_s: float
    gpu_s: float
    energy_j: float | None
    tokens: int


@dataclass
class Total:
    """Runs summed under one key, model or worker."""

    name: str
    jobs: int = 0
    runs: int = 0
    run_s: float = 0.0
    gpu_s: float = 0.0
    energy_j: float = 0.0
    energy_unknown: int = 0  # runs whose energy is unknown (not in energy_j)
    tokens: int = 0
    # per model, for pricing: gpu_s, energy_j, tokens
    by_model: dict[str, tuple[float, float, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Ping:
    time: datetime
    gpus: int
    power_w: float | None


@dataclass
class _Open:
    worker_id: str
    start: datetime


@dataclass(frozen=True, slots=True)
class _Closed:
    job_id: str
    attempt: int
    worker_id: str
    start: datetime
    end: datetime
    tokens: int


class UsageFold:
    """Folds envelopes of any stream into runs (see the module doc)."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobView] = {}
        self.open: dict[str, dict[int, _Open]] = {}  # job id -> attempt -> its open run
        self.closed: list[_Closed] = []
        self.ended: set[str] = set()  # jobs whose first terminal event was folded
        self.pings: dict[str, list[_Ping]] = {}
        self.concurrency: dict[str, tuple[datetime, int]] = {}

    def apply(self, env: Envelope) -> None:
        ev = env.event
        if isinstance(ev, WorkerHeartbeat):
            powers = [g.power_w for g in ev.gpus]
            power = None if not powers or None in powers else sum(p or 0.0 for p in powers)
            ping = _Ping(env.time, len(ev.gpus), power)
            pings = self.pings.setdefault(ev.worker_id, [])
            bisect.insort(pings, ping, key=lambda p: p.time)
            return
        if isinstance(ev, WorkerRegistered):
            seen = self.concurrency.get(ev.worker_id)
            if seen is None or seen[0] <= env.time:
                self.concurrency[ev.worker_id] = (env.time, ev.concurrency)
            return
        job_id = getattr(ev, "job_id", None)
        if job_id is None:
            return
        self.jobs[job_id] = apply_job(self.jobs.get(job_id), env)
        if isinstance(ev, JobStarted):
            self._start(job_id, ev.attempt, ev.worker_id, env.time)
            return
        if (taken := claim_of(ev, env.time)) is not None:  # a run over before its `started`
            self._start(job_id, taken.attempt, taken.worker_id, taken.at)
        if isinstance(ev, JobRetrying):
            self._close(job_id, ev.attempt, env.time, 0)
        elif isinstance(ev, TERMINAL_EVENTS) and job_id not in self.ended:
            self.ended.add(job_id)
            tokens = _tokens(ev.usage) if isinstance(ev, JobCompleted) else 0
            attempt = getattr(ev, "attempt", None)
            for a in list(self.open.get(job_id, ())):
                self._close(job_id, a, env.time, tokens if a == attempt else 0)

    def _start(self, job_id: str, attempt: int, worker_id: str, at: datetime) -> None:
        if job_id not in self.ended:
            runs = self.open.setdefault(job_id, {})
            for a in [a for a in runs if a < attempt]:
                del runs[a]  # an earlier run with no outcome: its worker died
            runs[attempt] = _Open(worker_id, at)

    def _close(self, job_id: str, attempt: int, end: datetime, tokens: int) -> None:
        runs = self.open.get(job_id, {})
        run = runs.pop(attempt, None)
        if not runs:
            self.open.pop(job_id, None)
        if run is not None and end >= run.start:
            self.closed.append(_Closed(job_id, attempt, run.worker_id, run.start, end, tokens))

    def runs(self, start: datetime, end: datetime) -> list[Run]:
        """The runs that end in ``[start, end)``, with their GPU-seconds and energy."""
        chosen = [c for c in self.closed if start <= c.end < end]
        # Runs still open at `end` share their worker's power too, up to `end`.
        still = [
            _Closed(j, a, o.worker_id, o.start, end, 0)
            for j, runs in self.open.items()
            for a, o in runs.items()
            if o.start < end
        ]
        energy = self._energy(chosen, [*self.closed, *still])
        out = []
        for c in chosen:
            view = self.jobs.get(c.job_id)
            run_s = (c.end - c.start).total_seconds()
            gpus = self._gpus(c.worker_id, c.start)
            conc = self.concurrency.get(c.worker_id, (c.start, 1))[1]
            out.append(
                Run(
                    job_id=c.job_id,
                    attempt=c.attempt,
                    worker_id=c.worker_id,
                    key=(view.submitter if view else None) or NO_KEY,
                    model=(view.model if view else None) or NO_KEY,
                    start=c.start,
                    end=c.end,
                    run_s=run_s,
                    gpu_s=run_s * gpus / conc,
                    energy_j=energy.get((c.job_id, c.attempt)),
                    tokens=c.tokens,
                )
            )
        return out

    def _gpus(self, worker_id: str, at: datetime) -> int:
        pings = self.pings.get(worker_id, [])
        if not pings:
            return 0
        i = bisect.bisect_right(pings, at, key=lambda p: p.time)
        return pings[i - 1].gpus if i else pings[0].gpus

    def _energy(self, chosen: list[_Closed], every: list[_Closed]) -> dict[tuple[str, int], float]:
        """Joules per chosen run (missing: unknown), sharing power among all open runs."""
        out: dict[tuple[str, int], float] = {}
        per_worker: dict[str, list[_Closed]] = {}
        for c in every:
            per_worker.setdefault(c.worker_id, []).append(c)
        for worker in {c.worker_id for c in chosen}:
            pings = self.pings.get(worker, [])
            mine = per_worker.get(worker, [])
            points = sorted(
                {c.start for c in mine} | {c.end for c in mine} | {p.time for p in pings}
            )
            joules: dict[tuple[str, int], float] = {}
            unknown: set[tuple[str, int]] = set()
            starts: dict[datetime, list[_Closed]] = {}
            ends: dict[datetime, list[_Closed]] = {}
            for c in mine:
                starts.setdefault(c.start, []).append(c)
                ends.setdefault(c.end, []).append(c)
            active: dict[tuple[str, int], _Closed] = {}
            i = 0  # pings before the segment's start
            for a, b in itertools.pairwise(points):  # a sweep over [a, b) segments
                for c in ends.get(a, []):
                    active.pop((c.job_id, c.attempt), None)
                for c in starts.get(a, []):
                    if c.end > a:
                        active[(c.job_id, c.attempt)] = c
                while i < len(pings) and pings[i].time <= a:
                    i += 1
                if not active:
                    continue
                power = pings[i - 1].power_w if i else None
                for k in active:
                    if power is None:
                        unknown.add(k)
                    else:
                        share = power * (b - a).total_seconds() / len(active)
                        joules[k] = joules.get(k, 0.0) + share
            for c in mine:
                k = (c.job_id, c.attempt)
                if k not in unknown:
                    out[k] = joules.get(k, 0.0)
        return out


def _tokens(usage: dict[str, object]) -> int:
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    parts = (usage.get("prompt_tokens"), usage.get("completion_tokens"))
    return sum(p for p in parts if isinstance(p, int))


def totals(runs: Iterable[Run], by: By) -> list[Total]:
    """`runs` summed per key, model or worker, sorted by name."""
    out: dict[str, Total] = {}
    jobs: dict[str, set[str]] = {}
    for r in runs:
        name = {"key": r.key, "model": r.model, "worker": r.worker_id}[by]
        t = out.setdefault(name, Total(name))
        jobs.setdefault(name, set()).add(r.job_id)
        t.runs += 1
        t.run_s += r.run_s
        t.gpu_s += r.gpu_s
        t.tokens += r.tokens
        if r.energy_j is None:
            t.energy_unknown += 1
        else:
            t.energy_j += r.energy_j
        g, e, k = t.by_model.get(r.model, (0.0, 0.0, 0))
        t.by_model[r.model] = (g + r.gpu_s, e + (r.energy_j or 0.0), k + r.tokens)
    for name, t in out.items():
        t.jobs = len(jobs[name])
    return [out[n] for n in sorted(out)]
