"""The job board's cheap paths give what the long ones give: a waited request's outcome comes
from one timer, with the waiter forgotten however the wait ends."""

from __future__ import annotations

import asyncio

import pytest

from jetgrid.coordinator.settings import Settings
from jetgrid.gateway.board import JobBoard

SETTINGS = Settings(subject_prefix="t")


class _NoBus:
    js = None  # these tests never reach NATS


def _board() -> JobBoard:
    board = JobBoard(_NoBus(), SETTINGS)  # type: ignore[arg-type]
    board._start = {SETTINGS.streams.jobs: 1, SETTINGS.streams.job_events: 1}
    return board


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
