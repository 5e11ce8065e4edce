"""Small asyncio helpers the I/O edges share: stopping background tasks, retrying an operation.

On Python 3.11, ``asyncio.wait_for`` swallows a cancellation that arrives in the same loop
iteration as the awaited future's result (CPython gh-86296, fixed in 3.12). nats-py waits on
``wait_for`` everywhere (``next_msg``, ``fetch``, requests), so a single ``task.cancel()`` can
be lost, and a ``while True`` loop inside the task then runs on forever, holding shutdown.
`cancel_and_wait` repeats the cancellation until the task has really finished.

`retrying` acts on a back-off policy (coordinator.backoff decides; this only waits and tries).
`ready_or_raise` waits for a background task to say it is ready, or raises what stopped it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from jetgrid.coordinator.backoff import Backoff, Stop, after_failure

log = logging.getLogger("jetgrid.aio")

RECANCEL_EVERY_S = 0.1

T = TypeVar("T")


async def cancel_and_wait(task: asyncio.Task[object], *, within_s: float = 10.0) -> bool:
    """Cancel `task` (again, should it swallow the request) until it is done, for at most
    `within_s`. Returns whether it finished; its result or error is retrieved and dropped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=min(RECANCEL_EVERY_S, max(0.0, deadline - loop.time())))
        if loop.time() >= deadline and not task.done():
            log.warning("task %s did not stop within %g s", task.get_name(), within_s)
            return False
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
    return True


async def ready_or_raise(ready: asyncio.Event, task: asyncio.Task[Any]) -> None:
    """Wait until `ready` is set; if `task` ends first, raise its error (a RuntimeError that
    names it where it ended without one). `task` keeps running either way."""
    waiter = asyncio.ensure_future(ready.wait())
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if ready.is_set():
        return
    if not task.cancelled() and (exc := task.exception()) is not None:
        raise exc
    raise RuntimeError(f"{task.get_name()} stopped before it was ready")


async def retrying(
    op: Callable[[], Awaitable[T]],
    policy: Backoff,
    what: str,
    *,
    logger: logging.Logger = log,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run `op` (safe to repeat) until it succeeds, waiting after each failure as `policy`
    decides (with `sleep`: tests pass one that records the waits); when it says stop, raise
    the last error. `what` completes "could not ... yet"."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    failures = 0
    while True:
        try:
            return await op()
        except Exception as exc:
            failures += 1
            step = after_failure(policy, failures, loop.time() - started, exc)
            if isinstance(step, Stop):
                raise
            logger.info("could not %s yet (%s); retrying", what, exc)
        await sleep(step.delay_s)
