"""events.envelope.read, the one pass codec.decode tries first: it takes every current event,
and whatever it takes, the checked path reads the same, for generated, mutated and hostile
bodies; whatever it does not take, decode answers as the checked path does."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jetgrid.events import (
    BY_TYPE,
    GpuTelemetry,
    InvalidEvent,
    JobCompleted,
    JobSubmitted,
    Subjects,
    WorkerHeartbeat,
    codec,
    decode,
    decode_submission,
    encode,
)
from jetgrid.events.bounds import Cleared
from jetgrid.events.catalogue import RETIRED_TYPES
from jetgrid.events.lifecycle import Claim
from tests.events.test_codec import SAMPLES
from tests.events.test_codec_hostile import hostile_text, odd_numbers, values

T0 = datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=UTC)
# A fixed event id: encode's own (a uuid4's hex) holds 19 decimal digits in a row about once in
# a thousand, which sends the bytes down the checked path (bounds.within_bounds: an integer
# beyond 64 bits needs that many), and an assertion that the one pass takes them would fail.
ID = "ev-1"
S = Subjects("jetgrid")
CURRENT = sorted(set(SAMPLES) - set(RETIRED_TYPES))
GPU = GpuTelemetry(
    index=0, uuid="GPU-0", name="NVIDIA H100", memory_used_mb=1000.0, memory_total_mb=81559.0,
    utilization_pct=37.0, temperature_c=55.0, power_w=250.0, ecc_errors=0, xid_errors=0,
)  # fmt: skip
RICH = [
    WorkerHeartbeat(worker_id="w1", n=7, healthy=True, interval_s=1.0, in_flight=1, gpus=[GPU]),
    JobCompleted(
        job_id="j1",
        worker_id="w1",
        attempt=1,
        output="hi",
        duration_s=0.1,
        claim=Claim(jobs_seq=3, tier_factor=0.5, at=T0),
    ),
    JobSubmitted(
        job_id="j1",
        model="m",
        pool="fast",
        input={"messages": [{"role": "user", "content": "é"}]},
        options={"temperature": 0.2, "stop": ["\n"], "seed": 2**40},
        priority="high",
    ),
]


def outcome(read: Any, raw: bytes) -> str:
    """What a reader makes of `raw`: the envelope's repr (types included: 1 is not 1.0), or the
    InvalidEvent's reason."""
    try:
        return repr(read(raw))
    except InvalidEvent as exc:
        return f"InvalidEvent: {exc.reason}"


def agree(raw: bytes) -> None:
    """Whatever the one pass takes, the checked path reads the same; decode answers as the
    checked path does."""
    fast = codec._current(raw)
    checked = outcome(codec._decode_checked, raw)
    if fast is not None:
        assert repr(fast) == checked, raw
    assert outcome(decode, raw) == checked, raw


@pytest.mark.parametrize("type_", CURRENT)
def test_every_current_event_takes_the_one_pass(type_: str) -> None:
    raw = encode(BY_TYPE[type_](**SAMPLES[type_]), source="t", time=T0, id=ID)
    assert codec._current(raw) is not None
    assert codec._current(Cleared(raw)) == codec._current(raw)  # as a replay reads it
    agree(raw)


@pytest.mark.parametrize("event", RICH, ids=lambda e: e.type)
def test_nested_models_and_free_form_fields_take_the_one_pass(event: Any) -> None:
    raw = encode(event, source="t", time=T0, id=ID)
    assert codec._current(raw) is not None
    agree(raw)


def _envelope(type_: str) -> dict[str, Any]:
    return json.loads(encode(BY_TYPE[type_](**SAMPLES[type_]), source="t", time=T0, id=ID))


def _with(type_: str, **attrs: Any) -> bytes:
    return json.dumps(_envelope(type_) | attrs).encode()


def _without(type_: str, key: str) -> bytes:
    return json.dumps({k: v for k, v in _envelope(type_).items() if k != key}).encode()


UPCAST = [  # what only the checked path reads: an older version, a retired type
    json.dumps(
        {
            **_envelope("jetgrid.job.started"),
            "dataversion": 1,
            "data": {"job_id": "j1", "worker_id": "w1", "attempt": 1},
        }
    ).encode(),
    _with("jetgrid.job.started", type="jetgrid.job.claimed", dataversion=1),
    _without("jetgrid.job.started", "dataversion"),  # version 2: absent means 1
]
OUTSIDE = [  # tokens the one pass must not meet: it would take NaN, Infinity and any integer
    _with(
        "jetgrid.job.completed",
        data={**_envelope("jetgrid.job.completed")["data"], "output": {"x": 2**70}},
    ),
    encode(
        JobCompleted(
            job_id="j1", worker_id="w1", attempt=1, output="NaN and Infinity", duration_s=0.1
        ),
        source="t",
    ),
    b'{"specversion":"1.0","id":"x","source":"t","type":"jetgrid.job.completed","time":'
    b'"2026-11-22T12:00:00Z","data":{"job_id":"j1","worker_id":"w1","attempt":1,'
    b'"output":NaN,"duration_s":1}}',
    b'{"specversion":"1.0","id":"x","source":"t","type":"jetgrid.job.completed","time":'
    b'"2026-11-22T12:00:00Z","data":{"job_id":"j1","worker_id":"w1","attempt":1,'
    b'"output":1e999,"duration_s":1}}',
]
OTHERS = [
    _without("jetgrid.job.completed", "dataversion"),  # version 1: absent means 1
    _with("jetgrid.job.completed", dataversion=1.0),
    _with("jetgrid.job.completed", dataversion=True),
    _with("jetgrid.job.completed", dataversion="1"),
    _with("jetgrid.job.completed", dataversion=None),
    _with("jetgrid.job.completed", dataversion=2),
    _with("jetgrid.job.completed", specversion="0.3"),
    _with("jetgrid.job.completed", id=""),
    _with("jetgrid.job.completed", id=7),
    _with("jetgrid.job.completed", source=""),
    _with("jetgrid.job.completed", time="yesterday"),
    _with("jetgrid.job.completed", time="2026-11-22T12:00:00"),  # naive: taken as UTC
    _with("jetgrid.job.completed", time=1796000000),
    _with("jetgrid.job.completed", type="jetgrid.job.nope"),
    _with("jetgrid.job.completed", type=3),
    _with("jetgrid.job.completed", data=[]),
    _with("jetgrid.job.completed", extra=1),
    _with("jetgrid.job.completed", subject={"any": ["thing"]}, dataschema=None),
    _without("jetgrid.job.completed", "time"),
    _without("jetgrid.job.completed", "source"),
    # a key twice: the last one counts, on both paths
    b'{"specversion":"1.0","id":"a","id":"b","source":"t","type":"jetgrid.job.cancelled",'
    b'"time":"2026-11-22T12:00:00Z","data":{"job_id":"j1","job_id":"j2"}}',
    b'{"specversion":"1.0","id":"a","source":"t","type":"jetgrid.job.cancelled",'
    b'"type":"jetgrid.job.nope","time":"2026-11-22T12:00:00Z","data":{"job_id":"j1"}}',
    b"\xef\xbb\xbf" + encode(BY_TYPE["jetgrid.job.cancelled"](job_id="j1"), source="t"),
]


@pytest.mark.parametrize("raw", UPCAST + OUTSIDE + OTHERS)
def test_decode_answers_as_the_checked_path_does(raw: bytes) -> None:
    agree(raw)


@pytest.mark.parametrize("raw", UPCAST + OUTSIDE)
def test_what_needs_an_upcast_or_holds_a_token_outside_the_bounds_goes_the_checked_way(
    raw: bytes,
) -> None:
    assert codec._current(raw) is None


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A current event's envelope with a few attributes or data fields replaced, dropped or
    added (odd JSON values, numbers outside the bounds, fields of another type)."""
    type_ = draw(st.sampled_from(CURRENT))
    env = _envelope(type_)
    fields = [*env["data"], *BY_TYPE[type_].model_fields, "zz"]
    for _ in range(draw(st.integers(1, 3))):
        data = env.get("data")
        where = env if draw(st.booleans()) or not isinstance(data, dict) else data
        key = draw(st.sampled_from([*env, "zz"] if where is env else fields))
        if draw(st.integers(0, 3)) == 0:
            where.pop(key, None)
        else:
            where[key] = draw(values | st.sampled_from([1, 1.0, True, "1", 0, -1, 2**63, ""]))
    raw = json.dumps(env)
    if draw(st.booleans()):  # a number token json.dumps cannot write
        raw = raw.replace('"zz": 1', f'"zz": {draw(odd_numbers)}', 1)
    return raw.encode()


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=mutated())
def test_mutated_envelopes_read_the_same_either_way(raw: bytes) -> None:
    agree(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=hostile_text())
def test_hostile_bodies_read_the_same_either_way(raw: bytes) -> None:
    agree(raw)


def test_an_enveloped_submission_reads_the_same_either_way() -> None:
    raw = encode(RICH[2], source="t", time=T0, id=ID)
    subject = S.submit("fast", "m", "high")
    got = decode_submission(raw, subject=subject, subjects=S, seq=4, stream_time=T0)
    assert codec._current(raw) is not None
    assert got == decode(raw).at(4, subject)
    forged = raw.replace(b'"job_id":"j1"', b'"job_id":"seq-9"')
    assert codec._current(forged) is not None  # read in one pass, and still refused
    with pytest.raises(InvalidEvent, match="reserved prefix"):
        decode_submission(forged, subject=subject, subjects=S, seq=4, stream_time=T0)
