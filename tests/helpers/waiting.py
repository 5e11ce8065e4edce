"""Waiting on a condition (never a bare sleep): polled, with the last error kept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def until(cond: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> Any:
    """Wait until `cond()` (sync or async) is truthy, and return what it returned. An error from
    `cond` (NATS failing over, say) counts as "not yet"; the last one is reported if time runs
    out. A condition, not a timed assertion: `timeout` only bounds a test that would hang."""
    last: list[BaseException] = []

    async def loop() -> Any:
        while True:
            try:
                r = cond()
                if asyncio.iscoroutine(r):
                    r = await r
            except Exception as exc:
                last[:] = [exc]
                r = False
            if r:
                return r
            await asyncio.sleep(every)

    try:
        return await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"condition not met within {timeout} s (last error: {last})") from None


async def patiently(op: Callable[[], Any], within_s: float = 30.0) -> Any:
    """`await op()`, tried again while it fails (the client reconnecting after a node restart,
    a stream electing a leader) for up to `within_s`; then its last error is raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            return await op()
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


def held_back(worker: Any) -> bool:
    """The worker's tier is none and the pull requests it had out are withdrawn: from here on
    nothing is delivered to it. Its tier alone is not enough: a request made at its start-up
    (probation) factor may still be open for a moment, and would take a job."""
    return bool(worker.gate.tier == "none" and worker.pulls_withdrawn > 0)
