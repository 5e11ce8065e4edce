"""Generated hostile bodies: the codec answers each with an envelope or InvalidEvent, only."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jetgrid.events import (
    BY_TYPE,
    InvalidEvent,
    Subjects,
    decode,
    decode_submission,
    load_json,
)

T0 = datetime(2026, 11, 22, 12, tzinfo=UTC)
S = Subjects("jetgrid")

odd_numbers = st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999", "9" * 40, "-" + "9" * 25,
     "1E400", "0.0000001e-400", "123456789012345678901234567890.5", "1" + "0" * 4400]
)  # fmt: skip
odd_strings = st.sampled_from(
    ['"\\ud800"', '"\\udfff x"', '"a\\u0000b"', '"\\uDBFF\\uDFFF"', '"\\u00e9"', '"\\\\"']
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


def nest(text: str, depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + text + "]" * depth
    return '{"a":' * depth + text + "}" * depth


@st.composite
def hostile_text(draw: st.DrawFn) -> bytes:
    """A JSON-ish document: a forged envelope or bare job with odd leaves, maybe nested deep."""
    envelope: dict[str, Any] = {
        "specversion": draw(st.sampled_from(["1.0", "0.3", 1, None])),
        "id": draw(st.sampled_from(["x", "", "seq-1", "invalid:JOBS:1", 7])),
        "source": draw(st.sampled_from(["nats", "jetgrid/worker/w1", "", None])),
        "type": draw(st.sampled_from([*BY_TYPE, "jetgrid.job.nope", 3])),
        "time": draw(st.sampled_from(["2026-11-22T12:00:00Z", "9999-12-31T23:59:59-23:59", "x"])),
        "dataversion": draw(st.sampled_from([1, 0, 2, 2**70, True, "1"])),
        "data": draw(values),
    }
    if draw(st.booleans()):  # a bare submission instead
        envelope = {"model": draw(st.sampled_from(["m", "a", 5])), "prompt": draw(values)}
    keys = draw(st.lists(st.sampled_from(list(envelope)), unique=True))
    doc = json.dumps({k: envelope[k] for k in keys})
    leaf = draw(st.one_of(odd_numbers, odd_strings, st.just("1")))
    doc = doc.replace("}", f', "odd": {leaf}}}', 1) if doc != "{}" else f'{{"odd": {leaf}}}'
    depth = draw(st.sampled_from([0, 1, 31, 33, 200, 1000, 5000]))
    doc = nest(doc, depth, draw(st.sampled_from(["list", "dict"])))
    raw = doc.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):  # cut it, or splice in a byte that is not UTF-8
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"", b"\xff", b"\xed\xa0\x80", b"\xc3"])) + raw[at:]
    return raw


subjects = st.sampled_from(
    ["jetgrid.jobs.fast.m", "jetgrid.jobs.fast.a", "jetgrid.jobs.fast._61", "jetgrid.jobs.fast._ZZ",
     "jetgrid.jobs.fast.m.high", "jetgrid.jobs.fast.m.urgent", "jetgrid.jobs.fast", "other"]
)  # fmt: skip


def only_invalid_event(call: Any) -> None:
    try:
        call()
    except InvalidEvent as exc:
        assert exc.reason and "\n" not in exc.reason
    # anything else propagates and fails the test


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(hostile_text(), st.binary(max_size=200)), subject=subjects)
def test_no_body_makes_the_codec_raise_anything_but_invalid_event(raw: bytes, subject: str) -> None:
    only_invalid_event(lambda: load_json(raw))
    only_invalid_event(lambda: decode(raw))
    only_invalid_event(
        lambda: decode_submission(raw, subject=subject, subjects=S, seq=1, stream_time=T0)
    )


number_text = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.builds(
        lambda sign, lead, frac, e, esign, exp: f"{sign}{lead}{frac}{e}{esign}{exp}",
        st.sampled_from(["", "-"]), st.integers(0, 10**25), st.sampled_from(["", ".5", ".0"]),
        st.sampled_from(["e", "E"]), st.sampled_from(["", "+", "-"]), st.integers(0, 1200),
    ),
)  # fmt: skip


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.one_of(
        hostile_text(),
        st.lists(number_text, max_size=4).map(lambda xs: ("[" + ", ".join(xs) + "]").encode()),
        number_text.map(lambda x: f' {{"n":{x}}}'.encode()),
        number_text.map(str.encode),
    )
)
def test_the_byte_scan_skips_the_walk_only_for_documents_within_the_bounds(raw: bytes) -> None:
    """load_json skips walking a parsed document when the raw bytes prove it within the bounds;
    whenever they do, the walk would have accepted it."""
    from pydantic_core import from_json

    from jetgrid.events.bounds import _check, within_bounds

    try:
        obj = from_json(raw, allow_inf_nan=False)
    except ValueError:
        return
    if within_bounds(raw):
        _check(obj, strings=False)  # raises InvalidEvent if the scan was wrong
