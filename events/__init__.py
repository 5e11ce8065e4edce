"""The event catalogue and wire format: models, envelope, subjects, streams, codec.

This package imports nothing else of jetgrid's; every other package reads and writes the log
through it.
"""

from jetgrid.events.base import Event
from jetgrid.events.catalogue import ANY_EVENT, BY_TYPE, EVENT_TYPES, UPCASTERS, AnyEvent, upcast
from jetgrid.events.codec import (
    Envelope,
    decode,
    decode_submission,
    derived_job_id,
    encode,
    explain,
    format_time,
    load_json,
    now,
    parse_time,
)
from jetgrid.events.errors import ConfigError, InvalidEvent, InvalidSubject, JetgridError
from jetgrid.events.invalid import InvalidMessage
from jetgrid.events.jobs import JobKind, JobSubmitted, Priority
from jetgrid.events.lifecycle import (
    TERMINAL_EVENTS,
    TERMINAL_NAMES,
    JobCancelled,
    JobCancelRequested,
    JobClaimed,
    JobCompleted,
    JobDead,
    JobFailed,
    JobProgress,
    JobRetrying,
    JobStarted,
    TerminalEvent,
)
from jetgrid.events.streams import (
    DEAD_LETTERS,
    INVALID,
    JOB_EVENTS,
    JOBS,
    WORKERS,
    StreamNames,
    StreamSpec,
    dead_letter_spec,
    stream_specs,
)
from jetgrid.events.subjects import Subjects, check_id, decode_model, encode_model
from jetgrid.events.workers import (
    GpuTelemetry,
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
)

__all__ = [
    "ANY_EVENT",
    "BY_TYPE",
    "DEAD_LETTERS",
    "EVENT_TYPES",
    "INVALID",
    "JOBS",
    "JOB_EVENTS",
    "TERMINAL_EVENTS",
    "TERMINAL_NAMES",
    "UPCASTERS",
    "WORKERS",
    "AnyEvent",
    "ConfigError",
    "Envelope",
    "Event",
    "GpuTelemetry",
    "InvalidEvent",
    "InvalidMessage",
    "InvalidSubject",
    "JetgridError",
    "JobCancelRequested",
    "JobCancelled",
    "JobClaimed",
    "JobCompleted",
    "JobDead",
    "JobFailed",
    "JobKind",
    "JobProgress",
    "JobRetrying",
    "JobStarted",
    "JobSubmitted",
    "Priority",
    "StreamNames",
    "StreamSpec",
    "Subjects",
    "TerminalEvent",
    "WorkerDeregistered",
    "WorkerDraining",
    "WorkerHeartbeat",
    "WorkerRegistered",
    "check_id",
    "dead_letter_spec",
    "decode",
    "decode_model",
    "decode_submission",
    "derived_job_id",
    "encode",
    "encode_model",
    "explain",
    "format_time",
    "load_json",
    "now",
    "parse_time",
    "stream_specs",
    "upcast",
]
