"""Pull budgets: a token bucket as pure functions over a frozen state.

A worker may pull ``rate * factor`` jobs per second on average (its base rate times its tier's
factor), and up to ``burst`` at once after idling. Time is an argument (``now``, monotonic
seconds supplied by the caller), never read here, so the worker and the audit (which replays the
log with event times) run the same arithmetic.

- The bucket starts full (``burst`` tokens), or empty when the factor is 0.
- Factor 0 grants nothing, ever: tokens are dropped and none accrue.
- A factor change applies from the next refill: time already elapsed is credited at the old
  factor (`with_factor` refills first, then switches).
- A ``now`` earlier than the last refill credits nothing (a clock that steps back cannot mint
  tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from jetgrid.events.errors import ConfigError

__all__ = ["Budget", "new_budget", "pull_size", "refill", "take", "wait_time", "with_factor"]

# Float sums of rate * dt land a hair under whole numbers (2.9999999999); count those as whole.
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Budget:
    """Token bucket state: `tokens` available as of monotonic time `updated`."""

    rate: float
    burst: float
    factor: float
    tokens: float
    updated: float

    @property
    def effective_rate(self) -> float:
        """Jobs per second this bucket refills at."""
        return self.rate * self.factor

    @property
    def available(self) -> int:
        """Whole tokens available as of `updated` (0 whenever the factor is 0)."""
        return 0 if self.factor == 0 else math.floor(self.tokens + _EPS)


def _check(rate: float, burst: float, factor: float) -> None:
    if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
        raise ConfigError(f"Pull budget rate has value {rate!r}. Must be a number of jobs/s > 0.")
    if not (isinstance(burst, int | float) and math.isfinite(burst) and burst >= 1):
        raise ConfigError(f"Pull budget burst has value {burst!r}. Must be a number >= 1.")
    if not (isinstance(factor, int | float) and 0 <= factor <= 1):
        raise ConfigError(f"Pull budget factor has value {factor!r}. Must be between 0 and 1.")


def new_budget(
    rate: float, burst: float, factor: float = 1.0, now: float = 0.0, tokens: float | None = None
) -> Budget:
    """A bucket as of `now`: full (`burst` tokens) unless `tokens` says otherwise."""
    _check(rate, burst, factor)
    start = burst if tokens is None else max(0.0, min(float(tokens), burst))
    return Budget(float(rate), float(burst), float(factor), 0.0 if factor == 0 else start, now)


def refill(state: Budget, now: float) -> Budget:
    """The bucket as of `now`: tokens accrued at rate * factor since `updated`, capped at burst."""
    if now <= state.updated:
        return state
    if state.factor == 0:
        return replace(state, tokens=0.0, updated=now)
    tokens = min(state.burst, state.tokens + (now - state.updated) * state.rate * state.factor)
    return replace(state, tokens=tokens, updated=now)


def take(state: Budget, n: int, now: float) -> tuple[Budget, int]:
    """Ask for `n` tokens at `now`; returns the new state and how many were granted (0..n)."""
    if n < 0:
        raise ValueError(f"Cannot take {n} tokens; ask for 0 or more.")
    state = refill(state, now)
    granted = min(n, state.available)
    if granted == 0:
        return state, 0
    return replace(state, tokens=max(0.0, state.tokens - granted)), granted


def wait_time(state: Budget, now: float) -> float:
    """Seconds from `now` until one token is available: 0 if one is, math.inf at factor 0."""
    if state.factor == 0:
        return math.inf
    state = refill(state, now)
    missing = 1.0 - state.tokens
    if missing <= _EPS:
        return 0.0
    return missing / (state.rate * state.factor)


def with_factor(state: Budget, factor: float, now: float) -> Budget:
    """Switch to a new tier factor at `now`; time before `now` is credited at the old factor."""
    _check(state.rate, state.burst, factor)
    state = refill(state, now)
    if factor == state.factor:
        return state
    return replace(state, factor=float(factor), tokens=0.0 if factor == 0 else state.tokens)


def pull_size(free_slots: int, tokens: float, max_batch: int) -> int:
    """How many jobs to ask for in one pull: bounded by free slots, whole tokens and max_batch."""
    whole = math.floor(tokens + _EPS) if tokens > 0 else 0
    return max(0, min(free_slots, whole, max_batch))
