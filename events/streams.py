"""The streams jetgrid keeps, as plain data. Provisioning (coordinator.provision) applies them.

Every stream keeps Limits retention: the log must stay replayable, so work is shared by durable
pull consumers, never by WorkQueue retention.

**How long each stream keeps messages** (`Retention`, `RETENTION_DEFAULTS`): an age and a size,
whichever is reached first drops the oldest messages. Raw pings (WORKERS) for 7 days: the
longest default uptime window is 24 h, so a week covers every window with room for an outage of
the projector. Jobs and their lifecycle (JOBS, JOB_EVENTS), invalid records and dead letters for
30 days: long enough to audit a month and to run `jetgrid archive` before anything ages out.
Hour rollups of pings (ROLLUPS, projections.rollup) forever: a few hundred bytes per worker and
hour, they are what keeps uptime, tiers and the audit answerable once raw pings are gone (a
separate stream, since JetStream's age limit is per stream, not per subject).
Token chunks (TOKENS, ``<prefix>.tokens.<job>.<worker>``, worker.tokens) for 1 hour, in memory
(`TOKENS_STORAGE`): long enough to resume a stream after a dropped connection or a gateway
restart; kept off disk because the servers sync every write (``sync_interval: always``), which
holds a file stream to a few thousand chunks per second, and a chunk lost with a restarted
server only makes a resumed stream take the rest from the job's `completed` output.
No stream has a size cap by default: JetStream reserves a stream's max_bytes from the server's
storage when the stream is created, so a default cap would make servers with small disks refuse
the streams; a deployment sets one (``"7d,200GiB"``) where its disk is known. JOBS never gets a
size cap (`check_retention`): a size cap drops the oldest messages whatever
their age, so a queued job could vanish under a burst of new ones; by age, a job can only age
out after waiting the whole retention (at least a day). `parse_retention` reads the settings'
form, ``"7d"``, ``"30d,20GiB"`` or ``"0"`` (forever).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from jetgrid.events.errors import ConfigError
from jetgrid.events.subjects import Subjects

JOBS = "JOBS"
JOB_EVENTS = "JOB_EVENTS"
WORKERS = "WORKERS"
INVALID = "INVALID"
DEAD_LETTERS = "DEAD_LETTERS"
ROLLUPS = "ROLLUPS"
TOKENS = "TOKENS"
# JetStream's advisory when a consumer gives up on a message: `.<stream>.<consumer>` follows.
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
LOGICAL_NAMES = (JOBS, JOB_EVENTS, WORKERS, INVALID, ROLLUPS, TOKENS)

_DAY = 86400.0
_GIB = 1024**3
# The shortest age JOBS may keep a submission: a job waits for a worker at least this long.
MIN_JOBS_AGE_S = _DAY


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a stream keeps messages: `max_age_s` (0: no age limit) and `max_bytes` (-1: no
    size limit); the first limit reached drops the oldest messages."""

    max_age_s: float = 0.0
    max_bytes: int = -1


RETENTION_DEFAULTS: dict[str, Retention] = {
    WORKERS: Retention(7 * _DAY),
    JOBS: Retention(30 * _DAY),
    JOB_EVENTS: Retention(30 * _DAY),
    INVALID: Retention(30 * _DAY),
    DEAD_LETTERS: Retention(30 * _DAY),
    ROLLUPS: Retention(),
    TOKENS: Retention(3600.0),
}
# Storage of each stream: "file" unless named here (settings.tokens_storage overrides TOKENS).
TOKENS_STORAGE = "memory"

_AGE_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)?$")
_SIZE_RE = re.compile(r"^(\d+)(b|kib|mib|gib|tib|kb|mb|gb|tb)?$")
_AGE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": _DAY, None: 1.0}
_SIZE_UNITS = {
    None: 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": _GIB, "tib": 1024**4,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
}  # fmt: skip


def parse_retention(value: str, setting: str = "retention") -> Retention:
    """``"7d"``, ``"12h,5GiB"``, ``"0"`` (forever), ``"0,10GiB"`` (size only) -> Retention."""
    age_text, _, size_text = value.replace(" ", "").lower().partition(",")
    age = _AGE_RE.match(age_text)
    size = _SIZE_RE.match(size_text) if size_text else None
    if not age or (size_text and not size):
        raise ConfigError(
            f"Setting {setting} has value {value!r}, which is not a retention such as '7d', "
            "'30d,20GiB' or '0' (keep forever)."
        )
    max_bytes = int(size.group(1)) * _SIZE_UNITS[size.group(2)] if size else -1
    return Retention(float(age.group(1)) * _AGE_UNITS[age.group(2)], max_bytes or -1)


def check_retention(logical: str, retention: Retention) -> Retention:
    """`retention` if JetStream may apply it to stream `logical`, else ConfigError: JOBS takes no
    size cap and no age under MIN_JOBS_AGE_S, so no queued job is dropped early."""
    if logical == JOBS and retention.max_bytes != -1:
        raise ConfigError(
            f"JOBS retention has a size cap of {retention.max_bytes} bytes, which would drop "
            "queued jobs under a burst of submissions; give JOBS an age only, e.g. '30d'."
        )
    if logical == JOBS and 0 < retention.max_age_s < MIN_JOBS_AGE_S:
        raise ConfigError(
            f"JOBS retention of {retention.max_age_s:g} s is shorter than a day, so queued jobs "
            "would age out before a worker could take them; give JOBS at least '1d'."
        )
    return retention


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
    storage: str = "file"  # or "memory"


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

    @property
    def rollups(self) -> str:
        return self(ROLLUPS)

    @property
    def tokens(self) -> str:
        return self(TOKENS)

    # The KV buckets and object stores beside the streams, under the same prefix: the one
    # definition (coordinator.settings.Settings and coordinator.roles.Deployment read these).
    @property
    def tiers_bucket(self) -> str:
        """KV bucket where the projector publishes each worker's current tier."""
        return self("TIERS")

    @property
    def snapshot_bucket(self) -> str:
        """Object store of the projector's read-model snapshots (projections.snapshot)."""
        return self("SNAPSHOTS")

    @property
    def files_bucket(self) -> str:
        """Object store of uploaded and batch output files (gateway.files)."""
        return self("FILES")

    @property
    def batches_bucket(self) -> str:
        """KV bucket of batch records and their lines' outcomes (gateway.batches)."""
        return self("BATCHES")


def stream_specs(
    subjects: Subjects,
    names: StreamNames,
    *,
    replicas: int = 1,
    duplicate_window_s: float = 3600.0,
    retention: Mapping[str, Retention] | None = None,
    tokens_storage: str = TOKENS_STORAGE,
) -> tuple[StreamSpec, ...]:
    """The streams of DESIGN section 2 (and ROLLUPS, TOKENS) for one deployment, each with its
    retention (`retention[logical]`, else RETENTION_DEFAULTS); TOKENS on `tokens_storage`."""
    p = subjects.prefix

    def spec(
        logical: str, subjects_: tuple[str, ...], description: str, storage: str = "file"
    ) -> StreamSpec:
        keep = check_retention(logical, (retention or {}).get(logical, RETENTION_DEFAULTS[logical]))
        return StreamSpec(
            logical,
            names(logical),
            subjects_,
            description,
            replicas=replicas,
            duplicate_window_s=duplicate_window_s,
            max_age_s=keep.max_age_s,
            max_bytes=keep.max_bytes,
            storage=storage,
        )

    return (
        spec(JOBS, subjects.submission_subjects(), "jetgrid job submissions"),
        spec(JOB_EVENTS, subjects.job_event_stream_subjects(), "jetgrid job lifecycle"),
        spec(WORKERS, (f"{p}.worker.*.*",), "jetgrid worker registrations and pings"),
        spec(INVALID, (f"{p}.invalid.*",), "jetgrid messages that failed validation"),
        spec(ROLLUPS, (subjects.rollups(),), "jetgrid hour rollups of worker pings"),
        spec(
            TOKENS,
            (subjects.token_streams("*"),),
            "jetgrid token chunks of running jobs",
            tokens_storage,
        ),
    )


def dead_letter_spec(
    names: StreamNames,
    *,
    replicas: int = 1,
    duplicate_window_s: float = 3600.0,
    retention: Retention | None = None,
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
        max_age_s=(retention or RETENTION_DEFAULTS[DEAD_LETTERS]).max_age_s,
        max_bytes=(retention or RETENTION_DEFAULTS[DEAD_LETTERS]).max_bytes,
    )
