"""Stalls as plain data (coordinator.stalls) and the watchdog's decisions (worker.stalls)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from jetgrid.coordinator.pools import parse_pools
from jetgrid.coordinator.stalls import (
    StallSeen,
    avoid_s,
    recent_stalls,
    stall_in,
    stall_problem,
    stall_reason,
)
from jetgrid.events import ConfigError
from jetgrid.worker.stalls import Avoid, Watchdog


@pytest.mark.parametrize(
    ("last", "now", "after", "due"),
    [(0.0, 0.0, 5.0, 5.0), (0.0, 4.0, 5.0, 1.0), (0.0, 5.0, 5.0, 0.0), (1.0, 9.0, 5.0, 0.0)],
)
def test_stall_in_counts_down_from_the_last_progress(
    last: float, now: float, after: float, due: float
) -> None:
    assert stall_in(last, now, after) == due


def test_a_stalled_job_is_avoided_for_its_backoff_and_one_stall_period() -> None:
    assert avoid_s(30.0, 5.0) == 35.0


def test_reasons_and_problems_name_the_figures() -> None:
    assert "2.5 s" in stall_reason(2.5, 2.0) and "stall_after_s is 2 s" in stall_reason(2.5, 2.0)
    assert stall_problem(1) == "1 job stalled since the previous ping"
    assert stall_problem(3) == "3 jobs stalled since the previous ping"


def test_recent_stalls_per_worker_newest_first_from_a_time() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    seen = [
        StallSeen("w2", "a", t0, 3.0),
        StallSeen("w1", "b", t0 + timedelta(seconds=5), 3.0),
        StallSeen("w2", "c", t0 + timedelta(seconds=9), 4.0),
        StallSeen("w1", "d", t0 - timedelta(seconds=1), 3.0),  # before `since`
    ]
    got = recent_stalls(seen, since=t0, keep=1)
    assert [(w.worker_id, w.count, [s.job_id for s in w.latest]) for w in got] == [
        ("w2", 2, ["c"]),
        ("w1", 1, ["b"]),
    ]
    assert recent_stalls([], since=t0) == []


def test_a_pool_sets_stall_after_s_and_refuses_a_bad_one() -> None:
    text = '[[pool]]\nname = "standard"\nstall_after_s = 45\n'
    assert parse_pools(text, default="standard")["standard"].stall_after_s == 45.0
    assert parse_pools('[[pool]]\nname = "x"\n', default="x")["x"].stall_after_s is None
    with pytest.raises(ConfigError, match="stall_after_s 0"):
        parse_pools('[[pool]]\nname = "x"\nstall_after_s = 0\n', default="x")


class FakeTime:
    """A clock the test moves; `sleep` moves it by the asked time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s
        await asyncio.sleep(0)


async def test_the_watchdog_cancels_a_run_without_progress() -> None:
    t = FakeTime()
    dog = Watchdog(10.0, clock=t.clock, sleep=t.sleep)
    run = asyncio.create_task(asyncio.Event().wait())
    await dog.watch(run.cancel)
    await asyncio.wait({run})
    assert run.cancelled() and dog.stalled_s == 10.0 and t.slept == [10.0]


async def test_each_token_restarts_the_watchdogs_count() -> None:
    t = FakeTime()
    dog = Watchdog(10.0, clock=t.clock, sleep=t.sleep)
    seen: list[str] = []

    async def sink(text: str) -> None:
        seen.append(text)

    emit = dog.wrap(sink)

    async def backend() -> None:
        t.now += 6.0
        await emit("a")  # progress at 106: the stall is due at 116, not 110
        await asyncio.Event().wait()

    run = asyncio.create_task(backend())
    await asyncio.sleep(0)
    await dog.watch(run.cancel)
    await asyncio.wait({run})
    assert seen == ["a"] and dog.stalled_s == 10.0 and t.now == 116.0


async def test_a_run_that_ends_in_time_is_not_stalled() -> None:
    t = FakeTime()
    dog = Watchdog(10.0, clock=t.clock, sleep=t.sleep)
    cancels: list[str] = []
    watch = asyncio.create_task(dog.watch(lambda: cancels.append("cancel")))
    await asyncio.sleep(0)  # the watch waits out the 10 s the job has...
    watch.cancel()  # ...and the run ends first: its caller stops the watch
    await asyncio.wait({watch})
    assert watch.cancelled() and dog.stalled_s is None and not cancels and t.slept == [10.0]


def test_avoid_forgets_a_job_when_its_time_is_up() -> None:
    t = FakeTime()
    avoid = Avoid(clock=t.clock)
    avoid.add("j1", 5.0)
    assert avoid.remaining("j1") == 5.0 and avoid.remaining("j2") == 0.0
    t.now += 5.0
    assert avoid.remaining("j1") == 0.0 and avoid.until == {}
