"""The NATS adapter: one publishing rule, and no nats-py error escapes it."""

from __future__ import annotations

import asyncio
from unittest.mock import MagicMock

import nats.errors
import nats.js.errors
import pytest

from jetgrid.coordinator.bus import Bus, ConnectionErrors, translate
from jetgrid.coordinator.errors import (
    NatsError,
    NatsTimeout,
    NatsUnavailable,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
)
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobCancelled, JobCancelRequested, JobSubmitted, decode
from jetgrid.events.addressing import Speaker

CASES = [
    (nats.errors.TimeoutError(), NatsTimeout),
    (TimeoutError(), NatsTimeout),
    (nats.errors.MaxPayloadError(), PayloadTooLarge),
    (nats.errors.NoRespondersError(), NotFound),
    (nats.js.errors.NotFoundError(), NotFound),
    (nats.js.errors.BucketNotFoundError(), NotFound),
    (nats.js.errors.APIError(code=400, description="bad request", err_code=10052), NatsError),
    (nats.errors.ConnectionClosedError(), NatsUnavailable),
    (nats.errors.OutboundBufferLimitError(), NatsUnavailable),
    (ConnectionResetError(), NatsUnavailable),
]


@pytest.mark.parametrize(("raised", "expected"), CASES)
def test_every_driver_error_becomes_a_jetgrid_error_naming_the_action(raised, expected) -> None:
    got = translate(raised, "publish to jg.jobs.fast.m")
    assert type(got) is expected
    assert "jg.jobs.fast.m" in str(got)


def test_a_timeout_after_a_refusal_is_a_permission_denied_naming_the_refusal() -> None:
    errors = ConnectionErrors()
    errors.record('nats: permissions violation for publish to "jg.jobs.fast.m"')
    got = translate(nats.errors.TimeoutError(), "publish to jg.jobs.fast.m", errors)
    assert isinstance(got, PermissionDenied)
    assert str(got).startswith("NATS refused to publish to jg.jobs.fast.m: ")
    assert '"jg.jobs.fast.m"' in str(got)
    # The refusal is attributed once; the next bare timeout is a timeout again.
    assert isinstance(translate(TimeoutError(), "x", errors), NatsTimeout)


@pytest.mark.integration
async def test_store_publishes_by_the_addressing_rule_and_reports_duplicates(
    bus: Bus, streams: Settings
) -> None:
    job = JobSubmitted(job_id="j1", model="echo", pool="standard", prompt="hi")
    first = await bus.store(job, Speaker.service("test"))
    again = await bus.store(job, Speaker.service("test"))
    assert (first.duplicate, again.duplicate, again.seq) == (False, True, first.seq)
    stored = await bus.message(streams.streams.jobs, first.seq)
    assert stored is not None and stored.subject == streams.subjects.submit("standard", "echo")
    env = decode(stored.data)
    assert env.id == "j1" and env.source == "jetgrid/test"
    assert stored.headers.get("Nats-Msg-Id") == "j1"


@pytest.mark.integration
async def test_reads_of_what_is_not_there_are_none_or_not_found(
    bus: Bus, streams: Settings
) -> None:
    assert await bus.message(streams.streams.jobs, 999) is None
    assert await bus.last_message(streams.streams.job_events, "nothing.here") is None
    with pytest.raises(NotFound, match="NO_SUCH_STREAM"):
        await bus.last_seq("NO_SUCH_STREAM")
    with pytest.raises(NotFound, match="provision"):
        await bus.call(bus.js.publish("nobody.listens.here", b"x"), "publish to nobody")


@pytest.mark.integration
async def test_follow_job_returns_the_terminal_event_or_none(bus: Bus, streams: Settings) -> None:
    async with bus.follow_job("j1") as follower:
        assert await follower.outcome(0.2) is None
        await bus.store(JobCancelRequested(job_id="j1"), Speaker.service("test"))
        assert await follower.outcome(0.2) is None  # a cancel request is not an outcome
        await bus.store(JobCancelled(job_id="j1", worker_id="w1"), Speaker.worker("w1", "b"))
        got = await follower.outcome(5)
    assert got is not None and isinstance(got.event, JobCancelled)
    assert got.subject == streams.subjects.job_event("j1", "cancelled", "w1")


@pytest.mark.integration
async def test_batched_reads_page_past_one_batch(bus: Bus, streams: Settings) -> None:
    stream = streams.streams.workers
    for i in range(600):  # 300 subjects, two messages each
        await bus.js.publish(streams.subjects.worker_event(f"w{i % 300}", "heartbeat"), b"%d" % i)
    got = await bus.messages(stream, limit=1000)
    assert [m.data for m in got] == [b"%d" % i for i in range(600)]
    assert [m.seq for m in got] == list(range(1, 601))
    some = await bus.messages(stream, seq=10, up_to_seq=20, limit=1000)
    assert [m.seq for m in some] == list(range(10, 21))
    one = await bus.messages(stream, subject=streams.subjects.worker_event("w7", "heartbeat"))
    assert [m.data for m in one] == [b"7", b"307"]
    newest = await bus.messages(stream, last_of=streams.subjects.worker_events(), limit=1000)
    assert sorted(m.data for m in newest) == sorted(b"%d" % i for i in range(300, 600))
    before = await bus.messages(
        stream, last_of=streams.subjects.worker_events(), up_to_seq=300, limit=1000
    )
    assert sorted(m.seq for m in before) == list(range(1, 301))
    assert await bus.messages(stream, seq=601) == []
    assert await bus.messages(stream, subject="nothing.here") == []


async def test_a_refusal_ends_the_oldest_waiting_call_at_once_and_no_other() -> None:
    bus = Bus(MagicMock(), Settings())  # calls on plain futures: no server needed
    loop = asyncio.get_running_loop()
    slow: asyncio.Future[str] = loop.create_future()
    other: asyncio.Future[str] = loop.create_future()
    first = asyncio.create_task(bus.call(slow, "publish to jg.jobs.fast.m"))
    second = asyncio.create_task(bus.call(other, "read a message"))
    await asyncio.sleep(0)  # both wait on NATS now
    assert bus.errors.record('nats: permissions violation for publish to "jg.jobs.fast.m"')
    with pytest.raises(PermissionDenied, match=r"NATS refused to publish to jg\.jobs\.fast\.m"):
        await first
    other.set_result("ok")
    assert await second == "ok"  # not the one refused
    assert not bus.errors.waiting and not bus.errors.refused
    outer = asyncio.create_task(bus.call(loop.create_future(), "flush the connection"))
    await asyncio.sleep(0)
    outer.cancel()  # a cancel from outside stays a cancel
    with pytest.raises(asyncio.CancelledError):
        await outer
