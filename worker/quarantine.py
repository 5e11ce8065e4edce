"""What a job's earlier deliveries did, read back from JOB_EVENTS for the quarantine rule.

`run_history` walks the job's stored `started` and `retrying` events (workers publish them under
their own id, ``<p>.job.<job>.<event>.<worker>``) with direct gets and returns the attempts of
each; coordinator.delivery.quarantine_reason decides from those. Messages that are not valid
events are skipped.
"""

from __future__ import annotations

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.events import InvalidEvent, decode

__all__ = ["run_history"]

# A bound on the events read per kind: far more than any pool's max_deliver.
MAX_EVENTS = 256


async def _attempts(bus: Bus, stream: str, subject: str) -> set[int]:
    attempts: set[int] = set()
    seq = 1
    for _ in range(MAX_EVENTS):
        msg = await bus.message(stream, seq, subject=subject, next=True)
        if msg is None:
            break
        seq = msg.seq + 1
        try:
            attempt = getattr(decode(msg.data).event, "attempt", None)
        except InvalidEvent:
            continue
        if isinstance(attempt, int):
            attempts.add(attempt)
    return attempts


async def run_history(bus: Bus, settings: Settings, job_id: str) -> tuple[set[int], set[int]]:
    """(attempts that started the job, attempts that ended with `retrying`)."""
    stream = settings.streams.job_events
    subjects = settings.subjects
    started = await _attempts(bus, stream, subjects.job_event(job_id, "started") + ".*")
    retried = await _attempts(bus, stream, subjects.job_event(job_id, "retrying") + ".*")
    return started, retried
