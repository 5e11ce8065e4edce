"""W3C traceparent parsing and making (coordinator.tracecontext)."""

from __future__ import annotations

import itertools

import pytest

from jetgrid.coordinator.tracecontext import TraceParent, new_trace, parse

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (f"00-{TID}-{PID}-01", TraceParent(TID, PID, 1)),
        (f"00-{TID}-{PID}-00", TraceParent(TID, PID, 0)),
        (f" 00-{TID}-{PID}-01 ", TraceParent(TID, PID, 1)),
        (f"01-{TID}-{PID}-01-future-fields", TraceParent(TID, PID, 1)),  # a later version
        (f"00-{TID}-{PID}-01-extra", None),  # version 00 has exactly four fields
        (f"ff-{TID}-{PID}-01", None),  # version ff is invalid
        (f"00-{'0' * 32}-{PID}-01", None),  # all-zero trace id
        (f"00-{TID}-{'0' * 16}-01", None),  # all-zero parent id
        (f"00-{TID.upper()}-{PID}-01", None),  # uppercase hex
        (f"00-{TID[:-1]}-{PID}-01", None),  # short trace id
        (f"00-{TID}-{PID}-1", None),  # short flags
        (f"00-{TID}-{PID}-zz", None),
        (f"0-{TID}-{PID}-01", None),
        (f"00-{TID}-{PID}", None),
        ("", None),
        (None, None),
        ("garbage", None),
    ],
)
def test_parse_follows_the_w3c_rules(value: str | None, want: TraceParent | None) -> None:
    assert parse(value) == want


def test_a_traceparent_round_trips_and_names_a_child() -> None:
    tp = TraceParent(TID, PID, 1)
    assert tp.header() == f"00-{TID}-{PID}-01" and parse(tp.header()) == tp
    assert tp.child("b7ad6b7169203331") == TraceParent(TID, "b7ad6b7169203331", 1)
    assert tp.sampled and not TraceParent(TID, PID, 0).sampled


def test_a_new_trace_is_valid_and_skips_all_zero_ids() -> None:
    draws = itertools.chain([b"\0" * 16, b"\0" * 8], [b"\1" * 16, b"\2" * 8])
    tp = new_trace(lambda n: next(draws))
    assert tp == TraceParent("01" * 16, "02" * 8, 1)
    assert parse(new_trace().header()) is not None
