"""Retry and back-off rules as plain values: after a failure, wait how long, or give up?

A policy is data (`Backoff`); `after_failure` decides from the number of failures, the time
since the first try and the error; the I/O code only acts on the answer (coordinator.aio's
`retrying`, or a loop of its own where a helper would cost the per-job path an await). Nothing
here does I/O. The policies jetgrid uses:

================== ============================================ ==============================
policy             what it retries                              waits, and gives up
================== ============================================ ==============================
TERMINAL_STORE     storing a job's terminal event (worker)      0.2, 0.4, 0.8, 1.6 s; at the
                                                                5th failure, then the worker
                                                                naks with NOT_STORED_NAK_S
LAST_DEAD          storing `dead` on the delivery after a job's  0.5, 1, 2, 4, 4 ... s; at the
                   last run (worker), which holds it meanwhile  20th failure (about a minute),
                                                                then the nak leaves it to the
                                                                max-deliveries advisory
FAILOVER           registering, binding consumers (worker)      0.5 s; a failure more than
                                                                30 s after the first try, or a
                                                                PermissionDenied at once
GOODBYE            storing `draining` / `deregistered`          0.5 s; as FAILOVER, within 10 s
DEAD_LETTER_SETUP  the DEAD_LETTERS stream and its consumer     0.5 s; the 30th failure
NATS_RESTART       restarting `jetgrid up`'s nats-server when   0.5, 1, 2 ... 30 s; never
                   it ends                                      (reset after 60 s up)
================== ============================================ ==============================

A refusal (PermissionDenied) is not a failover: waiting will not change the answer. Every
operation retried here is idempotent (a ``Nats-Msg-Id``, or a create-if-missing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jetgrid.coordinator.errors import PermissionDenied

__all__ = [
    "DEAD_LETTER_SETUP",
    "FAILOVER",
    "GOODBYE",
    "LAST_DEAD",
    "NATS_RESTART",
    "NATS_STABLE_S",
    "NOT_STORED_NAK_S",
    "PULL_ROUND_WAIT_S",
    "TERMINAL_STORE",
    "TIER_WATCH_RETRY_S",
    "Backoff",
    "Stop",
    "TryAgain",
    "after_failure",
    "dead_letter_fetch_wait_s",
    "tier_watch_retry_s",
]


@dataclass(frozen=True, slots=True)
class TryAgain:
    """Wait `delay_s`, then try again."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class Stop:
    """Give up with the last error, at once."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Wait ``first_s * factor ** (n - 1)`` after the n-th failure, at most `max_s`. Give up at
    the `tries`-th failure, at a failure more than `within_s` after the first try, or at once on
    an error of a `never` type; None means no such limit."""

    first_s: float
    factor: float = 1.0
    tries: int | None = None
    within_s: float | None = None
    never: tuple[type[BaseException], ...] = ()
    max_s: float | None = None

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th failure (1-based), limits aside."""
        if self.max_s is not None and self.factor > 1:
            failures = min(failures, 2 + int(math.log(self.max_s / self.first_s, self.factor)))
        wait = self.first_s * self.factor ** (failures - 1)
        return wait if self.max_s is None else min(wait, self.max_s)


def after_failure(
    policy: Backoff, failures: int, elapsed_s: float = 0.0, error: BaseException | None = None
) -> TryAgain | Stop:
    """What to do after the `failures`-th failure (1-based), `elapsed_s` after the first try."""
    if failures < 1:
        raise ValueError(f"Failures has value {failures!r}. Must be 1 or more.")
    if error is not None and isinstance(error, policy.never):
        return Stop()
    if policy.tries is not None and failures >= policy.tries:
        return Stop()
    if policy.within_s is not None and elapsed_s > policy.within_s:
        return Stop()
    return TryAgain(policy.delay(failures))


TERMINAL_STORE = Backoff(first_s=0.2, factor=2.0, tries=5)
LAST_DEAD = Backoff(first_s=0.5, factor=2.0, max_s=4.0, tries=20)
FAILOVER = Backoff(first_s=0.5, within_s=30.0, never=(PermissionDenied,))
GOODBYE = Backoff(first_s=0.5, within_s=10.0, never=(PermissionDenied,))
DEAD_LETTER_SETUP = Backoff(first_s=0.5, tries=30)
NATS_RESTART = Backoff(first_s=0.5, factor=2.0, max_s=30.0)
# A nats-server that stayed up this long before it ended starts its back-off afresh.
NATS_STABLE_S = 60.0

# A delivery whose outcome could not be recorded (the worker's terminal event, the watcher's
# `dead`) is naked with this delay: it comes back once NATS may have recovered.
NOT_STORED_NAK_S = 1.0

# The longest the worker's pull loop waits between rounds; a round that failed (NATS away) is
# retried by the next one, this long later at most.
PULL_ROUND_WAIT_S = 0.5

# How soon a tier watch looks for its bucket or key again after it failed (TierWatch's default).
TIER_WATCH_RETRY_S = 2.0


def tier_watch_retry_s(heartbeat_interval_s: float) -> float:
    """A worker's tier-watch retry: four ping intervals, within 0.2 s and TIER_WATCH_RETRY_S."""
    return max(0.2, min(TIER_WATCH_RETRY_S, heartbeat_interval_s * 4))


def dead_letter_fetch_wait_s(connected: bool) -> float:
    """The dead-letter watcher's wait after a fetch that got nothing (or failed): brief while
    connected, longer while NATS is away."""
    return 0.05 if connected else 0.5
