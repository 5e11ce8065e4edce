"""Who may say what on the bus: the NATS permissions of each jetgrid role, as plain data.

A forged ping or result is a forged fact in the audit log, so every process connects as a user
whose permissions allow only what its component does. The roles:

    admin      provisioning (`jetgrid provision`): no restrictions; the only role that may
               create, update or delete streams and durable consumers other than pool consumers
    gateway    submits jobs and cancel requests; reads the log (ordered consumers), the tiers
               bucket and token streams; may publish `dead` (the dead-letter watcher) and
               `expired` (its sweep of jobs queued past their deadline)
    projector  reads the log; writes the tiers KV bucket (and may create it) and the
               read-model snapshot object store; publishes `dead` (the dead-letter watcher),
               invalid-event records and hour rollups of pings (`<prefix>.rollup.<worker>`)
    client     a person or SDK with the `nats` CLI: submits jobs (not `python` jobs unless
               allowed), requests cancels, reads job events and tokens; no worker or lifecycle
               event except `cancel_requested`. Its tenant (coordinator.share) is its user
               name: it may queue into its own tenant queue only
               (`<prefix>.jobs.<pool>.<model>.<priority>.<its name>`)
    worker     one user per worker id (`worker-<id>`): its own registration and pings, job
               lifecycle events under its own id (`<prefix>.job.<job>.<event>.<id>`),
               pulls/acks on pool consumers of JOBS, invalid records for JOBS, token chunks
               under its own id (`<prefix>.tokens.<job>.<id>`); reads the tiers bucket and
               cancel requests. Unless limited to the (pool, model)s it serves, it may also
               create tenant-queue consumers and read the JOBS stream's counts (fair share)

Every user gets a private inbox prefix, ``_INBOX_<user>`` (a user may subscribe only under its
own), so no one can read another's request replies, pull deliveries or acks. A worker's job
events and token chunks end in its own id, so it cannot speak for another worker; the projector
checks that the payload's `worker_id` matches that token (see `README.md`, "Roles and
credentials").

Pure: strings in, strings out. `coordinator.natsconf` renders these into nats-server config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jetgrid.coordinator.consumers import consumer_name
from jetgrid.events import DEAD_LETTERS, INVALID, JOB_EVENTS, JOBS, WORKERS, ConfigError, check_id
from jetgrid.events.streams import MAX_DELIVERIES_ADVISORY, ROLLUPS, TOKENS, StreamNames
from jetgrid.events.subjects import JOB_EVENT_NAMES, PRIORITIES, encode_tenant

# The durable consumer on JOB_EVENTS that every webhook service shares (coordinator.provision).
WEBHOOK_CONSUMER = "webhooks"
# The durable consumer on DEAD_LETTERS that every dead-letter watcher shares.
DEAD_LETTER_CONSUMER = "deadletter"

ADMIN = "admin"
GATEWAY = "gateway"
PROJECTOR = "projector"
CLIENT = "client"
WORKER = "worker"
ROLES = (ADMIN, GATEWAY, PROJECTOR, CLIENT, WORKER)
SERVICE_USERS = (ADMIN, GATEWAY, PROJECTOR, CLIENT)

# Lifecycle events a worker may publish about the jobs it runs; `cancel_requested` is not its to
# say, and `dead` it says only as a dead-letter watcher (allowed separately).
WORKER_JOB_EVENTS = tuple(n for n in JOB_EVENT_NAMES if n not in ("cancel_requested", "dead"))
PYTHON_MODEL_TOKEN = "python"
API = "$JS.API"

_ENV_SAFE = re.compile(r"[^A-Z0-9]")


@dataclass(frozen=True, slots=True)
class Permissions:
    """Allowed and denied subjects for publish and subscribe (deny wins in nats-server)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Deployment:
    """The names permissions are about: one deployment's subject and stream prefixes."""

    subject_prefix: str = "jetgrid"
    stream_prefix: str = ""
    # The KV bucket the projector writes worker tiers to (KV stream `KV_<bucket>`); empty means
    # the default, `<stream_prefix>TIERS` (as Settings.tiers_bucket).
    tiers_bucket: str = ""
    # Roles allowed to submit `<prefix>.jobs.<pool>.python` (remote Python functions).
    python_submitters: tuple[str, ...] = (GATEWAY,)

    def stream(self, logical: str) -> str:
        return f"{self.stream_prefix}{logical}"

    @property
    def streams(self) -> StreamNames:
        """Stream, bucket and object store names under `stream_prefix` (events.streams)."""
        return StreamNames(self.stream_prefix)

    @property
    def bucket(self) -> str:
        return self.tiers_bucket or self.streams.tiers_bucket

    @property
    def tiers_stream(self) -> str:
        return f"KV_{self.bucket}"


@dataclass(frozen=True, slots=True)
class User:
    """One NATS user: its role, and for a worker its id and optionally the (pool, model)s it
    serves (then it may use only those pool consumers; otherwise any pool consumer of JOBS)."""

    name: str
    role: str
    worker_id: str | None = None
    serves: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"Role {self.role!r} is not one of {', '.join(ROLES)}.")
        check_id(self.name, "NATS user name")
        if self.role == WORKER and not self.worker_id:
            raise ConfigError(f"User {self.name!r} has role worker but no worker id.")


def worker_user_name(worker_id: str) -> str:
    """The NATS user of one worker: ``worker-<id>``."""
    return f"worker-{check_id(worker_id, 'worker id')}"


def worker_user(worker_id: str, serves: tuple[tuple[str, str], ...] = ()) -> User:
    return User(worker_user_name(worker_id), WORKER, worker_id=worker_id, serves=serves)


def service_user(role: str) -> User:
    return User(role, role)


def inbox_prefix(user: str) -> str:
    """The private inbox prefix of `user`; its replies and pull deliveries arrive under it."""
    return f"_INBOX_{user}"


def password_env(user: str) -> str:
    """Environment variable that holds `user`'s password (compose, `nats-config --env-secrets`)."""
    return "JETGRID_NATS_PASSWORD_" + _ENV_SAFE.sub("_", user.upper())


def _read_stream(stream: str) -> list[str]:
    """Read a stream: info, ephemeral (ordered) consumers, direct and message gets, flow control.

    Only unnamed consumer creation (`CONSUMER.CREATE.<stream>`): a reader cannot create or
    overwrite a named (durable) consumer such as a pool's.
    """
    return [
        f"{API}.STREAM.INFO.{stream}",
        f"{API}.CONSUMER.CREATE.{stream}",
        # nats-py's KV watch asks for its ordered consumer's info; reading info changes nothing.
        f"{API}.CONSUMER.INFO.{stream}.*",
        f"{API}.DIRECT.GET.{stream}",
        f"{API}.DIRECT.GET.{stream}.>",
        f"{API}.STREAM.MSG.GET.{stream}",
        f"$JS.FC.{stream}.>",
    ]


def _pool_consumers(d: Deployment, user: User) -> list[str]:
    """Pull, ack, info and create on pool consumers of JOBS (all, or only those it serves, at
    every priority)."""
    jobs = d.stream(JOBS)
    p = d.subject_prefix
    names = [
        consumer_name(pool, model, priority)
        for pool, model in user.serves
        for priority in PRIORITIES
    ] or ["*"]
    out: list[str] = []
    for name in names:
        out += [
            f"{API}.CONSUMER.INFO.{jobs}.{name}",
            f"{API}.CONSUMER.MSG.NEXT.{jobs}.{name}",
            f"$JS.ACK.{jobs}.{name}.>",
            # Create (never delete) the consumer, only with a submission-subject filter
            # (normal priority: four tokens; high and low: a fifth, the priority).
            f"{API}.CONSUMER.CREATE.{jobs}.{name}.{p}.jobs.*.*",
            f"{API}.CONSUMER.CREATE.{jobs}.{name}.{p}.jobs.*.*.*",
        ]
    if not user.serves:  # tenant queues of fair-share pools: consumers made on demand
        out += [
            f"{API}.CONSUMER.CREATE.{jobs}.*.{p}.jobs.*.*.*.*",
            f"{API}.CONSUMER.CREATE.{jobs}.*.{p}.jobs.*.*.*.*.*",  # affinity lanes
            f"{API}.STREAM.INFO.{jobs}",
        ]
    return out


def _direct_get(stream: str) -> list[str]:
    """Read single messages of a stream (by sequence or last by subject), nothing else."""
    return [f"{API}.DIRECT.GET.{stream}", f"{API}.DIRECT.GET.{stream}.>",
            f"{API}.STREAM.MSG.GET.{stream}"]  # fmt: skip


def _dead_letters(d: Deployment) -> list[str]:
    """Run a dead-letter watcher: the DEAD_LETTERS stream's info and its shared `deadletter`
    consumer (create if missing, pull, ack)."""
    dl = d.stream(DEAD_LETTERS)
    return [
        f"{API}.STREAM.INFO.{dl}",
        f"{API}.CONSUMER.INFO.{dl}.{DEAD_LETTER_CONSUMER}",
        f"{API}.CONSUMER.CREATE.{dl}.{DEAD_LETTER_CONSUMER}",
        f"{API}.CONSUMER.DURABLE.CREATE.{dl}.{DEAD_LETTER_CONSUMER}",
        f"{API}.CONSUMER.MSG.NEXT.{dl}.{DEAD_LETTER_CONSUMER}",
        f"$JS.ACK.{dl}.{DEAD_LETTER_CONSUMER}.>",
    ]


def _batches_and_webhooks(d: Deployment) -> list[str]:
    """The Batch API's files (object store) and records (KV, with the ephemeral consumers that
    count a batch's ended lines), and the webhook services' shared consumer on JOB_EVENTS with
    their dead-letter records (`<prefix>.invalid.WEBHOOKS`)."""
    files, batches = d.streams.files_bucket, d.streams.batches_bucket
    kv, events = f"KV_{batches}", d.stream(JOB_EVENTS)
    hooks = WEBHOOK_CONSUMER
    return [
        f"$O.{files}.>",
        f"{API}.STREAM.PURGE.OBJ_{files}",
        f"{API}.STREAM.NAMES",
        *_read_stream(f"OBJ_{files}"),
        f"$KV.{batches}.>",
        *_read_stream(kv),
        f"{API}.CONSUMER.DELETE.{kv}.*",
        f"{API}.CONSUMER.INFO.{events}.{hooks}",
        f"{API}.CONSUMER.MSG.NEXT.{events}.{hooks}",
        f"$JS.ACK.{events}.{hooks}.>",
        f"{d.subject_prefix}.invalid.WEBHOOKS",
    ]


def permissions(user: User, d: Deployment) -> Permissions | None:
    """The permissions of `user` in deployment `d`; None means unrestricted (admin)."""
    p = d.subject_prefix
    inbox = f"{inbox_prefix(user.name)}.>"
    jobs, events, workers, invalid = (d.stream(s) for s in (JOBS, JOB_EVENTS, WORKERS, INVALID))
    advisory = f"{MAX_DELIVERIES_ADVISORY}.{jobs}.*"
    tiers_read = _read_stream(d.tiers_stream)
    submit = (f"{p}.jobs.*.*", f"{p}.jobs.*.*.*")  # normal, and high/low with a priority token
    py = f"{p}.jobs.*.{PYTHON_MODEL_TOKEN}"
    python_deny = (
        () if user.role in d.python_submitters else (py, f"{py}.*", f"{py}.*.*", f"{py}.*.*.*")
    )
    if user.role == ADMIN:
        return None
    if user.role == GATEWAY:
        return Permissions(
            publish=(
                *submit,
                f"{p}.jobs.*.*.*.*",  # any tenant's queue: the gateway names the key's
                f"{p}.jobs.*.*.*.*.*",  # and its affinity lanes
                f"{p}.job.*.cancel_requested",
                f"{p}.job.*.dead",
                f"{p}.job.*.expired",  # the expiry sweep (coordinator.deadlines)
                f"{API}.INFO",
                f"{API}.CONSUMER.INFO.{jobs}.*",  # pool backlogs
                f"{API}.CONSUMER.NAMES.{jobs}",
                f"{API}.CONSUMER.LIST.{jobs}",
                *_read_stream(jobs),
                *_read_stream(events),
                *_read_stream(workers),
                *_read_stream(invalid),
                *_read_stream(d.stream(TOKENS)),  # resume a job's token stream
                *tiers_read,
                *_batches_and_webhooks(d),  # the Batch API, and `jetgrid up`'s webhook service
            ),
            subscribe=(
                inbox,
                f"{p}.tokens.*.*",
                f"{p}.job.>",  # every job's events, whoever said them (`job.<id>.>`)
                f"{p}.worker.*.*",
                advisory,
            ),
            publish_deny=python_deny,
        )
    if user.role == PROJECTOR:
        t = d.tiers_stream
        snaps = f"OBJ_{d.streams.snapshot_bucket}"
        return Permissions(
            publish=(
                f"{p}.job.*.dead",
                f"{p}.invalid.*",
                f"{p}.rollup.*",
                f"$KV.{d.bucket}.>",
                # Read-model snapshots: write chunks and meta, purge the replaced ones, read.
                f"$O.{d.streams.snapshot_bucket}.>",
                f"{API}.STREAM.PURGE.{snaps}",
                # nats-py's object store get finds the stream of the chunks by subject.
                f"{API}.STREAM.NAMES",
                *_read_stream(snaps),
                f"{API}.INFO",
                f"{API}.STREAM.CREATE.{t}",
                f"{API}.STREAM.UPDATE.{t}",
                f"{API}.CONSUMER.INFO.{jobs}.*",
                *_read_stream(jobs),
                *_read_stream(events),
                *_read_stream(workers),
                *_read_stream(invalid),
                *_read_stream(d.stream(ROLLUPS)),
                *tiers_read,
                *_dead_letters(d),  # `jetgrid up` without workers runs its watcher as projector
            ),
            subscribe=(inbox, advisory),
        )
    if user.role == CLIENT:
        return Permissions(
            publish=(
                *submit,
                f"{p}.jobs.*.*.*.{encode_tenant(user.name)}",  # its own tenant queue only
                f"{p}.jobs.*.*.*.{encode_tenant(user.name)}.*",  # and its lanes
                f"{p}.job.*.cancel_requested",
                f"{API}.INFO",
                *_read_stream(jobs),
                *_read_stream(events),
                *_read_stream(d.stream(TOKENS)),
            ),
            subscribe=(inbox, f"{p}.job.>", f"{p}.tokens.*.*"),
            publish_deny=python_deny,
        )
    # A worker: only its own worker subjects.
    wid = check_id(user.worker_id or "", "worker id")
    return Permissions(
        publish=(
            f"{p}.worker.{wid}.*",
            # Lifecycle events only under its own id, the last token (see events.subjects).
            *(f"{p}.job.*.{name}.{wid}" for name in WORKER_JOB_EVENTS),
            f"{p}.job.*.dead.{wid}",  # the dead-letter watcher every worker runs
            f"{p}.invalid.{JOBS}",
            f"{p}.tokens.*.{wid}",  # token chunks only under its own id
            f"{API}.INFO",
            *_pool_consumers(d, user),
            *_direct_get(jobs),  # a dead letter's submission, by sequence
            *_direct_get(events),  # has this job's cancel been requested?
            *_dead_letters(d),
            *tiers_read,
        ),
        subscribe=(inbox, f"{p}.job.*.cancel_requested"),
    )


__all__ = [
    "ADMIN",
    "CLIENT",
    "GATEWAY",
    "PROJECTOR",
    "ROLES",
    "SERVICE_USERS",
    "WORKER",
    "WORKER_JOB_EVENTS",
    "Deployment",
    "Permissions",
    "User",
    "inbox_prefix",
    "password_env",
    "permissions",
    "service_user",
    "worker_user",
    "worker_user_name",
]
