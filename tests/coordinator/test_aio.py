"""cancel_and_wait stops tasks that lose a cancellation (Python 3.11's wait_for can)."""

import asyncio

from jetgrid.coordinator.aio import cancel_and_wait


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
