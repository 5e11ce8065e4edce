"""The subject grammar: jetgrid's public contract on NATS.

    <prefix>.jobs.<pool>.<model-token>      JOBS        a job was submitted (priority normal)
    <prefix>.jobs.<pool>.<model-token>.<p>  JOBS        the same, with priority <p> = high | low
    <prefix>.jobs.<pool>.<model-token>.<p>.<tenant>
                                            JOBS        the same in tenant <tenant>'s queue of a
                                                        fair-share pool (<p>: high|normal|low)
    <prefix>.jobs.<pool>.<model-token>.<p>.<tenant>.<lane>
                                            JOBS        the same in affinity lane <lane> (0-999)
                                                        of that queue (coordinator.share)
    <prefix>.job.<job_id>.<event>           JOB_EVENTS  the job's lifecycle (gateway, clients,
                                                        dead-letter watchers of services)
    <prefix>.job.<job_id>.<event>.<worker>  JOB_EVENTS  the same, said by worker <worker>
    <prefix>.worker.<worker_id>.<event>     WORKERS     registrations and pings
    <prefix>.rollup.<worker_id>             ROLLUPS     hour rollups of pings (projector)
    <prefix>.invalid.<stream>               INVALID     a message that failed validation
    <prefix>.tokens.<job_id>.<worker>       TOKENS      token chunks of the job's attempt run
                                                        by <worker> (kept a day, to resume)

Model names such as ``llama3.2:1b`` or ``hf.co/org/m:q4`` hold characters that cannot appear in a
subject token. They are encoded by one reversible rule: ASCII letters, digits and ``-`` stand for
themselves; every other byte of the name's UTF-8 form becomes ``_`` followed by two upper-case hex
digits. So ``llama3.2:1b`` -> ``llama3_2E2_3A1b`` and ``my_model`` -> ``my_5Fmodel``. The payload's
``model`` field stays the authority; the token only routes. A tenant name (an API key's name, a
NATS user) is encoded into its token by the same rule. A submission without a tenant token waits
in the pool's shared queue (the default tenant), as every submission did before tenants.

A worker's lifecycle events carry its id as a fifth token, so NATS permissions hold each worker to
its own id (as for its pings): no worker can publish a result, a claim or a `dead` in another's
name, and the projector records an event whose payload names a different worker than its subject
as invalid. Subscribe to ``<prefix>.job.<job_id>.>`` for every event of a job.

Token chunks carry the worker's id the same way, and a worker may publish only
``<prefix>.tokens.*.<its id>``: a reader takes chunks only from the worker that the job's latest
`claimed`/`started` event names (the gateway does), so no other worker can write into a stream.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from jetgrid.events.errors import InvalidSubject

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_PLAIN_RE = re.compile(r"[A-Za-z0-9-]+")
_TOKEN_RE = re.compile(r"^(?:[A-Za-z0-9-]|_[0-9A-F]{2})+$")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$")

JOB_EVENT_NAMES = (
    "claimed",
    "started",
    "progress",
    "completed",
    "failed",
    "retrying",
    "cancel_requested",
    "cancelled",
    "dead",
    "rejected",
    "expired",
)
WORKER_EVENT_NAMES = ("registered", "heartbeat", "draining", "deregistered")
# Priorities, highest first. `normal` has no subject token: the four-token submission subject
# (the original grammar) is the normal queue, so every client written before priorities works.
PRIORITIES = ("high", "normal", "low")
# A submission subject read: (pool, model, priority, tenant or None, lane or None).
SubmitRoute = tuple[str, str, str, str | None, int | None]
PRIORITY_TOKENS = ("high", "low")
MAX_MODEL_LEN = 200
MAX_TENANT_LEN = 128
MAX_LANES = 1000


def encode_model(model: str) -> str:
    """Encode a model name into one subject token (reversible, see the module docstring)."""
    if not model:
        raise InvalidSubject("A model name cannot be empty.")
    if len(model) > MAX_MODEL_LEN:
        raise InvalidSubject(
            f"Model name is {len(model)} characters long; at most {MAX_MODEL_LEN}."
        )
    if _PLAIN_RE.fullmatch(model):
        return model  # only safe characters: the token is the name itself
    out: list[str] = []
    for byte in model.encode("utf-8"):
        out.append(chr(byte) if byte in _SAFE else f"_{byte:02X}")
    return "".join(out)


def decode_model(token: str) -> str:
    """Invert encode_model; raises InvalidSubject for a token no model name encodes to."""
    if not _TOKEN_RE.match(token):
        raise InvalidSubject(f"Model token {token!r} is not in the encoded form.")
    raw = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "_":
            raw.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(token[i]))
            i += 1
    try:
        model = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSubject(f"Model token {token!r} does not decode to UTF-8.") from exc
    # One model, one token: an escape of a byte that needs none (`_61` for `a`) would route a
    # job to a subject no worker of that model reads.
    if encode_model(model) != token:
        raise InvalidSubject(
            f"Model token {token!r} is not the encoded form of a model name; "
            f"encode the name with encode_model."
        )
    return model


def encode_tenant(tenant: str) -> str:
    """Encode a tenant name into one subject token (the model rule, at most 128 characters)."""
    if not tenant or len(tenant) > MAX_TENANT_LEN:
        raise InvalidSubject(f"Tenant {tenant!r} must be 1-{MAX_TENANT_LEN} characters long.")
    return encode_model(tenant)


def decode_tenant(token: str) -> str:
    """Invert encode_tenant; raises InvalidSubject for a token no tenant name encodes to."""
    try:
        return decode_model(token)
    except InvalidSubject:
        raise InvalidSubject(f"Tenant token {token!r} is not in the encoded form.") from None


def check_id(value: str, what: str = "id") -> str:
    """Return value if it can be one subject token (letters, digits, '-', '_'; 1-128 long)."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise InvalidSubject(
            f"{what} {value!r} must be 1-128 characters of letters, digits, '-' or '_'."
        )
    return value


@dataclass(frozen=True, slots=True)
class Subjects:
    """Builds and parses every subject under one prefix (default ``jetgrid``)."""

    prefix: str = "jetgrid"

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise InvalidSubject(f"Subject prefix {self.prefix!r} is not a valid subject.")

    # -- builders -------------------------------------------------------------------------
    def submit(
        self,
        pool: str,
        model: str,
        priority: str = "normal",
        tenant: str | None = None,
        lane: int | None = None,
    ) -> str:
        """The subject a job for `model` in `pool` is submitted on (normal: no priority token;
        with `tenant`: its queue, the priority always named; with `lane` too: that lane)."""
        base = f"{self.prefix}.jobs.{check_id(pool, 'pool')}.{encode_model(model)}"
        if lane is not None and (tenant is None or not 0 <= lane < MAX_LANES):
            raise InvalidSubject(f"Lane {lane!r} needs a tenant and must be 0-{MAX_LANES - 1}.")
        if tenant is not None:
            if priority not in PRIORITIES:
                raise InvalidSubject(f"Priority {priority!r} is not one of {list(PRIORITIES)}.")
            tail = "" if lane is None else f".{lane}"
            return f"{base}.{priority}.{encode_tenant(tenant)}{tail}"
        if priority == "normal":
            return base
        if priority not in PRIORITY_TOKENS:
            raise InvalidSubject(f"Priority {priority!r} is not one of {list(PRIORITIES)}.")
        return f"{base}.{priority}"

    def tenant_filter(self, pool: str, model: str, priority: str = "*") -> str:
        """Filter for the tenant queues of (pool, model), of one priority or all."""
        return f"{self.prefix}.jobs.{pool}.{encode_model(model)}.{priority}.*"

    def submit_filter(
        self, pool: str = "*", model: str | None = None, priority: str = "normal"
    ) -> str:
        token = "*" if model is None else encode_model(model)
        base = f"{self.prefix}.jobs.{pool}.{token}"
        return base if priority == "normal" else f"{base}.{priority}"

    def submissions(self) -> str:
        """Filter for every submission, of every priority."""
        return f"{self.prefix}.jobs.>"

    def submission_subjects(self) -> tuple[str, ...]:
        """The JOBS stream's subjects: the normal form, one per priority token, the tenant form
        and the lane form."""
        base = f"{self.prefix}.jobs.*.*"
        return (base, *(f"{base}.{p}" for p in PRIORITY_TOKENS), f"{base}.*.*", f"{base}.*.*.*")

    def job_event(self, job_id: str, event: str, worker_id: str | None = None) -> str:
        """A lifecycle subject; with `worker_id`, the form a worker publishes under its own id."""
        subject = f"{self.prefix}.job.{check_id(job_id, 'job id')}.{event}"
        return subject if worker_id is None else f"{subject}.{check_id(worker_id, 'worker id')}"

    def job_events(self, job_id: str = "*") -> str:
        """Filter for every lifecycle event of one job (or of all jobs), whoever said it."""
        return f"{self.prefix}.job.{job_id}.>"

    def job_event_stream_subjects(self) -> tuple[str, ...]:
        """The JOB_EVENTS stream's subjects: the service form and the worker form."""
        return (f"{self.prefix}.job.*.*", f"{self.prefix}.job.*.*.*")

    def worker_event(self, worker_id: str, event: str) -> str:
        return f"{self.prefix}.worker.{check_id(worker_id, 'worker id')}.{event}"

    def worker_events(self, worker_id: str = "*") -> str:
        return f"{self.prefix}.worker.{worker_id}.*"

    def rollup(self, worker_id: str) -> str:
        """Where the projector publishes a worker's hour rollups (the ROLLUPS stream)."""
        return f"{self.prefix}.rollup.{check_id(worker_id, 'worker id')}"

    def rollups(self) -> str:
        return f"{self.prefix}.rollup.*"

    def invalid(self, stream: str) -> str:
        return f"{self.prefix}.invalid.{stream}"

    def tokens(self, job_id: str, worker_id: str) -> str:
        """Subject (TOKENS stream) of the token chunks `worker_id` publishes for `job_id` (never
        stored)."""
        return (
            f"{self.prefix}.tokens.{check_id(job_id, 'job id')}.{check_id(worker_id, 'worker id')}"
        )

    def token_streams(self, job_id: str = "*") -> str:
        """Filter for the token chunks of one job (or of all jobs), whichever worker sent them."""
        return f"{self.prefix}.tokens.{job_id}.*"

    # -- parsers --------------------------------------------------------------------------
    def _rest(self, subject: str, kind: str, n: int) -> list[str]:
        head = f"{self.prefix}.{kind}."
        if not subject.startswith(head):
            raise InvalidSubject(f"Subject {subject!r} does not start with {head!r}.")
        parts = subject[len(head) :].split(".")
        if len(parts) != n or not all(parts):
            raise InvalidSubject(f"Subject {subject!r} does not have the form {head}<{n} tokens>.")
        return parts

    def parse_submit(self, subject: str) -> tuple[str, str]:
        """(pool, model) of a submission subject."""
        pool, model, _ = self.parse_submit_priority(subject)
        return pool, model

    def parse_submit_priority(self, subject: str) -> tuple[str, str, str]:
        """(pool, model, priority) of a submission subject, with or without a priority token."""
        pool, model, priority, _ = self.parse_submit_tenant(subject)
        return pool, model, priority

    def parse_submit_tenant(self, subject: str) -> tuple[str, str, str, str | None]:
        """(pool, model, priority, tenant or None) of a submission subject, of any form."""
        pool, model, priority, tenant, _ = self.parse_submit_lane(subject)
        return pool, model, priority, tenant

    def parse_submit_lane(self, subject: str) -> SubmitRoute:
        """(pool, model, priority, tenant or None, lane or None) of a submission subject (the
        last `_PARSED` valid subjects' answers are remembered)."""
        return _parse_submit_lane(self, subject)

    def _parse_submit_lane(self, subject: str) -> SubmitRoute:
        head = f"{self.prefix}.jobs."
        dots = subject[len(head) :].count(".") if subject.startswith(head) else 1
        n = dots + 1 if dots in (2, 3, 4) else 2
        parts = self._rest(subject, "jobs", n)
        priority = "normal"
        if n >= 4:
            if parts[2] not in PRIORITIES:
                raise InvalidSubject(
                    f"Subject {subject!r} names priority {parts[2]!r}; one of {list(PRIORITIES)}."
                )
            lane = None
            if n == 5:
                if not (parts[4].isdigit() and str(int(parts[4])) == parts[4]):
                    raise InvalidSubject(f"Subject {subject!r} ends in {parts[4]!r}, not a lane.")
                lane = int(parts[4])
                if lane >= MAX_LANES:
                    raise InvalidSubject(f"Lane {lane} of {subject!r} is not 0-{MAX_LANES - 1}.")
            model = decode_model(parts[1])
            return parts[0], model, parts[2], decode_tenant(parts[3]), lane
        if n == 3:
            if parts[2] not in PRIORITY_TOKENS:
                raise InvalidSubject(
                    f"Subject {subject!r} ends in {parts[2]!r}; a priority token is one of "
                    f"{list(PRIORITY_TOKENS)} (normal has none)."
                )
            priority = parts[2]
        return parts[0], decode_model(parts[1]), priority, None, None

    def parse_job_event(self, subject: str) -> tuple[str, str]:
        """(job_id, event name) of a lifecycle subject, with or without a worker token."""
        job_id, event, _ = self.parse_job_event_by(subject)
        return job_id, event

    def parse_job_event_by(self, subject: str) -> tuple[str, str, str | None]:
        """(job_id, event name, the worker that said it or None) of a lifecycle subject."""
        head = f"{self.prefix}.job."
        n = 3 if subject.startswith(head) and subject[len(head) :].count(".") == 2 else 2
        parts = self._rest(subject, "job", n)
        return parts[0], parts[1], parts[2] if n == 3 else None

    def parse_tokens(self, subject: str) -> tuple[str, str]:
        """(job_id, worker_id) of a token-chunk subject."""
        job_id, worker_id = self._rest(subject, "tokens", 2)
        return job_id, worker_id

    def parse_worker_event(self, subject: str) -> tuple[str, str]:
        """(worker_id, event name) of a worker subject."""
        return _parse_worker_event(self, subject)

    def _parse_worker_event(self, subject: str) -> tuple[str, str]:
        worker_id, event = self._rest(subject, "worker", 2)
        return worker_id, event


_PARSED = 4096  # submission subjects whose parse is remembered (a fleet has a few hundred)
_WORKER_SUBJECTS = 16_384  # worker subjects (a few event names for each of a fleet's workers)


@functools.lru_cache(maxsize=_PARSED)
def _parse_submit_lane(subjects: Subjects, subject: str) -> SubmitRoute:
    return subjects._parse_submit_lane(subject)  # a refused subject raises: nothing is kept


@functools.lru_cache(maxsize=_WORKER_SUBJECTS)
def _parse_worker_event(subjects: Subjects, subject: str) -> tuple[str, str]:
    return subjects._parse_worker_event(subject)  # a refused subject raises: nothing is kept
