"""A job's lease: the KeepAlive starts only once the job has been held one in-progress period
(a short job costs a timer, not a task), then sends +WPI at once and every period."""

from __future__ import annotations

import asyncio
from typing import cast

from jetgrid.worker.delivery import Delivery
from jetgrid.worker.jobs import Lease, send_in_progress
from tests.helpers import until


class Held:
    def __init__(self) -> None:
        self.in_progress_acks = 0

    async def in_progress(self) -> None:
        self.in_progress_acks += 1


async def test_a_job_that_ends_within_its_first_period_starts_no_keepalive() -> None:
    started: list[float] = []

    async def keep_alive(msg: Delivery, period_s: float) -> None:
        started.append(period_s)

    lease = Lease(keep_alive, cast(Delivery, Held()), 3600.0)
    lease.stop()
    await asyncio.sleep(0)  # whatever was scheduled has run
    assert started == [] and not asyncio.all_tasks() - {asyncio.current_task()}


async def test_a_long_job_sends_in_progress_when_its_period_is_up_and_every_period_after() -> None:
    msg = Held()
    lease = Lease(send_in_progress, cast(Delivery, msg), 0.01)
    await until(lambda: msg.in_progress_acks >= 3)
    lease.stop()
    await asyncio.sleep(0)  # the keepalive task takes its cancellation
    assert not asyncio.all_tasks() - {asyncio.current_task()}  # stopped: nothing left to send
