"""How many jobs a worker may ask for now: its free slots, its pull budget and its tier factor.

The rule, exactly (`pull_allowance`):

- **Factor 0** (the lowest tier): nothing, whatever else holds. The worker keeps pinging, so
  its uptime can recover and the projector can lift its factor again.
- **A base rate** (``pull_rate`` R > 0 jobs/s): a token bucket (coordinator.budget) refills at
  ``R * factor`` jobs/s up to ``burst`` tokens (``pull_burst``, default ``max(1, R)``). A job
  costs one token when it is delivered. The worker asks for at most
  ``min(concurrency - busy - outstanding, floor(tokens) - outstanding)`` jobs, where `busy` are
  the jobs it is running and `outstanding` the ones its open pull requests may still deliver
  (each of those will cost a token, so they are reserved). Over any long stretch it takes at
  most ``R * factor * seconds + burst`` jobs: the figure the audit can check a worker against.
- **No base rate** (``pull_rate`` 0, "unlimited"): the worker is bound only by its concurrency
  C, and the factor only gates: at any factor above 0 it fills its C slots
  (``C - busy - outstanding``), at 0 it takes nothing. An unlimited rate times 0.5 is still
  unlimited; scaling C instead would be too coarse to mean the factor (C = 1 gives one slot at
  1.0, 0.5 and 0.1 alike) and would silently halve every new worker's capacity during probation
  on clusters that never asked for rate limits. Give workers a base rate
  (``--pull-rate``/``JETGRID_PULL_RATE``) for the fractional tiers to bite.
- **Outcomes being stored** (`finishing`): a job frees its slot when its backend returns, and
  its outcome is stored and acked beside the next job. While more outcomes are still being
  stored than the worker has slots, nothing is free: a worker whose stores stall (NATS failing
  over) does not go on taking jobs it cannot record, and holds at most about twice its slots.

Pure: plain numbers in, a number out; the caller supplies the bucket's tokens as of now.
"""

from __future__ import annotations

from jetgrid.coordinator.budget import pull_size

__all__ = ["pull_allowance"]


def pull_allowance(
    *,
    concurrency: int,
    busy: int,
    outstanding: int,
    factor: float,
    tokens: float | None,
    max_batch: int | None = None,
    finishing: int = 0,
) -> int:
    """Jobs to ask for now (see the module docstring); `tokens` None means no base rate."""
    if not 0.0 <= factor <= 1.0:
        raise ValueError(f"A tier factor is between 0 and 1, got {factor!r}.")
    if factor == 0 or finishing > concurrency:
        return 0
    free = concurrency - busy - outstanding
    if tokens is None:
        return max(0, free if max_batch is None else min(free, max_batch))
    return pull_size(free, tokens - outstanding, free if max_batch is None else max_batch)
