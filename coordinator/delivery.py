"""Delivery rules as plain functions: how many deliveries a pool consumer allows and which of
them only records the outcome, what a worker does after a transient failure, how often it tells
JetStream a long job is still running, which priority consumer it pulls from next, what a
max-deliveries advisory says, and when a job's cancel request needs a lookup.

Nothing here does I/O; the worker's parts (worker/pulling.py, worker/jobs.py, worker/outcomes.py,
worker/cancels.py) and worker/deadletter.py act on the answers. How long to wait before trying
an operation again is coordinator/backoff.py's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from jetgrid.coordinator.pools import PoolConfig
from jetgrid.events import InvalidEvent, load_json
from jetgrid.events.subjects import PRIORITIES


# -- transient failures ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Retry:
    """Nak with this delay and publish `retrying`."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The last run failed: store `dead`, then nak at once. The nak brings the recording
    delivery (see `consumer_max_deliver`), after which JetStream's max-deliveries advisory makes
    the dead-letter watchers publish the same `dead` (dropped as a duplicate)."""


# A pool runs a job at most `max_deliver` times. Its consumer allows one delivery more, which
# never runs the job: whoever receives it stores `dead` (the last error from the job's
# `retrying` events as the reason) and naks, which ends the deliveries. So `dead` does not hang
# on JetStream's max-deliveries advisory alone: that advisory is core NATS, lost if DEAD_LETTERS
# is electing a leader at that moment, and a worker killed between the last run and storing
# `dead` still leaves the recording delivery, which JetStream hands to a worker of the pool
# after AckWait. A job ends without a terminal event only if both the recording delivery's
# store and the advisory are lost.
RECORDING_DELIVERIES = 1


def consumer_max_deliver(runs: int) -> int:
    """The pool consumer's MaxDeliver for a pool that runs a job at most `runs` times."""
    return runs + RECORDING_DELIVERIES


def runs_before(deliveries: int) -> int:
    """How many of a pool consumer's `deliveries` ran the job (the recording one did not)."""
    return max(1, deliveries - RECORDING_DELIVERIES)


def is_recording_delivery(attempt: int, pool: PoolConfig) -> bool:
    """Delivery `attempt` (1-based) comes after the last run: record `dead`, do not run."""
    return attempt > pool.max_deliver


def after_transient(attempt: int, pool: PoolConfig) -> Retry | GiveUp:
    """What to do after delivery `attempt` (1-based) failed transiently in `pool`."""
    if attempt >= pool.max_deliver:
        return GiveUp()
    return Retry(pool.retry_delay(attempt))


# -- quarantine --------------------------------------------------------------------------------
# A run that ends with no outcome (no `retrying`, no terminal event) is one whose worker died
# while running it, or was stopped before it could say: JetStream redelivers it after AckWait.
# A job that does that `pool.quarantine_after` times is ended `dead` instead of run again, so
# one poisonous job cannot take down worker after worker until MaxDeliver.
def may_quarantine(attempt: int, pool: PoolConfig) -> bool:
    """Could delivery `attempt` find enough runs with no outcome before it to quarantine?"""
    return attempt > pool.quarantine_after


def runs_without_outcome(attempt: int, started: Iterable[int], ended: Iterable[int]) -> list[int]:
    """The deliveries before `attempt` that started the job and ended with no outcome (no
    `retrying` of the same attempt), in order. A redelivery started the job when it said
    `started`; the first delivery always counts as started: its worker says `started` only once
    the run has lasted a moment (worker.outcomes), so a worker that died sooner left none."""
    done = set(ended)
    runs = set(started) | {1}
    return sorted({a for a in runs if 1 <= a < attempt and a not in done})


def quarantine_reason(
    attempt: int, started: Iterable[int], ended: Iterable[int], pool: PoolConfig
) -> str | None:
    """The `dead` reason if delivery `attempt` must not run the job (see above), else None."""
    lost = runs_without_outcome(attempt, started, ended)
    if len(lost) < pool.quarantine_after:
        return None
    return (
        f"quarantined: {len(lost)} runs (deliveries {', '.join(map(str, lost))}) ended with no "
        f"outcome, as when the job kills the worker running it (pool {pool.name!r} allows "
        f"{pool.quarantine_after}); it is not run again"
    )


# -- timeouts ----------------------------------------------------------------------------------
def keepalive_period(ack_wait_s: float) -> float:
    """Seconds between in-progress acks: a third of AckWait, so two may be lost in a row."""
    return max(ack_wait_s / 3, 0.05)


# -- priorities --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Pull:
    """One pull request: `n` messages from the `priority` consumer; `wait` = long poll."""

    priority: str
    n: int
    wait: bool


def next_pull(free: int, swept: Sequence[str], got_any: bool) -> Pull | None:
    """The next request of a pull sweep, or None when the sweep is over.

    A sweep asks each priority's consumers in turn, highest first, with no-wait requests for
    the `free` slots the worker may fill (its free slots within its pull budget; the server
    answers at once with what it has), so a backlogged pool always hands out high before normal
    before low. Only when a whole sweep found nothing does the
    worker park a long poll, on the normal consumer (where most jobs arrive, and every job of a
    client that knows nothing of priorities); high and low jobs that arrive in an idle pool are
    found by the next sweep, at most one long poll (Puller.expires_s) later.
    """
    if free <= 0:
        return None
    for p in PRIORITIES:
        if p not in swept:
            return Pull(p, free, wait=False)
    if not got_any:
        return Pull("normal", free, wait=True)
    return None


# -- dead letters ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MaxDeliveries:
    """A max-deliveries advisory: the message at `stream_seq` of `stream` is given up."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


def parse_max_deliveries(data: bytes) -> MaxDeliveries | None:
    """The advisory's facts, or None if the bytes are not a max-deliveries advisory."""
    try:
        obj: Any = load_json(data)
    except InvalidEvent:
        return None
    if not isinstance(obj, dict) or "max_deliver" not in str(obj.get("type", "")):
        return None
    seq, n = obj.get("stream_seq"), obj.get("deliveries")
    stream, consumer = obj.get("stream"), obj.get("consumer")
    if not (isinstance(seq, int) and seq >= 1 and isinstance(n, int) and n >= 1):
        return None
    if not (isinstance(stream, str) and isinstance(consumer, str)):
        return None
    return MaxDeliveries(stream, consumer, seq, n)


def dead_reason(runs: int, last_error: str | None = None) -> str:
    """The reason a `dead` event carries."""
    base = f"gave up after {runs} deliveries (MaxDeliver reached)"
    return f"{base}; last error: {last_error}" if last_error else base


# -- cancels -----------------------------------------------------------------------------------
# How far a worker's clock may run behind the NATS server's before `cancel_heard_live` could
# wrongly skip a lookup. NTP keeps fleets within milliseconds; this is three orders more.
CLOCK_MARGIN_S = 2.0
# How far the clocks of two NATS servers of one cluster may differ (both keep NTP time).
SERVER_CLOCK_MARGIN_S = 0.25


def cancel_heard_live(
    submitted_s: float, listening_since_s: float, margin_s: float = CLOCK_MARGIN_S
) -> bool:
    """Would the worker's live cancel listener have heard every cancel request for this job?

    `submitted_s`: the job's JOBS stream time (server clock); `listening_since_s`: since when
    the listener has been subscribed on an unbroken connection (worker clock; inf while down).
    A cancel request is for a submitted job, so it comes after the submission; if that was
    after the listener went live (by more than the clock margin), the listener got it, and the
    stored-request lookup before the job starts can be skipped. A redelivered or backlogged
    job, or one submitted around a reconnect, is looked up.
    """
    return submitted_s > listening_since_s + margin_s


def cancel_is_for(requested_s: float, submitted_s: float, margin_s: float = CLOCK_MARGIN_S) -> bool:
    """Is a cancel request, made at `requested_s`, about the submission made at `submitted_s`?

    A request is for a submitted job, so one made before the submission (by more than the clock
    margin) was placed in advance for an id someone else's job would later take (a derived
    `seq-<N>` one, say): it must not cancel that job. Both times are in seconds; the request's is
    the server's stream time when it was read back, or the worker's clock when heard live.
    """
    return requested_s >= submitted_s - margin_s
