"""Work-conserving tiers: when a worker held back by its tier budget takes a job anyway. Pure.

Tiers shape shares; they must not strand jobs. A worker whose tier budget allows no pull now
(coordinator.allowance gives 0: a factor-0 tier, or a fractional tier out of tokens) may still
take jobs from one of its consumers when nobody else has taken anything from it for the
**fallback wait** of the worker's tier:

- The wait grows down the tiers: ``fallback_wait_s * (rank + 1)``, where rank 0 is the highest
  tier of the policy (probation ranks with the highest tier whose factor is at most the
  probation factor). With the default policy and ``fallback_wait_s`` 5 s: full 5 s, half and
  probation 10 s, tenth 15 s, none 20 s, so tier ``none`` comes last. ``fallback_wait_s`` 0
  turns the fallback off (tiers are then strict, as before).
- **Stalled** (`observe`): the consumer holds jobs (``pending > 0``) and its delivered count,
  less what this worker itself took from it, has not changed for that wait, measured on the
  worker's own clock from the first time it saw the consumer in that state, in readings no more
  than ``gap_s`` apart (a longer gap starts afresh: the consumer may have emptied unseen).
  While any other worker (of a higher tier, or any tier with a budget) takes jobs from the
  consumer, it is not stalled, so at saturation the budgets hold exactly as without the
  fallback.
- A stalled consumer gives the worker its free slots (`fallback_allowance`); the worker's own
  takes do not end the stall, so once it starts it keeps taking until the consumer is empty or
  other workers have taken from it at every reading for a whole wait (a better worker came
  back: the shares hold again within one wait).

`share` says in one sentence why a worker takes little or no work (its tier and the uptime
behind it), for ``GET /v1/workers`` and the dashboard.

A job taken this way is recorded as such (``fallback: true`` on its ``started`` event) and the
audit (projections.audit) counts it as "taken for want of better", not as a budget violation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jetgrid.coordinator.tiers import PROBATION, TierPolicy

__all__ = [
    "DEFAULT_FALLBACK_WAIT_S",
    "DEFAULT_GAP_S",
    "Stall",
    "fallback_allowance",
    "fallback_wait",
    "observe",
    "share",
]

DEFAULT_FALLBACK_WAIT_S = 5.0
DEFAULT_GAP_S = 3.0


def fallback_wait(policy: TierPolicy, tier: str, base_s: float) -> float | None:
    """Seconds a consumer must be stalled before a worker in `tier` takes from it; None: never
    (``base_s`` 0). A tier the policy does not name (the worker knows a newer policy) ranks
    last."""
    if base_s <= 0:
        return None
    names = [t.name for t in policy.tiers]
    if tier == PROBATION:
        rank = next(
            (i for i, t in enumerate(policy.tiers) if t.factor <= policy.probation_factor),
            len(names) - 1,
        )
    else:
        rank = names.index(tier) if tier in names else len(names) - 1
    return base_s * (rank + 1)


@dataclass(frozen=True, slots=True)
class Stall:
    """One consumer as a held-back worker last saw it: `since` (its clock) no one else took a
    job from it while jobs waited; `others` the deliveries to other workers seen so far;
    `seen` when it was last read; `taking` whether the worker takes from it (the stall lasted
    the wait); `contested` since when other workers have taken from it too while it takes."""

    since: float
    others: int
    seen: float
    taking: bool = False
    contested: float | None = None


def observe(
    prev: Stall | None,
    *,
    now: float,
    pending: int,
    delivered: int,
    own: int,
    wait_s: float | None,
    gap_s: float = DEFAULT_GAP_S,
) -> Stall:
    """The stall after reading the consumer at `now`: `pending` jobs waiting, `delivered` its
    delivery count (every worker, redeliveries included), `own` how many of those reached this
    worker (read when none of its requests is open, so both counts are complete).

    An empty consumer, a count that went back (the consumer was made anew), a reading more than
    `gap_s` after the previous one, or (while not yet taking) progress by anyone else restarts
    the stall at `now`. Once stalled for `wait_s` the worker takes from it, and goes on until
    the consumer is empty or other workers have taken from it at every reading for a whole
    `wait_s` (a better worker is back; peers of its own tier that take beside it in turns
    also stop it, then each waits again). `wait_s` None: never takes."""
    others = delivered - own
    if prev is None or others < prev.others or now - prev.seen > gap_s:
        return Stall(now, others, now)
    if pending <= 0 or wait_s is None:
        return Stall(now, others, now)
    moved = others > prev.others
    if prev.taking:
        if not moved:
            return Stall(prev.since, others, now, True, None)
        contested = now if prev.contested is None else prev.contested
        if now - contested >= wait_s:
            return Stall(now, others, now)
        return Stall(prev.since, others, now, True, contested)
    if moved:
        return Stall(now, others, now)
    return Stall(prev.since, others, now, now - prev.since >= wait_s)


def fallback_allowance(stall: Stall | None, free: int) -> int:
    """Jobs a held-back worker may take from the consumer now: its `free` slots while it is
    taking from it (see `observe`), else 0."""
    return max(free, 0) if stall is not None and stall.taking else 0


def share(
    policy: TierPolicy,
    *,
    tier: str | None,
    factor: float | None,
    uptime: float | None,
    window: str,
    base_s: float,
) -> dict[str, Any]:
    """Why a worker in `tier` takes the share it does: ``held_back`` (its factor is below 1),
    ``reason`` (one sentence: the tier, its factor and the `window` uptime behind it; with no
    tier, only the factor; None when the factor is unknown too) and ``fallback_wait_s`` (how
    long a job waits before it takes it anyway; None when it is not held back or the fallback
    is off)."""
    if factor is None:
        return {"held_back": False, "reason": None, "fallback_wait_s": None}
    if tier is None:  # only the worker's own word for its factor (no projector read)
        if factor >= 1:
            return {"held_back": False, "reason": None, "fallback_wait_s": None}
        wait = fallback_wait(policy, "", base_s)
        why = f"tier factor {factor:g}, by its last ping (the projector's views say which tier)"
        if factor == 0:
            why += "; takes only jobs no other worker took in time"
        return {"held_back": True, "reason": why, "fallback_wait_s": wait}
    if factor >= 1:
        return {"held_back": False, "reason": f"tier {tier}: full share", "fallback_wait_s": None}
    wait = fallback_wait(policy, tier, base_s)
    if tier == PROBATION:
        why = (
            f"tier {PROBATION} (factor {factor:g}): a new worker, until it has "
            f"{policy.probation_slots} complete heartbeat slots"
        )
    else:
        names = [t.name for t in policy.tiers]
        above = policy.tiers[names.index(tier) - 1] if tier in names[1:] else None
        up = "unknown" if uptime is None else f"{uptime:.1%}"
        why = f"tier {tier} (factor {factor:g}): {window} uptime {up}"
        if above is not None:
            why += f", below the {above.min_uptime:.0%} of tier {above.name}"
    if factor > 0:
        why += f"; pulls at {factor:g} of its base rate"
    elif wait is None:
        why += "; takes no jobs until its uptime recovers"
    else:
        why += f"; takes only jobs no other worker took within {wait:g} s"
    return {"held_back": True, "reason": why, "fallback_wait_s": wait}
