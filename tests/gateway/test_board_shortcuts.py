"""The job board's cheap paths give what the long ones give: a delivered message's position is
read from its reply subject as nats-py reads it, and a waited request's outcome comes from one
timer, with the waiter forgotten however the wait ends."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg

from jetgrid.coordinator.settings import Settings
from jetgrid.gateway import board as board_module
from jetgrid.gateway.board import JobBoard

SETTINGS = Settings(subject_prefix="t")


class _NoBus:
    js = None  # these tests never reach NATS


def _board() -> JobBoard:
    board = JobBoard(_NoBus(), SETTINGS)  # type: ignore[arg-type]
    board._start = {SETTINGS.streams.jobs: 1, SETTINGS.streams.job_events: 1}
    return board


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.JOBS.c1.3.42.17.1733400000123456789.5",  # without a domain
        "$JS.ACK.hub.ACCHASH.JOBS.c1.3.42.17.1733400000123456789.5.rand",  # with one
    ],
)
def test_the_position_read_from_the_reply_is_what_nats_py_reads(reply: str) -> None:
    msg = Msg(_client=None, subject="x", reply=reply, data=b"")  # type: ignore[arg-type]
    md = msg.metadata
    assert board_module._position(msg) == (md.sequence.stream, md.timestamp)
    assert board_module._stream_seq(msg) == md.sequence.stream == 42


async def test_outcome_gives_the_view_or_none_after_the_timeout_and_forgets_the_waiter() -> None:
    board = _board()
    waiter = board.waiter("j1")
    assert await board.outcome("j1", waiter, 0.01) is None
    assert "j1" not in board._waiters
    waiter = board.waiter("j2")
    task = asyncio.create_task(board.outcome("j2", waiter, 30))
    await asyncio.sleep(0)
    task.cancel()  # the request went away: the cancellation is the caller's
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "j2" not in board._waiters
