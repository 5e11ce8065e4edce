"""Where a delivered JetStream message sits in its stream: its sequence and stored time.

`position` reads them from the reply subject nats-server gives a consumer's message without a
domain (``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>``),
at a sixth of the cost of building nats-py's ``msg.metadata``, which every fold (the projector,
a replay, a gateway's board) would otherwise pay per message; any other form goes through
``msg.metadata``, so the answer is always the one nats-py gives.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nats.aio.msg import Msg

__all__ = ["position", "position_ns", "stored_at", "stream_seq"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ack_tokens(msg: Msg) -> list[str] | None:
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        return tokens
    return None


def position(msg: Msg) -> tuple[int, datetime]:
    """The message's stream sequence and stored time."""
    tokens = _ack_tokens(msg)
    if tokens is None:
        md = msg.metadata
        return md.sequence.stream, md.timestamp
    return int(tokens[5]), stored_at(int(tokens[7]))


def stored_at(ns: int) -> datetime:
    """The stored time `position` gives for `position_ns`'s nanoseconds since the epoch."""
    return datetime.fromtimestamp(ns / 1_000_000_000.0, UTC)


def position_ns(msg: Msg) -> tuple[int, int]:
    """The message's stream sequence and stored time in nanoseconds since the epoch, which
    `stored_at` turns into the time `position` gives."""
    tokens = _ack_tokens(msg)
    if tokens is None:
        md = msg.metadata
        return md.sequence.stream, (md.timestamp - _EPOCH) // datetime.resolution * 1000
    return int(tokens[5]), int(tokens[7])


def stream_seq(msg: Msg) -> int:
    """The message's stream sequence."""
    tokens = _ack_tokens(msg)
    return int(tokens[5]) if tokens is not None else msg.metadata.sequence.stream
