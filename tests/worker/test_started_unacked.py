"""`started` is published without waiting for its ack, so it may never land: the worker then
stores it again before the ack (after the terminal event), and the read model and the audit stay
exact. A real worker and server; the loss is injected through ``Worker(outcomes=...)``."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.events import Event, JobStarted, decode
from jetgrid.projections.audit_log import gather
from jetgrid.projections.fold import fold_config
from jetgrid.worker.agent import Worker
from jetgrid.worker.backends.echo import EchoBackend
from jetgrid.worker.options import WorkerOptions
from jetgrid.worker.outcomes import Outcomes
from tests.helpers import job, job_views, read_stream, submit, until

pytestmark = pytest.mark.integration


class LosingStarts(Outcomes):
    """Publishes no `started` and reports its ack as lost (a dropped connection, a stream
    without a leader)."""

    async def say(self, event: Event, time: datetime | None = None) -> asyncio.Future[Any]:
        if not isinstance(event, JobStarted):
            return await super().say(event, time)
        lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        lost.cancel()
        return lost


async def test_a_started_that_never_landed_is_stored_before_the_ack(
    streams: Settings, nc: Any, outcomes: Any
) -> None:
    s = streams.replace(started_after_s=0)  # `started` said at once, then its ack lost
    worker = Worker(s, WorkerOptions(pool="standard", models=("echo",), worker_id="w1"),
                    EchoBackend(), outcomes=LosingStarts)  # fmt: skip
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 10)
        seq = await submit(nc, streams, job(1))
        await outcomes.wait_terminal("j1")
        js = nc.jetstream()
        # `completed` counts after the ack, which follows the re-stored `started`.
        await until(lambda: worker.counters.completed == 1)
        assert worker.counters.started_restored == 1
        stored = [decode(m.data).event for m in await read_stream(js, streams.streams.job_events)]
        assert [e.type.rsplit(".", 1)[-1] for e in stored] == ["completed", "started"]
        started = stored[1]
        assert (started.worker_id, started.attempt, started.jobs_seq) == ("w1", 1, seq)

        view = (await job_views(js, s))["j1"]
        assert (view.status, view.worker_id, view.attempts) == ("completed", "w1", 1)

        audit = await gather(s, Bus(nc, s), fold_config(s))
        claims = audit.claims["w1"]
        assert [(c.job_id, c.attempt) for c in claims] == [("j1", 1)]
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
