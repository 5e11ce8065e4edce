"""Warm before cold: when a worker asks its (pool, model) consumer for jobs. Pure rules.

A worker that has the model loaded ("warm") asks at once. A worker that could serve the model
but has not loaded it ("cold") would pay a model load for every job it takes, and may evict a
model it is warm for; so it asks only when warm capacity is evidently short:

- the oldest job waiting on the consumer has waited at least ``cold_wait_s``, or
- more than ``cold_backlog`` jobs wait (not yet delivered to anyone).

Each worker decides alone, from what JetStream says about the shared consumer (its pending
count and the stream timestamp of the first job not yet delivered); no coordinator is
involved. Thresholds are per pool, in the pools file (unknown pool keys land in
``PoolConfig.extra``)::

    [[pool]]
    name = "standard"
    cold_wait_s = 10      # a job waiting this long may go to a cold worker
    cold_backlog = 8      # more than this many waiting jobs may go to cold workers

A worker whose backend is not accepting (e.g. Ollama unreachable) asks for nothing at all, and
none asks for a model its backend does not have (not pulled yet, or pulling not allowed): the
jobs wait for a worker that has it instead of failing here.
A backend that does not know about loaded models (echo) counts as warm for everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jetgrid.coordinator.pools import PoolConfig

DEFAULT_COLD_WAIT_S = 10.0
DEFAULT_COLD_BACKLOG = 8

Decision = Literal[
    "warm", "cold_wait", "cold_backlog", "hold_cold", "hold_empty", "hold_unhealthy", "hold_missing"
]


@dataclass(frozen=True, slots=True)
class AffinityPolicy:
    cold_wait_s: float = DEFAULT_COLD_WAIT_S
    cold_backlog: int = DEFAULT_COLD_BACKLOG

    @classmethod
    def for_pool(cls, pool: PoolConfig) -> AffinityPolicy:
        """The pool's thresholds (``cold_wait_s``, ``cold_backlog`` in its extra keys)."""
        extra = pool.extra
        try:
            wait = float(extra.get("cold_wait_s", DEFAULT_COLD_WAIT_S))
            backlog = int(extra.get("cold_backlog", DEFAULT_COLD_BACKLOG))
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"pool {pool.name!r}: cold_wait_s and cold_backlog must be numbers ({exc})"
            ) from None
        if wait < 0 or backlog < 0:
            raise ValueError(
                f"pool {pool.name!r}: cold_wait_s and cold_backlog must be >= 0, "
                f"got {wait} and {backlog}"
            )
        return cls(cold_wait_s=wait, cold_backlog=backlog)


def decide(
    policy: AffinityPolicy,
    *,
    accepting: bool,
    warm: bool,
    pending: int,
    oldest_wait_s: float | None,
    available: bool = True,
) -> Decision:
    """Whether to ask the consumer for jobs now, and why (``hold_*`` means do not)."""
    if not accepting:
        return "hold_unhealthy"
    if not available:
        return "hold_missing"
    if warm:
        return "warm"
    if pending <= 0:
        return "hold_empty"
    if oldest_wait_s is not None and oldest_wait_s >= policy.cold_wait_s:
        return "cold_wait"
    if pending > policy.cold_backlog:
        return "cold_backlog"
    return "hold_cold"


def may_pull(decision: Decision) -> bool:
    return not decision.startswith("hold")


def cold_share(policy: AffinityPolicy, pending: int) -> int:
    """How many jobs a cold worker asks for at once: the excess over the backlog threshold,
    at least one, so cold workers take the overflow rather than the queue."""
    return max(1, pending - policy.cold_backlog)
