"""Shedding as plain data: when a pool refuses more work, and when to try again.

A pool may set ``max_backlog`` (queued jobs per model) and ``max_wait_s`` (how long its oldest
queued job may have waited) in the pools file. Beyond either, the pool is over its limit:

- a gateway refuses a submit for it with 429 and ``Retry-After`` (`refuse`, over the queue
  figures it follows: projections.queue), in each API's error shape;
- over NATS no one can refuse a publish (JOBS keeps Limits retention, so no stream or consumer
  limit counts only waiting jobs), so the worker that takes a job judges it by its own wait
  (`shed_at_take`): a job that waited longer than ``max_wait_s`` for its first delivery ends
  `rejected`, with a reason naming the pool and its limit, and is never run. That holds for
  every submitter without a coordinator, and the submitter sees why on the job's subject.
  ``max_backlog`` cannot be judged by a taker (a job does not know how many waited ahead of it
  when it was submitted), so it is the gateways' rule only.

``Retry-After`` is the time the drain rate needs to bring the queue back under the limit: for
``max_backlog``, ``(queued - max_backlog + 1) / drain``; for ``max_wait_s``, the jobs beyond
what drains within ``max_wait_s`` (``queued - floor(max_wait_s * drain)``) over the drain rate;
at least 1 s, at most `MAX_RETRY_AFTER_S`; `IDLE_RETRY_AFTER_S` (or ``max_wait_s`` when
smaller) while nothing drains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jetgrid.coordinator.pools import PoolConfig

__all__ = [
    "IDLE_RETRY_AFTER_S",
    "MAX_RETRY_AFTER_S",
    "Refusal",
    "refuse",
    "retry_after",
    "shed_at_take",
]

IDLE_RETRY_AFTER_S = 30
MAX_RETRY_AFTER_S = 3600


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a submit is refused, and in how many seconds to try again."""

    reason: str
    retry_after_s: int


def retry_after(excess: float, drain_per_s: float, idle_s: float = IDLE_RETRY_AFTER_S) -> int:
    """Seconds until `excess` jobs drain at `drain_per_s` (see the module docstring)."""
    if drain_per_s <= 0:
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(idle_s)))
    return max(1, min(MAX_RETRY_AFTER_S, math.ceil(max(0.0, excess) / drain_per_s)))


def refuse(
    pool: PoolConfig, model: str, queued: int, oldest_wait_s: float | None, drain_per_s: float
) -> Refusal | None:
    """Whether a submit to (`pool`, `model`) is refused now, given its queue; None: accepted."""
    if pool.max_backlog is not None and queued >= pool.max_backlog:
        wait = retry_after(queued - pool.max_backlog + 1, drain_per_s)
        return Refusal(
            f"Pool {pool.name!r} is over its max_backlog for model {model!r}: {queued} jobs "
            f"queued, limit {pool.max_backlog}; retry in {wait} s.",
            wait,
        )
    limit = pool.max_wait_s
    if limit is not None and oldest_wait_s is not None and oldest_wait_s >= limit:
        excess = queued - math.floor(limit * drain_per_s)
        wait = retry_after(excess, drain_per_s, min(IDLE_RETRY_AFTER_S, limit))
        return Refusal(
            f"Pool {pool.name!r} is over its max_wait_s for model {model!r}: its oldest queued "
            f"job has waited {oldest_wait_s:.1f} s, limit {limit:g} s; retry in {wait} s.",
            wait,
        )
    return None


def shed_at_take(pool: PoolConfig, waited_s: float, attempt: int) -> str | None:
    """Why a worker must not run a job it takes (`rejected`), or None: on its first delivery,
    the job waited longer than the pool's ``max_wait_s``."""
    limit = pool.max_wait_s
    if limit is None or attempt != 1 or waited_s <= limit:
        return None
    return (
        f"pool {pool.name!r} shed it: it waited {waited_s:.1f} s for a worker, over the pool's "
        f"max_wait_s of {limit:g} s; submit it again later"
    )
