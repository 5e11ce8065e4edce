from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from jetgrid import events
from jetgrid.events import (
    EVENT_TYPES,
    InvalidEvent,
    InvalidMessage,
    JobCompleted,
    JobSubmitted,
    Subjects,
    WorkerHeartbeat,
    decode,
    decode_submission,
    encode,
    load_json,
    upcast,
)
from jetgrid.events.catalogue import BY_TYPE, type_name

T0 = datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=UTC)
S = Subjects("jetgrid")

SAMPLES: dict[str, dict[str, Any]] = {
    "jetgrid.job.submitted": dict(job_id="j1", model="m", pool="fast", prompt="hi"),
    "jetgrid.job.rejected": dict(job_id="j1", jobs_seq=3, reason="bad field", worker_id="w1"),
    "jetgrid.job.expired": dict(job_id="j1", deadline="2026-01-01T00:00:00Z", reason="late"),
    "jetgrid.job.started": dict(
        job_id="j1", worker_id="w1", attempt=1, jobs_seq=3, tier_factor=0.5, fallback=True
    ),
    "jetgrid.job.progress": dict(job_id="j1", worker_id="w1", attempt=1, fraction=0.5),
    "jetgrid.job.completed": dict(
        job_id="j1", worker_id="w1", attempt=1, output={"r": 1}, duration_s=0.1
    ),
    "jetgrid.job.failed": dict(job_id="j1", reason="bad input"),
    "jetgrid.job.retrying": dict(job_id="j1", worker_id="w1", attempt=2, reason="x", delay_s=1),
    "jetgrid.job.cancel_requested": dict(job_id="j1"),
    "jetgrid.job.cancelled": dict(job_id="j1"),
    "jetgrid.job.dead": dict(job_id="j1", attempts=5, jobs_seq=3),
    "jetgrid.worker.registered": dict(
        worker_id="w1",
        pools=["fast"],
        models=["m"],
        backend="echo",
        concurrency=2,
        heartbeat_interval_s=5,
    ),
    "jetgrid.worker.heartbeat": dict(worker_id="w1", n=0, healthy=True, interval_s=5, in_flight=0),
    "jetgrid.worker.draining": dict(worker_id="w1"),
    "jetgrid.worker.deregistered": dict(worker_id="w1"),
    "jetgrid.worker.rollup": dict(
        worker_id="w1",
        hour=3600,
        interval_s=5.0,
        origin=0.5,
        first_slot=0,
        lo=0,
        top=719,
        bits="",
        healthy_slots=0,
        total_slots=720,
        tier="probation",
    ),
    "jetgrid.invalid.message": dict(
        stream="JOBS", subject="jetgrid.jobs.fast.m", reason="r", original_b64="eA=="
    ),
}


def test_catalogue_types_are_unique_frozen_and_closed() -> None:
    names = [type_name(c) for c in EVENT_TYPES]
    assert len(names) == len(set(names))
    assert set(names) == set(SAMPLES)
    for cls in EVENT_TYPES:
        assert cls.model_config.get("frozen") is True, cls
        assert cls.model_config.get("extra") == "forbid", cls
        assert cls.model_fields["version"].default >= 1


@pytest.mark.parametrize("type_", sorted(SAMPLES))
def test_every_event_round_trips_through_the_envelope(type_: str) -> None:
    event = BY_TYPE[type_](**SAMPLES[type_])
    raw = encode(event, source="test", id="e1", time=T0)
    obj = json.loads(raw)
    assert obj["specversion"] == "1.0"
    assert obj["type"] == type_
    assert obj["id"] == "e1" and obj["source"] == "test"
    assert obj["time"] == "2026-11-22T12:00:00.123456Z"
    assert obj["datacontenttype"] == "application/json"
    assert "type" not in obj["data"] and "version" not in obj["data"]
    env = decode(raw)
    assert env.event == event and env.time == T0 and env.id == "e1"


def test_events_are_immutable() -> None:
    ev = JobCompleted(**SAMPLES["jetgrid.job.completed"])
    with pytest.raises(Exception, match="frozen"):
        ev.duration_s = 2  # type: ignore[misc]


def _envelope(**over: Any) -> bytes:
    obj = json.loads(encode(JobSubmitted(**SAMPLES["jetgrid.job.submitted"]), source="t"))
    obj.update(over)
    return json.dumps({k: v for k, v in obj.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1,2]", "JSON object"),
        (b"{}", "'type'"),
        (_envelope(type="jetgrid.nope"), "no known event"),
        (_envelope(specversion="0.3"), "specversion"),
        (_envelope(id=""), "'id'"),
        (_envelope(time="yesterday"), "RFC 3339"),
        (_envelope(data=[1]), "'data' must be a JSON object"),
        (_envelope(dataversion=99), "newer"),
        (_envelope(dataversion="1"), "dataversion"),
        (_envelope(surprise=1), "unknown attributes"),
        (_envelope(data={"job_id": "j1", "pool": "fast", "prompt": "x"}), "field 'data.model'"),
        (
            _envelope(data={"job_id": "a.b", "model": "m", "pool": "fast", "prompt": "x"}),
            "job_id",
        ),
    ],
)
def test_decode_names_what_is_wrong(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        decode(raw)


def test_bare_submission_gets_id_pool_and_time_from_the_stream() -> None:
    env = decode_submission(
        b'{"model": "llama3.2:1b", "prompt": "hi"}',
        subject=S.submit("fast", "llama3.2:1b"),
        subjects=S,
        seq=42,
        stream_time=T0,
    )
    job = env.event
    assert isinstance(job, JobSubmitted)
    assert (job.job_id, job.pool, job.model, job.prompt) == ("seq-42", "fast", "llama3.2:1b", "hi")
    assert env.time == T0 and env.seq == 42


def test_enveloped_submission_keeps_its_own_id() -> None:
    job = JobSubmitted(job_id="mine", model="m", pool="fast", prompt="x")
    env = decode_submission(
        encode(job, source="t"), subject=S.submit("fast", "m"), subjects=S, seq=7, stream_time=T0
    )
    assert env.event == job and env.seq == 7


@pytest.mark.parametrize(
    ("body", "subject", "reason"),
    [
        (b'{"model": "other", "prompt": "x"}', S.submit("fast", "m"), "does not match"),
        (b'{"model": "m", "prompt": "x", "pool": "heavy"}', S.submit("fast", "m"), "'pool'"),
        (b'{"model": "m"}', S.submit("fast", "m"), "prompt"),
        (b'{"model": "m", "prompt": 5}', S.submit("fast", "m"), "field 'prompt'"),
        (b'{"model": "m", "prompt": "x", "colour": 1}', S.submit("fast", "m"), "colour"),
        (b'"just a string"', S.submit("fast", "m"), "JSON object"),
        (b'{"model": "m", "prompt": "x"}', "jetgrid.jobs.fast.bad_zz", "token"),
    ],
)
def test_bad_submissions_are_refused_with_a_reason(body: bytes, subject: str, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        decode_submission(body, subject=subject, subjects=S, seq=1, stream_time=T0)


def test_submission_subject_only_takes_submissions() -> None:
    raw = encode(WorkerHeartbeat(**SAMPLES["jetgrid.worker.heartbeat"]), source="t")
    with pytest.raises(InvalidEvent, match="Only JobSubmitted"):
        decode_submission(raw, subject=S.submit("fast", "m"), subjects=S, seq=1, stream_time=T0)


# -- upcasting: the mechanism, fed a frozen v1 fixture ------------------------------------------


class _V3(BaseModel):
    name: str
    weight_kg: float
    source: str


def test_upcasters_run_in_a_chain_before_validation() -> None:
    v1 = {"name": "a", "weight_g": 1500}  # a frozen fixture of version 1

    def v1_v2(d: dict[str, Any]) -> dict[str, Any]:
        return {"name": d["name"], "weight_kg": d["weight_g"] / 1000}

    def v2_v3(d: dict[str, Any]) -> dict[str, Any]:
        return {**d, "source": "unknown"}

    chain = {("x", 1): v1_v2, ("x", 2): v2_v3}
    out = _V3.model_validate(upcast("x", 1, v1, 3, chain))
    assert out == _V3(name="a", weight_kg=1.5, source="unknown")
    assert v1 == {"name": "a", "weight_g": 1500}  # the stored form is never rewritten


def test_a_missing_upcaster_is_an_error() -> None:
    with pytest.raises(LookupError, match="No upcaster"):
        upcast("x", 1, {}, 2, {})


def test_invalid_record_keeps_the_original_bytes_bounded() -> None:
    from jetgrid.events.invalid import KEEP_BYTES

    rec = InvalidMessage.of(b"x" * (KEEP_BYTES + 10), stream="JOBS", subject="s", reason="big")
    assert rec.truncated and rec.original_size == KEEP_BYTES + 10
    assert rec.original == b"x" * KEEP_BYTES
    small = InvalidMessage.of(b"\x00\xff", stream="JOBS", subject="s", reason="r")
    assert small.original == b"\x00\xff" and not small.truncated


def test_public_surface_is_explicit() -> None:
    assert sorted(events.__all__) == sorted(set(events.__all__))
    for name in events.__all__:
        assert hasattr(events, name), name


@pytest.mark.parametrize(
    ("raw", "subject", "priority"),
    [
        (b'{"model": "m", "prompt": "x"}', "jetgrid.jobs.fast.m.high", "high"),
        (b'{"model": "m", "prompt": "x", "priority": "low"}', "jetgrid.jobs.fast.m.low", "low"),
        (b'{"model": "m", "prompt": "x"}', "jetgrid.jobs.fast.m", "normal"),
        # the four-token form predates priorities: any payload priority is kept (queued normal)
        (b'{"model": "m", "prompt": "x", "priority": "high"}', "jetgrid.jobs.fast.m", "high"),
    ],
)
def test_priority_comes_from_the_subject_token(raw: bytes, subject: str, priority: str) -> None:
    env = decode_submission(raw, subject=subject, subjects=S, seq=3, stream_time=T0)
    assert env.event.priority == priority


def test_a_payload_priority_must_agree_with_the_subject_token() -> None:
    with pytest.raises(InvalidEvent, match="field 'priority'"):
        decode_submission(
            b'{"model": "m", "prompt": "x", "priority": "low"}',
            subject="jetgrid.jobs.fast.m.high",
            subjects=S,
            seq=3,
            stream_time=T0,
        )


@pytest.mark.parametrize(
    "raw",
    [
        b"\xef\xbb\xbf" + _envelope(),  # a UTF-8 byte order mark
        _envelope().decode().encode("utf-16"),
        _envelope(source="caf\u00e9 \U0001f600"),
    ],
)
def test_decode_takes_every_body_json_loads_takes(raw: bytes) -> None:
    # The fast parser refuses some of these; the codec falls back to json.loads for them.
    assert decode(raw).source == json.loads(raw)["source"]


@pytest.mark.parametrize("raw", [b"", b"{", b'{"a": 1} x', b'"\xff"', b"[1,]", b"01"])
def test_bodies_that_are_not_json_keep_json_loads_reason(raw: bytes) -> None:
    with pytest.raises(json.JSONDecodeError if raw != b'"\xff"' else UnicodeDecodeError) as want:
        json.loads(raw)
    with pytest.raises(InvalidEvent) as got:
        decode(raw)
    assert got.value.reason == f"Body is not JSON: {want.value}."


# -- submitter-chosen ids (issue 11, finding 2) -------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m", "prompt": "x", "id": "mine"}',
        b'{"model": "m", "prompt": "x", "job_id": "mine"}',
        b'{"model": "m", "prompt": "x", "id": "mine", "job_id": "mine"}',
    ],
)
def test_a_bare_job_names_its_id_with_id_as_documented_or_job_id(body: bytes) -> None:
    env = decode_submission(body, subject=S.submit("fast", "m"), subjects=S, seq=5, stream_time=T0)
    assert env.event.job_id == "mine" and env.id == "mine"


def test_id_and_job_id_that_disagree_are_refused() -> None:
    body = b'{"model": "m", "prompt": "x", "id": "a", "job_id": "b"}'
    with pytest.raises(InvalidEvent, match="disagree"):
        decode_submission(body, subject=S.submit("fast", "m"), subjects=S, seq=5, stream_time=T0)


@pytest.mark.parametrize("field", ["id", "job_id"])
def test_a_bare_job_cannot_claim_a_derived_id_in_advance(field: str) -> None:
    body = json.dumps({"model": "m", "prompt": "x", field: "seq-2099"}).encode()
    with pytest.raises(InvalidEvent, match="reserved prefix 'seq-'"):
        decode_submission(body, subject=S.submit("fast", "m"), subjects=S, seq=3, stream_time=T0)


def test_an_enveloped_job_cannot_claim_a_derived_id_either() -> None:
    raw = encode(JobSubmitted(job_id="seq-2099", model="m", pool="fast", prompt="x"), source="t")
    with pytest.raises(InvalidEvent, match="reserved prefix"):
        decode_submission(raw, subject=S.submit("fast", "m"), subjects=S, seq=3, stream_time=T0)


@pytest.mark.parametrize(
    ("body", "job_id"),
    [
        (b'{"model": "m", "id": "mine"}', "mine"),  # bad fields, usable id: its own subject
        (b'{"model": "m", "job_id": "mine"}', "mine"),
        (b'{"model": "m", "id": "seq-2099"}', "seq-3"),  # reserved: never the victim's
        (b'{"model": "m", "id": "a.b"}', "seq-3"),  # not a token
        (b'{"model": "m", "id": 5}', "seq-3"),
        (b"[1, 2]", "seq-3"),
        (b"\xff", "seq-3"),
        (encode(JobSubmitted(job_id="env", model="m", pool="p", prompt="x"), source="t"), "env"),
    ],
)
def test_a_refused_submission_is_reported_on_its_own_job(body: bytes, job_id: str) -> None:
    assert events.refused_job_id(body, 3) == job_id


# -- bounds: no body makes the codec raise anything but InvalidEvent ------------------------------

DEEP = [
    b"[" * 1000 + b"]" * 1000,
    b'{"a":' * 1000 + b"1" + b"}" * 1000,
    b"[" * 100_000,
    # a job's options nested 1,000 deep: 2 KB that used to raise RecursionError
    _envelope().replace(b'"options": {}', b'"options": {"x": ' + b"[" * 1000 + b"]" * 1000 + b"}"),
]


@pytest.mark.parametrize("raw", DEEP)
def test_deep_nesting_is_a_clear_rejection(raw: bytes) -> None:
    with pytest.raises(InvalidEvent, match="nests deeper than 32 levels"):
        decode(raw)
    with pytest.raises(InvalidEvent, match="nests deeper than 32 levels"):
        decode_submission(raw, subject="jetgrid.jobs.fast.m", subjects=S, seq=1, stream_time=T0)


def test_nesting_up_to_the_limit_is_taken() -> None:
    assert load_json(b"[" * 32 + b"]" * 32) is not None
    with pytest.raises(InvalidEvent):
        load_json(b"[" * 33 + b"]" * 33)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[NaN]", "not a JSON number|finite number"),
        (b"[Infinity]", "finite number"),
        (b"[-Infinity]", "finite number"),
        (b"[1e999]", "finite number"),
        (b"[1E99999999999999999999]", "finite number"),
        (b"[" + b"9" * 30 + b"]", "64-bit"),
        (b"[" + b"9" * 5000 + b"]", "not JSON|64-bit"),
        (b'["\\ud800"]', "lone surrogate"),  # escaped, as json.dumps writes it
        (b'{"\\udc00": 1}', "lone surrogate"),
        (b'["\xed\xa0\x80"]', "lone surrogate"),  # a surrogate encoded as UTF-8 bytes
        (b'"\xff"', "not JSON"),
        (b"{" + b",".join(b'"k%d":1' % i for i in range(5000)) + b"}", "keys"),
    ],
)
def test_odd_numbers_strings_and_shapes_are_clear_rejections(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        load_json(raw)


def test_a_lone_surrogate_in_an_envelope_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="lone surrogate"):
        decode(_envelope(source="w\ud800"))


def test_a_body_over_the_size_bound_is_refused_before_parsing() -> None:
    from jetgrid.events.bounds import MAX_BYTES

    with pytest.raises(InvalidEvent, match="bytes; at most"):
        load_json(b" " * (MAX_BYTES + 1))


def test_real_events_nest_well_inside_the_bound() -> None:
    def depth(v: Any) -> int:
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        return 0

    chat = JobSubmitted(
        job_id="j1",
        model="m",
        pool="fast",
        kind="chat",
        input={"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
    )
    deepest = max(
        depth(json.loads(encode(e, source="t")))
        for e in [chat, *(BY_TYPE[t].model_validate(d) for t, d in SAMPLES.items())]
    )
    assert deepest <= 8


@pytest.mark.parametrize("token", ["_ZZ", "a_4", "_e9", "a_C3", "_61", "m_2D"])
def test_a_model_token_no_model_encodes_to_is_a_clear_rejection(token: str) -> None:
    with pytest.raises(InvalidEvent, match="Model token"):
        decode_submission(
            b'{"model": "a", "prompt": "x"}',
            subject=f"jetgrid.jobs.fast.{token}",
            subjects=S,
            seq=1,
            stream_time=T0,
        )
