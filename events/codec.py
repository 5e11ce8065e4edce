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

import json
import math
import re
import uuid
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _quote  # what json.dumps quotes strings with
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json

from jetgrid.events import envelope
from jetgrid.events.base import Event
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


# Bounds on what the codec decodes. Every event jetgrid writes nests at most 8 deep (a chat
# message's content part inside a submitted job's input, inside the envelope); a body that
# nests deeper than MAX_DEPTH, or is larger than MAX_BYTES (NATS refuses payloads over its
# max_payload, 1 MB by default, long before), is refused before it can cost more.
MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 32
MAX_KEYS = 4096
# Integers must fit a signed 64-bit column (sequences, counts and sizes are stored in SQL).
MAX_INT = 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
# Every digit as "0" and "E" as "e", so that a few substring searches find the number tokens
# that could fall outside the bounds once parsed (see within_bounds): 19 digits in a row, or
# an exponent of 3 or more digits.
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789E", b"0000000000e")
_EXPONENTS = (b"0e000", b"0e+000", b"0e-000")
# A number token with an exponent of 3 or more digits: what ends a number in JSON follows it
# (a hex id such as "...3e1234f..." inside a string does not match).
_BIG_EXPONENT = re.compile(rb"\d[eE][+-]?\d{3,}(?=[\s,\]}]|\Z)")
_DEEP = "recursion limit exceeded"


def _refuse_constant(name: str) -> Any:
    raise InvalidEvent(f"Body holds {name}, which is not a JSON number; send a finite number.")


def _check(obj: Any, strings: bool) -> None:
    """Refuse a parsed document outside the bounds; `strings` also checks for lone surrogates.

    Iterative, so no document can make it recurse; dispatches on exact types, as parsed JSON
    holds nothing else, because this runs on every event.
    """
    if type(obj) is not dict and type(obj) is not list:
        _check_scalar(obj, strings)
        return
    stack: list[tuple[Any, int]] = [(obj, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        value, depth = pop()
        if depth > MAX_DEPTH:
            raise InvalidEvent(f"Body nests deeper than {MAX_DEPTH} levels; flatten it.")
        if type(value) is dict:
            if len(value) > MAX_KEYS:
                raise InvalidEvent(
                    f"Body has an object with {len(value)} keys; at most {MAX_KEYS} are accepted."
                )
            if strings:
                for key in value:
                    _check_str(key)
            items = value.values()
        else:
            items = value
        for item in items:
            t = type(item)
            if t is str:
                if strings:
                    _check_str(item)
            elif t is dict or t is list:
                push((item, depth + 1))
            elif t is float or t is int:
                _check_scalar(item, strings)


def _check_scalar(value: Any, strings: bool) -> None:
    if isinstance(value, str):
        if strings:
            _check_str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent(
                f"Body holds the number {value!r}, which is out of range; send a finite number."
            )
    elif isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
        raise InvalidEvent(
            f"Body holds an integer of {len(str(abs(value)))} digits; at most 64-bit integers "
            "are accepted."
        )


def _check_str(value: str) -> None:
    if _SURROGATE.search(value) is not None:
        raise InvalidEvent(
            f"Body holds a lone surrogate ({value[:40]!r}), which is not valid Unicode text."
        )


class Cleared(bytes):
    """Bytes that `cleared` passed where they were read: load_json skips the scan and the walk,
    decode the scan before its one pass. A replay's reader child scans each message it sends
    (projections.pump), while the process that decodes them is the busier one. Only jetgrid's
    own readers make one; what NATS delivers is plain bytes, which are scanned here."""

    __slots__ = ()


def within_bounds(data: bytes | str) -> bool:
    """Whether the raw bytes alone prove that the parsed document is within the bounds that
    `_check` enforces (with ``strings=False``), so that walking it can be skipped.

    Conservative, and a few C-speed scans instead of a walk of every value: no document nests
    deeper than it has ``[`` and ``{`` bytes, no object has more keys than the document has
    ``:`` bytes, an integer outside 64 bits needs 19 digits in a row (anything shorter is below
    10**18), and a finite literal can only overflow to infinity with an exponent of 3 or more
    digits (its mantissa then has at most 18 digits before the point; in JSON a digit always
    precedes the ``e``). Bytes inside strings are counted too, which can only send a body to
    the walk. Cleared bytes were scanned where they were read.
    """
    if type(data) is Cleared:
        return True
    if type(data) is not bytes or data.count(b"{") + data.count(b"[") > MAX_DEPTH:
        return False
    if data.count(b":") > MAX_KEYS:
        return False
    zeros = data.translate(_DIGITS_AS_ZERO)
    if b"0000000000000000000" in zeros:  # 19 digits in a row
        return False
    if b"0e" not in zeros:  # in every exponent pattern: one scan rules them all out
        return True
    for exponent in _EXPONENTS:
        if exponent in zeros:  # maybe inside a string: the pattern decides
            return _BIG_EXPONENT.search(data) is None
    return True


def load_json(data: bytes | str) -> Any:
    """Bytes of one JSON document -> Python objects, within the codec's bounds.

    Refuses, as InvalidEvent with a one-sentence reason, anything that is not JSON or exceeds
    MAX_BYTES, MAX_DEPTH or MAX_KEYS, numbers that are not finite or do not fit 64 bits
    (NaN, Infinity, 1e999, huge integers) and lone surrogates. Never raises anything else.
    """
    if len(data) > MAX_BYTES:
        raise InvalidEvent(f"Body is {len(data)} bytes; at most {MAX_BYTES} are accepted.")
    # pydantic-core's parser is about twice as fast as json.loads on an event, gives the same
    # objects for every document both accept, and stops at a fixed depth instead of
    # recursing. It refuses a few documents json.loads takes (a UTF-8 BOM, UTF-16, lone
    # surrogates in escapes), so on any other failure json.loads decides, and its reason is
    # the one given.
    try:
        obj = from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        if _DEEP in str(exc):
            raise InvalidEvent(f"Body nests deeper than {MAX_DEPTH} levels; flatten it.") from None
    else:
        if not within_bounds(data):
            _check(obj, strings=False)
        return obj
    try:
        obj = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidEvent(f"Body nests deeper than {MAX_DEPTH} levels; flatten it.") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidEvent(f"Body is not JSON: {exc}.") from exc
    _check(obj, strings=True)
    return obj


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


def cleared(data: bytes) -> bool:
    """Whether `data` is within the bounds (within_bounds) and holds no NaN or Infinity token,
    which the one pass would take as a number (a token inside a string counts too)."""
    return within_bounds(data) and b"NaN" not in data and b"Infinity" not in data


def _current(data: bytes) -> Envelope | None:
    """The envelope of cleared bytes in one pass (events.envelope.read), or None."""
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
