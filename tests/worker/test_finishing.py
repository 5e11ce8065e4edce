"""A job frees its worker's slot when its backend returns: the next job runs while the outcome
is stored, and a worker stops taking jobs while more outcomes wait to be stored than it has
slots (coordinator.allowance), against a real nats-server."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobSubmitted, TerminalEvent
from jetgrid.worker.agent import Worker
from jetgrid.worker.backends import EchoBackend, Result, RunContext
from jetgrid.worker.options import WorkerOptions
from jetgrid.worker.outcomes import Outcomes
from tests.helpers import job, submit

pytestmark = pytest.mark.integration


class Recorded(EchoBackend):
    """Echo that notes the order in which runs start."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[str] = []

    async def run(self, job: JobSubmitted, ctx: RunContext) -> Result:
        self.started.append(job.job_id)
        return await super().run(job, ctx)


class HeldStores(Outcomes):
    """Holds the terminal store of the jobs in `HOLD` until `OPEN` is set; `held` says which
    wait, `changed` is set when one more does."""

    HOLD: ClassVar[set[str]] = set()
    OPEN: ClassVar[asyncio.Event]
    held: ClassVar[set[str]] = set()
    changed: ClassVar[asyncio.Event]

    @classmethod
    def reset(cls, *job_ids: str) -> None:
        cls.HOLD, cls.held = set(job_ids), set()
        cls.OPEN, cls.changed = asyncio.Event(), asyncio.Event()

    @classmethod
    async def until_held(cls, *job_ids: str) -> None:
        async def loop() -> None:
            while cls.held != set(job_ids):
                cls.changed.clear()
                await cls.changed.wait()

        await asyncio.wait_for(loop(), 10)

    async def store_terminal(self, event: TerminalEvent) -> bool:
        if event.job_id in self.HOLD:
            self.held.add(event.job_id)
            self.changed.set()
            await self.OPEN.wait()
        return await super().store_terminal(event)


def one_slot(streams: Settings, backend: Recorded) -> Worker:
    options = WorkerOptions(pool="standard", models=("echo",), worker_id="w1", concurrency=1)
    return Worker(streams, options, backend, outcomes=HeldStores)


async def test_the_next_job_runs_while_an_outcome_is_stored_up_to_the_cap(
    streams: Settings, nc: NATS, outcomes: Any
) -> None:
    backend = Recorded()
    HeldStores.reset("j1", "j2")
    agent = one_slot(streams, backend)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        for i in (1, 2, 3):
            await submit(nc, streams, job(i))
        # j1's outcome is held; its slot is free, so j2 runs on the worker's one slot...
        await HeldStores.until_held("j1", "j2")
        assert backend.started == ["j1", "j2"]
        # ...and with two outcomes waiting for one slot, the worker asks for nothing more.
        assert len(agent.held.finishing) == 2 and not agent.held.tasks
        assert agent.pulls.allowance() == 0
        assert sum(p.outstanding for p in agent.pulls.pullers) == 0  # j3 not asked for
        assert not outcomes.terminal("j1") and not outcomes.terminal("j3")
        HeldStores.OPEN.set()
        await outcomes.wait_terminal("j1", "j2", "j3")
        assert backend.started == ["j1", "j2", "j3"]
        assert [outcomes.said(j) for j in ("j1", "j2", "j3")] == [["completed"]] * 3
    finally:
        HeldStores.OPEN.set()
        agent.stop()
        await asyncio.wait_for(task, 20)


async def test_draining_waits_for_an_outcome_still_being_stored(
    streams: Settings, nc: NATS, outcomes: Any
) -> None:
    """j1's outcome is held past the drain grace: the drain waits out the grace for it (it holds
    no slot), then hands it back, and only then says `deregistered`."""
    held_at_goodbye: list[int] = []

    async def note(msg: Msg) -> None:
        held_at_goodbye.append(len(agent.held.every()))

    sub = await nc.subscribe(streams.subjects.worker_event("w1", "deregistered"), cb=note)
    HeldStores.reset("j1")
    options = WorkerOptions(
        pool="standard", models=("echo",), worker_id="w1", concurrency=1, drain_grace_s=0.05
    )
    agent = Worker(streams, options, Recorded(), outcomes=HeldStores)
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.ready.wait(), 10)
    await submit(nc, streams, job(1))
    await HeldStores.until_held("j1")
    assert agent.held.finishing and not agent.held.tasks
    agent.stop()
    await asyncio.wait_for(task, 20)
    await nc.flush()
    await sub.unsubscribe()
    assert held_at_goodbye == [0]
    assert not outcomes.terminal("j1")  # handed back for another run, never stored here
