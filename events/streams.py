"""The streams jetgrid keeps, as plain data. Provisioning (coordinator.provision) applies them.

Every stream keeps Limits retention: the log must stay replayable, so work is shared by durable
pull consumers, never by WorkQueue retention.
"""

from __future__ import annotations

from dataclasses import dataclass

from jetgrid.events.subjects import Subjects

JOBS = "JOBS"
JOB_EVENTS = "JOB_EVENTS"
WORKERS = "WORKERS"
INVALID = "INVALID"
DEAD_LETTERS = "DEAD_LETTERS"
# JetStream's advisory when a consumer gives up on a message: `.<stream>.<consumer>` follows.
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
LOGICAL_NAMES = (JOBS, JOB_EVENTS, WORKERS, INVALID)


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What one stream should look like; `logical` is its name without the deployment prefix."""

    logical: str
    name: str
    subjects: tuple[str, ...]
    description: str
    replicas: int = 1
    duplicate_window_s: float = 3600.0
    max_age_s: float = 0.0  # 0 = keep forever
    max_bytes: int = -1
    max_msg_size: int = -1


@dataclass(frozen=True, slots=True)
class StreamNames:
    """Concrete stream names: the logical name behind an optional prefix (``T1_`` in tests)."""

    prefix: str = ""

    def __call__(self, logical: str) -> str:
        return f"{self.prefix}{logical}"

    @property
    def jobs(self) -> str:
        return self(JOBS)

    @property
    def job_events(self) -> str:
        return self(JOB_EVENTS)

    @property
    def workers(self) -> str:
        return self(WORKERS)

    @property
    def invalid(self) -> str:
        return self(INVALID)


def stream_specs(
    subjects: Subjects,
    names: StreamNames,
    *,
    replicas: int = 1,
    duplicate_window_s: float = 3600.0,
    max_age_s: float = 0.0,
) -> tuple[StreamSpec, ...]:
    """The four streams of DESIGN section 2 for one deployment."""
    p = subjects.prefix

    def spec(logical: str, subjects_: tuple[str, ...], description: str) -> StreamSpec:
        return StreamSpec(
            logical,
            names(logical),
            subjects_,
            description,
            replicas=replicas,
            duplicate_window_s=duplicate_window_s,
            max_age_s=max_age_s,
        )

    return (
        spec(JOBS, subjects.submission_subjects(), "jetgrid job submissions"),
        spec(JOB_EVENTS, subjects.job_event_stream_subjects(), "jetgrid job lifecycle"),
        spec(WORKERS, (f"{p}.worker.*.*",), "jetgrid worker registrations and pings"),
        spec(INVALID, (f"{p}.invalid.*",), "jetgrid messages that failed validation"),
    )


def dead_letter_spec(
    names: StreamNames, *, replicas: int = 1, duplicate_window_s: float = 3600.0
) -> StreamSpec:
    """The stream that captures JetStream's max-deliveries advisories for the JOBS consumers.

    Advisories are core-NATS messages: a watcher that is disconnected when one is sent would
    miss it and the job would never be marked dead. Stored here, they wait for a watcher.
    """
    return StreamSpec(
        DEAD_LETTERS,
        names(DEAD_LETTERS),
        (f"{MAX_DELIVERIES_ADVISORY}.{names.jobs}.*",),
        "jetgrid max-deliveries advisories of the job consumers",
        replicas=replicas,
        duplicate_window_s=duplicate_window_s,
    )
