"""Where every event is published, and the id it is stored under: one rule for every publisher.

An event's subject follows from the event and who says it (`Speaker`): a worker says the
lifecycle events of the jobs it holds under its own id (``<p>.job.<job>.<event>.<worker>``), so
NATS permissions hold it to that id; anyone else says them with four tokens.

The ``Nats-Msg-Id`` header and the CloudEvents ``id`` are the same string, derived from what the
event is about, so a repeated publish (a retry after a timeout, a second gateway, a restarted
worker) is one message within the stream's duplicate window:

==========================================  ===========================================
event                                       id
==========================================  ===========================================
submitted                                   ``<job_id>``
completed, failed, cancelled, dead          ``<job_id>:terminal`` (the first one counts)
rejected                                    ``<job_id>:rejected:<jobs_seq>`` (per submission)
started, retrying (and the retired claimed)  ``<job_id>:<event>:<attempt>``
cancel_requested                            ``<job_id>:cancel_requested``
heartbeat                                   ``<worker_id>:<boot_id>:hb:<n>``
registered, draining, deregistered          ``<worker_id>:<boot_id>:<event>``
rollup                                      ``<worker_id>:rollup:<hour>`` (epoch seconds)
invalid message                             ``invalid:<stream>:<seq>``
==========================================  ===========================================

A progress report, and an invalid-message record without a stream sequence, have no natural key:
they get a fresh random id (never deduplicated).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from jetgrid.events.base import Event
from jetgrid.events.invalid import InvalidMessage
from jetgrid.events.jobs import JobSubmitted
from jetgrid.events.lifecycle import (
    TERMINAL_EVENTS,
    JobCancelRequested,
    JobClaimed,
    JobRejected,
    JobRetrying,
    JobStarted,
)
from jetgrid.events.subjects import Subjects
from jetgrid.events.workers import (
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
    WorkerRollup,
)

__all__ = ["Address", "Speaker", "address", "event_name", "message_id"]

_PER_ATTEMPT = (JobClaimed, JobStarted, JobRetrying)
_WORKER_LIFECYCLE = (WorkerRegistered, WorkerDraining, WorkerDeregistered)


@dataclass(frozen=True, slots=True)
class Speaker:
    """Who publishes: the envelope's `source`, and for a worker its id and the boot it is in."""

    source: str
    worker_id: str | None = None
    boot_id: str | None = None

    @classmethod
    def worker(cls, worker_id: str, boot_id: str) -> Speaker:
        return cls(f"jetgrid/worker/{worker_id}", worker_id, boot_id)

    @classmethod
    def service(cls, name: str) -> Speaker:
        """A gateway, projector, watcher or command line tool: `jetgrid/<name>`."""
        return cls(f"jetgrid/{name}")


@dataclass(frozen=True, slots=True)
class Address:
    """The subject an event goes to and the id it is stored under."""

    subject: str
    msg_id: str


def event_name(event: Event) -> str:
    """The last part of the event's type: ``jetgrid.job.completed`` -> ``completed``."""
    return event.type.rsplit(".", 1)[-1]


def message_id(event: Event, speaker: Speaker) -> str:
    """The event's ``Nats-Msg-Id`` (and envelope id), by the table in the module docstring."""
    if isinstance(event, JobSubmitted):
        return event.job_id
    if isinstance(event, JobRejected):
        # Per refused submission, not `:terminal`: a refused message naming another job's id
        # must not take that job's outcome.
        return f"{event.job_id}:rejected:{event.jobs_seq}"
    if isinstance(event, TERMINAL_EVENTS):
        return f"{event.job_id}:terminal"
    if isinstance(event, _PER_ATTEMPT):
        return f"{event.job_id}:{event_name(event)}:{event.attempt}"
    if isinstance(event, JobCancelRequested):
        return f"{event.job_id}:cancel_requested"
    if isinstance(event, WorkerHeartbeat):
        return f"{event.worker_id}:{event.boot_id or speaker.boot_id}:hb:{event.n}"
    if isinstance(event, _WORKER_LIFECYCLE):
        boot = getattr(event, "boot_id", None) or speaker.boot_id
        return f"{event.worker_id}:{boot}:{event_name(event)}"
    if isinstance(event, WorkerRollup):
        return f"{event.worker_id}:rollup:{event.hour}"
    if isinstance(event, InvalidMessage) and event.seq is not None:
        return f"invalid:{event.stream}:{event.seq}"
    return uuid.uuid4().hex


def _subject(event: Event, subjects: Subjects, speaker: Speaker) -> str:
    if isinstance(event, JobSubmitted):
        return subjects.submit(event.pool, event.model, event.priority, event.tenant, event.lane)
    if isinstance(event, InvalidMessage):
        return subjects.invalid(event.stream)
    if isinstance(event, WorkerRollup):
        return subjects.rollup(event.worker_id)
    if isinstance(event, WorkerHeartbeat | WorkerRegistered | WorkerDraining | WorkerDeregistered):
        return subjects.worker_event(event.worker_id, event_name(event))
    job_id = getattr(event, "job_id", None)
    if not isinstance(job_id, str):
        raise TypeError(f"No subject for a {event.type!r} event: it names no job or worker.")
    return subjects.job_event(job_id, event_name(event), speaker.worker_id)


def address(event: Event, subjects: Subjects, speaker: Speaker) -> Address:
    """Where `speaker` publishes `event`, and under which id."""
    return Address(_subject(event, subjects, speaker), message_id(event, speaker))
