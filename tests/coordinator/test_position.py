"""A delivered message's stream position, read from its reply subject, is what nats-py's
``msg.metadata`` says, in every reply form (coordinator.position)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nats.aio.msg import Msg

from jetgrid.coordinator.position import position, position_ns, stream_seq


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.B_WORKERS.abc.1.4242.17.1764950400123456789.0",
        "$JS.ACK.S.c.3.1.1.1700000000000000001.99",
        "$JS.ACK.JOBS.c1.3.42.17.1733400000123456789.5",
        # with a domain and an account hash: left to nats-py
        "$JS.ACK.dom.ACCHASH.S.c.1.77.5.1764950400123456789.2.rnd",
        "$JS.ACK._.ACCHASH.S.c.1.78.6.1764950400123456789.2",
        "$JS.ACK.hub.ACCHASH.JOBS.c1.3.42.17.1733400000123456789.5.rand",
    ],
)
def test_a_position_is_what_nats_metadata_says(reply: str) -> None:
    msg = Msg(_client=None, subject="s", reply=reply, data=b"")  # type: ignore[arg-type]
    md = msg.metadata
    seq, stamp = position(msg)
    assert (seq, stamp) == (md.sequence.stream, md.timestamp)
    assert stamp.tzinfo is not None and stamp.utcoffset() == md.timestamp.utcoffset()
    assert stream_seq(msg) == md.sequence.stream
    seq_ns, ns = position_ns(msg)  # what a replay's child process sends its parent
    assert seq_ns == seq and datetime.fromtimestamp(ns / 1_000_000_000.0, UTC) == stamp
