"""The one place that turns events into bytes and bytes into events.

The stored form is a CloudEvents 1.0 JSON structured-mode envelope::

    {"specversion": "1.0", "id": "...", "source": "jetgrid/worker/w1",
     "type": "jetgrid.job.completed", "time": "2026-11-22T12:00:00.000000Z",
     "datacontenttype": "application/json", "dataversion": 1, "data": {...}}

``dataversion`` is a CloudEvents extension attribute holding the event model's version; older
versions are upcast at decode (events.catalogue.upcast), which reads current ones in one pass
(events.envelope). Submissions may also arrive bare, as ``{"model": ..., "prompt": ...}`` from
``nats pub``: decode_submission derives what is missing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _quote  # what json.dumps quotes strings with
from typing import Any

from pydantic import ValidationError

from jetgrid.events import envelope
from jetgrid.events.base import Event
from jetgrid.events.bounds import MAX_BYTES, Cleared, cleared, load_json
from jetgrid.events.catalogue import BY_TYPE, current_version, upcast
from jetgrid.events.envelope import ENVELOPE_KEYS, SPECVERSION
from jetgrid.events.errors import InvalidEvent, InvalidSubject
from jetgrid.events.jobs import JobSubmitted
from jetgrid.events.records import record
from jetgrid.events.subjects import Subjects, SubmitRoute, check_id


@record
class Envelope:
    """A decoded event with its CloudEvents attributes and, when read from a stream, its seq."""

    id: str
    source: str
    time: datetime
    event: Any
    seq: int | None = None
    subject: str | None = None

    @property
    def type(self) -> str:
        return str(self.event.type)

    def at(self, seq: int | None, subject: str | None = None) -> Envelope:
        """The same envelope, stamped with where it was read from."""
        # Positional construction: dataclasses.replace costs several times more, per event.
        return Envelope(self.id, self.source, self.time, self.event, seq, subject or self.subject)


def now() -> datetime:
    return datetime.now(UTC)


def format_time(t: datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any, field: str = "time") -> datetime:
    if not isinstance(value, str):
        raise InvalidEvent(f"Envelope field '{field}' must be an RFC 3339 string, got {value!r}.")
    try:
        t = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidEvent(f"Envelope field '{field}' is not RFC 3339: {value!r}.") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def explain(exc: ValidationError, prefix: str = "") -> str:
    """A ValidationError as one sentence that names each field at fault."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        where = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "body")
        parts.append(f"field '{where}': {err['msg']}")
    return "; ".join(parts)


_NOT_DATA = {"type", "version"}


def encode(
    event: Event,
    *,
    source: str,
    id: str | None = None,
    time: datetime | None = None,
) -> bytes:
    """Serialise one event in its CloudEvents envelope.

    The envelope's head is spliced as text around the event's own JSON (one pydantic pass),
    each string attribute quoted by the json module's encoder: the same bytes as
    ``json.dumps`` of the head, at about half the cost of building and dumping a dict (every
    event a worker says goes through here)."""
    data = event.model_dump_json(exclude=_NOT_DATA)
    t = time or now()
    # isoformat is several times faster than strftime, and the same text for a UTC time of a
    # four-digit year; anything else takes format_time.
    if t.tzinfo is UTC and t.year >= 1000:
        stamp = t.isoformat(timespec="microseconds")[:-6] + "Z"
    else:
        stamp = format_time(t)
    return (
        f'{{"specversion":"{SPECVERSION}","id":{_quote(id or uuid.uuid4().hex)},'
        f'"source":{_quote(source)},"type":{_quote(event.type)},"time":"{stamp}",'
        f'"datacontenttype":"application/json","dataversion":{event.version:d},"data":{data}}}'
    ).encode()


# Per event type: its current version and its model's validator, looked up once per event
# instead of through pydantic's class attributes.
_MODELS: dict[str, tuple[int, Any]] = {
    name: (current_version(cls), cls.__pydantic_validator__) for name, cls in BY_TYPE.items()
}


def _event_from(obj: dict[str, Any]) -> tuple[Event, datetime, str, str]:
    type_ = obj.get("type")
    if not isinstance(type_, str):
        raise InvalidEvent("Envelope field 'type' is missing or not a string.")
    model = _MODELS.get(type_)
    if model is None:
        raise InvalidEvent(f"Envelope field 'type' names no known event: {type_!r}.")
    target, validator = model
    if obj.get("specversion") != SPECVERSION:
        raise InvalidEvent(
            f"Envelope field 'specversion' must be {SPECVERSION!r}, got {obj.get('specversion')!r}."
        )
    id_, source = obj.get("id"), obj.get("source")
    if not isinstance(id_, str) or not id_:
        raise InvalidEvent("Envelope field 'id' is missing or not a string.")
    if not isinstance(source, str) or not source:
        raise InvalidEvent("Envelope field 'source' is missing or not a string.")
    if not obj.keys() <= ENVELOPE_KEYS:
        unknown = set(obj) - ENVELOPE_KEYS
        raise InvalidEvent(f"Envelope has unknown attributes: {sorted(unknown)}.")
    data = obj.get("data")
    if not isinstance(data, dict):
        raise InvalidEvent("Envelope field 'data' must be a JSON object.")
    version = obj.get("dataversion", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidEvent(f"Envelope field 'dataversion' must be a positive integer: {version!r}.")
    if version > target:
        raise InvalidEvent(
            f"{type_} version {version} is newer than this jetgrid understands ({target})."
        )
    if version < target:
        try:
            data = upcast(type_, version, data, target)
        except LookupError as exc:
            raise InvalidEvent(str(exc)) from exc
        except (TypeError, ValueError, AttributeError) as exc:  # an upcaster met a wrong shape
            raise InvalidEvent(f"{type_} version {version} cannot be upcast: {exc}.") from exc
    try:
        event = validator.validate_python(data)
    except ValidationError as exc:
        raise InvalidEvent(explain(exc, "data.")) from exc
    return event, parse_time(obj.get("time")), id_, source


def _current(data: bytes) -> Envelope | None:
    """The envelope of cleared bytes in one pass (events.envelope.read), or None (at once for
    a body with no "specversion", such as a bare job from `nats pub`)."""
    if b'"specversion"' not in data:
        return None
    if type(data) is not Cleared and not (len(data) <= MAX_BYTES and cleared(data)):
        return None
    if (got := envelope.read(data)) is None:
        return None
    try:
        return Envelope(got.id, got.source, parse_time(got.time), got.data)
    except InvalidEvent:
        return None


def decode(data: bytes) -> Envelope:
    """Bytes of a CloudEvents envelope -> Envelope; InvalidEvent says what is wrong. A current
    event takes one pass (`_current`); `_decode_checked` reads the rest, upcasts, words errors."""
    env = _current(data)
    return env if env is not None else _decode_checked(data)


def _decode_checked(data: bytes) -> Envelope:
    obj = load_json(data)
    if not isinstance(obj, dict):
        raise InvalidEvent("Body must be a JSON object (a CloudEvents envelope).")
    event, time, id_, source = _event_from(obj)
    return Envelope(id=id_, source=source, time=time, event=event)


DERIVED_PREFIX = "seq-"
"""Ids starting with this are derived (derived_job_id); no submission may choose one."""


def derived_job_id(seq: int) -> str:
    """The id of a job submitted without one: its JOBS stream sequence, e.g. ``seq-42``."""
    return f"{DERIVED_PREFIX}{seq}"


def unique_by_construction(job_id: str, seq: int, msg_id: str | None) -> bool:
    """Whether no other submission can hold `job_id`: it is the derived id of its own sequence,
    or it was published with ``Nats-Msg-Id: <job_id>`` (as the gateway and `jetgrid submit` do),
    so JetStream dropped any other publish of it within the duplicate window. Otherwise a
    consumer must check that no earlier submission took the id."""
    return job_id == derived_job_id(seq) or msg_id == job_id


def check_chosen_id(job_id: str) -> None:
    """Refuse a submitter-chosen id that could be a derived one (``seq-<N>``), which would take
    the id of a later bare job; InvalidEvent names the rule."""
    if job_id.startswith(DERIVED_PREFIX):
        raise InvalidEvent(
            f"field 'id': {job_id!r} starts with the reserved prefix {DERIVED_PREFIX!r} "
            "(ids of jobs submitted without one); choose another id."
        )


def _bare_id(obj: dict[str, Any]) -> Any:
    """A bare job's own id: `id`, or `job_id` (its name in the envelope); both must agree."""
    if "id" in obj and "job_id" in obj and obj["id"] != obj["job_id"]:
        raise InvalidEvent(
            f"fields 'id' ({obj['id']!r}) and 'job_id' ({obj['job_id']!r}) disagree; send one."
        )
    return obj.get("id", obj.get("job_id"))


def refused_job_id(data: bytes, seq: int) -> str:
    """The job a refused submission is about: the id it chose if that is a usable one (a valid,
    non-reserved token), otherwise its derived id. Never raises."""
    try:
        obj = load_json(data)
        chosen = obj.get("data", {}).get("job_id") if "specversion" in obj else _bare_id(obj)
        check_id(chosen)
        check_chosen_id(chosen)
    except Exception:  # anything unusable falls back to the derived id
        return derived_job_id(seq)
    return str(chosen)


def decode_submission(
    data: bytes,
    *,
    subject: str,
    subjects: Subjects,
    seq: int,
    stream_time: datetime,
) -> Envelope:
    """Decode what arrived on a submission subject, enveloped or bare.

    A bare body (``{"model": "m", "prompt": "hi"}``) gets its pool from the subject, its id from
    the stream sequence (derived_job_id) unless it sends ``id`` (or ``job_id``, the envelope's
    name for it), and its time from the stream timestamp. No submission may choose an id with
    the derived prefix (check_chosen_id). The payload's model must be the one the subject's
    token encodes, and a pool in the payload must match the subject's pool: the subject routed
    the job, so a disagreement is an error, not a guess. On a tenant subject the job's `tenant`
    is the subject's tenant token, and a bare body's submitter defaults to it: a NATS user held
    by its permissions to its own tenant token cannot queue work as another tenant.
    """
    try:
        routed = pool, model, priority, tenant, lane = subjects.parse_submit_lane(subject)
    except InvalidSubject as exc:
        raise InvalidEvent(str(exc)) from exc
    env = _current(data)  # an enveloped job, in one pass
    if env is not None and isinstance(env.event, JobSubmitted):
        check_chosen_id(env.event.job_id)
    else:
        env = _checked_submission(load_json(data), seq, stream_time, routed)
    job = env.event
    if job.model != model:
        raise InvalidEvent(
            f"field 'model': {job.model!r} does not match the subject's model {model!r} "
            f"(token {subject.rsplit('.', 1)[-1]!r})."
        )
    if job.pool != pool:
        raise InvalidEvent(
            f"field 'pool': {job.pool!r} does not match the subject's pool {pool!r}."
        )
    # The four-token subject is the normal queue and predates priorities: a payload there may
    # carry any priority (it is recorded, and queued as normal). A priority token must agree.
    if priority != "normal" and job.priority != priority:
        raise InvalidEvent(
            f"field 'priority': {job.priority!r} does not match the subject's priority "
            f"{priority!r}."
        )
    if job.tenant != tenant:
        raise InvalidEvent(
            f"field 'tenant': {job.tenant!r} does not match the subject's tenant {tenant!r}; "
            f"publish on the subject of the job's tenant queue."
        )
    if job.lane != lane:
        raise InvalidEvent(
            f"field 'lane': {job.lane!r} does not match the subject's lane {lane!r}."
        )
    return env.at(seq, subject)


def _checked_submission(obj: Any, seq: int, stream_time: datetime, routed: SubmitRoute) -> Envelope:
    """decode_submission's reading of a parsed body that `_current` did not take."""
    pool, _, priority, tenant, lane = routed
    if not isinstance(obj, dict):
        raise InvalidEvent("A job must be a JSON object with at least 'model' and 'prompt'.")
    if "specversion" in obj:
        event, time, id_, source = _event_from(obj)  # the document parsed above, not again
        env = Envelope(id=id_, source=source, time=time, event=event)
        if not isinstance(env.event, JobSubmitted):
            raise InvalidEvent(f"Only {JobSubmitted.__name__} belongs here, got {env.type!r}.")
        check_chosen_id(env.event.job_id)
        return env
    fields = dict(obj)
    chosen = _bare_id(fields)
    fields.pop("id", None)
    if chosen is not None:
        if isinstance(chosen, str):
            check_chosen_id(chosen)
        fields["job_id"] = chosen
    fields.setdefault("job_id", derived_job_id(seq))
    fields.setdefault("pool", pool)
    if priority != "normal":
        fields.setdefault("priority", priority)
    if tenant is not None:  # a tenant queue: the subject says whose (and who submitted)
        fields.setdefault("tenant", tenant)
        fields.setdefault("submitter", tenant)
    if lane is not None:
        fields.setdefault("lane", lane)
    fields.pop("type", None)
    fields.pop("version", None)
    try:
        job = JobSubmitted.model_validate(fields)
    except ValidationError as exc:
        raise InvalidEvent(explain(exc)) from exc
    return Envelope(id=job.job_id, source="nats", time=stream_time, event=job)
