"""The audit: what each worker took, in which tier, and what it took above its tier's budget. Pure.

Input is plain data gathered by replaying the log (projections.audit_log): each worker's tier
timeline (every change, with its event time), its claims (events.claim_of: ``jetgrid.job.started``
events with a ``jobs_seq``, or outcomes carrying their run's claim; one per delivery,
redeliveries included; old logs' ``claimed`` events decode as such), each at the time it was
taken, and the jobs' submissions and first terminal events.

**The budget check** (`over_budget`), precisely:

- The factor in force for a claim at time ``t`` is the highest factor of any tier the worker
  held during ``(t - grace_s, t]`` (a drop counts from ``grace_s`` after it). The grace
  (default 10 s) covers the time a tier change takes to reach the worker (projector lag + KV
  watch) and a pull granted just before a drop.
- A claim while that factor is 0 is over budget: a worker in a zero-factor tier (``none``) may
  not take work at all.
- With a base rate (``rate`` jobs/s > 0), claims also run through the workers' own token bucket
  (coordinator.budget, the same arithmetic): it starts full at the worker's first tier entry,
  holds ``burst`` tokens (0: max(1, rate)) plus ``slack`` (default 1, for clock jitter between
  the worker's monotonic clock and event times), refills at ``rate * factor``, and each claim
  takes one token. A claim that finds no whole token is over budget (and takes none).
- With no base rate (``rate`` 0: unlimited pulling), only the zero-factor rule applies.

**Taken for want of better**: a claim whose event says ``fallback: true`` was taken beyond the
tier budget because no one else took the job within the tier's fallback wait
(coordinator.fallback). It is counted apart (``taken_for_want_of_better``), never as a
violation, and spends no token of the bucket above.

A claim's **tier** (for "jobs taken per tier") is the worker's tier at the claim's event time
exactly, without grace.

**From rollups**: where a worker's raw pings aged out, its tiers up to ``from_rollups_until``
come from hour rollups (projections.prelude): a tier change shows at the end of the hour it
happened in, so claims in those hours are judged against that coarser timeline. Where the
claims themselves aged out of JOB_EVENTS, the rollups' counts stand in for them
(``claims_from_rollups_until``, `RolledClaims`): claims, claims per tier (the tier at each
claim's time, exactly) and those taken for want of better are the full log's; the budget
check needs each claim's time, so ``over_budget`` counts only the retained claims.
Latency is from a job's submission to its first terminal event.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jetgrid.coordinator.budget import new_budget, take, with_factor

__all__ = [
    "BudgetRule",
    "Claim",
    "RolledClaims",
    "Span",
    "Violation",
    "factor_in_force",
    "latency_stats",
    "over_budget",
    "report_worker",
    "tier_at",
]


@dataclass(frozen=True, slots=True)
class Span:
    """From `since` (epoch seconds) the worker was in `tier` with `factor` (None: unknown)."""

    since: float
    tier: str
    factor: float | None


@dataclass(frozen=True, slots=True)
class Claim:
    time: float
    job_id: str
    attempt: int = 1
    fallback: bool = False  # taken for want of better (coordinator.fallback)


@dataclass(frozen=True, slots=True)
class RolledClaims:
    """The jobs a worker took in the hour starting at `hour` (epoch seconds), from its rollup
    (projections.hours): per tier at the time taken, and how many for want of better."""

    hour: int
    per_tier: dict[str, int]
    fallback: int = 0


@dataclass(frozen=True, slots=True)
class BudgetRule:
    rate: float = 0.0  # jobs/s; 0 = unlimited
    burst: float = 0.0  # 0 = max(1, rate)
    grace_s: float = 10.0
    slack: float = 1.0
    default_factor: float = 0.5  # before the first tier entry (a worker with no KV key)

    @property
    def capacity(self) -> float:
        return (self.burst or max(1.0, self.rate)) + self.slack


@dataclass(frozen=True, slots=True)
class Violation:
    time: float
    job_id: str
    tier: str
    factor: float
    reason: str


def tier_at(timeline: Sequence[Span], t: float, default_factor: float = 0.5) -> Span:
    """The span in force at `t` (the last with since <= t); before any: probation-like default."""
    i = bisect.bisect_right([s.since for s in timeline], t) - 1
    if i < 0:
        return Span(-math.inf, "unseen", default_factor)
    return timeline[i]


def _factor(span: Span, default: float) -> float:
    return default if span.factor is None else span.factor


def factor_in_force(timeline: Sequence[Span], t: float, rule: BudgetRule) -> tuple[float, Span]:
    """The highest factor held during [t - grace, t], and the span in force at t."""
    now = tier_at(timeline, t, rule.default_factor)
    best = _factor(now, rule.default_factor)
    start = t - rule.grace_s
    before = tier_at(timeline, start, rule.default_factor)  # in force just after `start`
    best = max(best, _factor(before, rule.default_factor))
    for s in timeline:
        if start < s.since <= t:
            best = max(best, _factor(s, rule.default_factor))
    return best, now


def over_budget(
    timeline: Sequence[Span], claims: Iterable[Claim], rule: BudgetRule
) -> list[Violation]:
    """The claims taken above the tier's budget (rules in the module docstring), in time order;
    fallback claims are never among them."""
    out: list[Violation] = []
    claims = sorted(
        (c for c in claims if not c.fallback), key=lambda c: (c.time, c.job_id, c.attempt)
    )
    bucket = None
    if rule.rate > 0 and claims:
        start = timeline[0].since if timeline else claims[0].time
        f0, _ = factor_in_force(timeline, min(start, claims[0].time), rule)
        bucket = new_budget(rule.rate, rule.capacity, f0, now=min(start, claims[0].time))
    for c in claims:
        factor, span = factor_in_force(timeline, c.time, rule)
        if factor <= 0:
            out.append(
                Violation(
                    c.time,
                    c.job_id,
                    span.tier,
                    0.0,
                    f"claimed in tier {span.tier!r} (factor 0) for the last {rule.grace_s:g} s",
                )
            )
            if bucket is not None:
                bucket = with_factor(bucket, 0.0, max(c.time, bucket.updated))
            continue
        if bucket is None:
            continue
        now = max(c.time, bucket.updated)
        bucket = with_factor(bucket, factor, now)
        bucket, granted = take(bucket, 1, now)
        if not granted:
            out.append(
                Violation(
                    c.time,
                    c.job_id,
                    span.tier,
                    factor,
                    f"no token: above {rule.rate:g} "
                    f"x {factor:g} jobs/s with burst {rule.capacity:g}",
                )
            )
    return out


def latency_stats(values: Iterable[float]) -> dict[str, float | int | None]:
    """n, min, avg, p50, p99, max (nearest-rank percentiles); None for an empty input."""
    xs = sorted(values)
    if not xs:
        return {"n": 0, "min": None, "avg": None, "p50": None, "p99": None, "max": None}

    def pct(p: float) -> float:
        return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]

    return {
        "n": len(xs),
        "min": xs[0],
        "avg": sum(xs) / len(xs),
        "p50": pct(50),
        "p99": pct(99),
        "max": xs[-1],
    }


@dataclass
class WorkerInput:
    """What the log says about one worker, for the report."""

    worker_id: str
    timeline: list[Span]
    claims: list[Claim]
    uptime: dict[str, float | None] = field(default_factory=dict)
    # (time of the first terminal event, status, seconds since submission or None)
    finished: list[tuple[float, str, float | None]] = field(default_factory=list)
    # its raw pings before this (epoch seconds) aged out: tiers then are the rollups' hour ends
    rollups_until: float | None = None
    # the jobs it took in hours whose claims aged out, from rollups
    rolled: list[RolledClaims] = field(default_factory=list)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def report_worker(
    w: WorkerInput, rule: BudgetRule, start: float | None = None, end: float | None = None
) -> dict[str, Any]:
    """One worker's audit as JSON-able data, restricted to claims in [start, end]."""
    lo = -math.inf if start is None else start
    hi = math.inf if end is None else end
    claims = [c for c in w.claims if lo <= c.time <= hi]
    per_tier: Counter[str] = Counter(
        tier_at(w.timeline, c.time, rule.default_factor).tier for c in claims
    )
    rolled = [r for r in w.rolled if lo <= r.hour <= hi]
    for r in rolled:
        per_tier.update(r.per_tier)
    # The bucket runs over every claim (earlier claims drain it), but only those in range count.
    violations = [v for v in over_budget(w.timeline, w.claims, rule) if lo <= v.time <= hi]
    done = [f for f in w.finished if lo <= f[0] <= hi]
    shown = [s for s in w.timeline if lo <= s.since <= hi]
    if start is not None:
        first = tier_at(w.timeline, start, rule.default_factor)
        if first.since > -math.inf and (not shown or shown[0].since > start):
            shown.insert(0, first)
    return {
        "worker_id": w.worker_id,
        "uptime": w.uptime,
        "from_rollups_until": None if w.rollups_until is None else _iso(w.rollups_until),
        "tier_timeline": [
            {"since": _iso(s.since), "tier": s.tier, "factor": s.factor} for s in shown
        ],
        "claims_from_rollups_until": _iso(max(r.hour for r in rolled) + 3600) if rolled else None,
        "claims": len(claims) + sum(sum(r.per_tier.values()) for r in rolled),
        "claims_per_tier": dict(sorted(per_tier.items())),
        "taken_for_want_of_better": sum(1 for c in claims if c.fallback)
        + sum(r.fallback for r in rolled),
        "over_budget": len(violations),
        "violations": [
            {"time": _iso(v.time), "job_id": v.job_id, "tier": v.tier, "reason": v.reason}
            for v in violations
        ],
        "outcomes": dict(sorted(Counter(st for t, st, _ in done).items())),
        "latency_s": latency_stats(lat for _, _, lat in done if lat is not None),
    }
