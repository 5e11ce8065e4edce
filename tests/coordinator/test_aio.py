"""cancel_and_wait stops tasks that lose a cancellation (Python 3.11's wait_for can);
retrying waits and tries as a back-off policy says; ready_or_raise waits for readiness or the
error that came first."""

import asyncio

import pytest

from jetgrid.coordinator.aio import cancel_and_wait, ready_or_raise, retrying
from jetgrid.coordinator.backoff import Backoff
from jetgrid.coordinator.errors import NatsUnavailable, PermissionDenied


async def test_a_task_that_swallows_cancellations_is_stopped() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed >= 3:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await cancel_and_wait(task, within_s=5)
    assert task.cancelled() and swallowed == 3


async def test_a_task_that_never_stops_is_reported_not_awaited_forever() -> None:
    immortal = True

    async def refuses() -> None:
        while True:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                if not immortal:
                    raise

    task = asyncio.create_task(refuses())
    await asyncio.sleep(0)
    assert not await cancel_and_wait(task, within_s=0.3)
    assert not task.done()
    immortal = False
    assert await cancel_and_wait(task, within_s=5)


async def test_a_finished_task_is_left_as_it_was() -> None:
    async def quick() -> int:
        return 7

    task = asyncio.create_task(quick())
    await task
    assert await cancel_and_wait(task)
    assert task.result() == 7


async def test_an_error_inside_the_task_is_retrieved_not_raised() -> None:
    async def failing() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(failing())
    await asyncio.wait({task})
    assert await cancel_and_wait(task)
    assert isinstance(task.exception(), RuntimeError)


# -- retrying: acts on a back-off policy (the decisions are tested in test_backoff.py) --------
async def test_retrying_tries_until_the_operation_succeeds() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise NatsUnavailable("away")
        return "done"

    assert await retrying(flaky, Backoff(first_s=0.0), "do it") == "done"
    assert calls == 3


async def test_retrying_raises_the_last_error_when_the_policy_gives_up() -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise NatsUnavailable(f"away {calls}")

    with pytest.raises(NatsUnavailable, match="away 3"):
        await retrying(failing, Backoff(first_s=0.0, tries=3), "do it")
    assert calls == 3


async def test_retrying_never_retries_a_refusal() -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise PermissionDenied("no")

    with pytest.raises(PermissionDenied):
        await retrying(refused, Backoff(first_s=10.0, never=(PermissionDenied,)), "do it")
    assert calls == 1


async def test_retrying_waits_as_the_policy_says() -> None:
    events: list[str | float] = []

    async def failing() -> None:
        events.append("try")
        raise NatsUnavailable("away")

    async def sleep(s: float) -> None:  # time is an input: the waits are recorded, not spent
        events.append(s)

    policy = Backoff(first_s=0.05, factor=2.0, tries=3)
    with pytest.raises(NatsUnavailable):
        await retrying(failing, policy, "do it", sleep=sleep)
    # three tries, the policy's wait between each two, none after the last
    assert events == ["try", 0.05, "try", 0.1, "try"]


async def test_ready_or_raise_returns_once_ready_and_leaves_the_task_running() -> None:
    ready, go_on = asyncio.Event(), asyncio.Event()

    async def part() -> None:
        ready.set()
        await go_on.wait()

    task = asyncio.create_task(part())
    await ready_or_raise(ready, task)
    assert not task.done()
    go_on.set()
    await task


async def test_ready_or_raise_raises_what_stopped_the_task_first() -> None:
    async def broken() -> None:
        raise NatsUnavailable("Could not connect to NATS at nats://127.0.0.1:1.")

    with pytest.raises(NatsUnavailable, match="Could not connect"):
        await ready_or_raise(asyncio.Event(), asyncio.create_task(broken()))

    async def quits() -> None:
        return None

    with pytest.raises(RuntimeError, match="quitter stopped before it was ready"):
        await ready_or_raise(asyncio.Event(), asyncio.create_task(quits(), name="quitter"))
