"""Reading one stored submission back by its JOBS sequence: the one recipe for it.

Used where an event names a job's `jobs_seq` and the reader needs the submission itself (the
webhook service, `jetgrid usage`); it decodes exactly as every consumer of JOBS does
(events.codec.decode_submission).
"""

from __future__ import annotations

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.events import Envelope, InvalidEvent, JobSubmitted, now
from jetgrid.events.codec import decode_submission

__all__ = ["submission_at"]


async def submission_at(bus: Bus, settings: Settings, seq: int, job_id: str) -> Envelope | None:
    """The submission of `job_id` stored at JOBS `seq`; None when that message is gone (aged
    out, purged), is not a valid submission, or is another job's."""
    stored = await bus.message(settings.streams.jobs, seq)
    if stored is None:
        return None
    try:
        env = decode_submission(
            stored.data,
            subject=stored.subject,
            subjects=settings.subjects,
            seq=stored.seq,
            stream_time=stored.time or now(),
        )
    except InvalidEvent:
        return None
    job = env.event
    return env if isinstance(job, JobSubmitted) and job.job_id == job_id else None
