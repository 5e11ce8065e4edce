"""A first run over before its worker says `started` records its claim on its outcome: one
stored event per short job, and every reader still finds the claim (events.claim_of)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.events import MAX_CLAIM_DELAY_S, JobSubmitted, claim_of, decode
from jetgrid.projections.audit_log import gather
from jetgrid.projections.fold import fold_config
from jetgrid.projections.jobs import apply
from jetgrid.worker.backends.base import Result, RunContext
from jetgrid.worker.backends.echo import EchoBackend
from tests.helpers import job, submit

pytestmark = pytest.mark.integration


class Gate(EchoBackend):
    """Echo that holds every job until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.running = asyncio.Event()

    async def run(self, job: JobSubmitted, ctx: RunContext) -> Result:
        self.running.set()
        await self.release.wait()
        return await super().run(job, ctx)


async def test_a_short_job_stores_only_its_outcome_which_carries_the_claim(
    streams: Settings, nc: Any, start_worker: Any, outcomes: Any
) -> None:
    assert streams.started_after_s > 0  # the default: short first runs say no `started`
    seq = await submit(nc, streams, job(1))
    # the longest wait a worker allows, so that even a slow echo run ends before it
    await start_worker(settings=streams.replace(started_after_s=MAX_CLAIM_DELAY_S))
    await outcomes.wait_terminal("j1")
    assert outcomes.names("j1") == ["completed"]
    [done] = outcomes.events["j1"]
    taken = claim_of(done.event, done.time)
    assert taken is not None
    assert (taken.worker_id, taken.attempt, taken.jobs_seq) == ("w1", 1, seq)
    assert taken.at <= done.time  # taken before it ended
    view = apply(None, done)  # the read model: who took it, and when
    assert (view.status, view.worker_id, view.jobs_seq) == ("completed", "w1", seq)
    assert view.claimed_at == view.started_at == taken.at
    info = await nc.jetstream().stream_info(streams.streams.job_events)
    assert info.state.messages == 1
    audit = await gather(streams, Bus(nc, streams), fold_config(streams))
    [claim] = audit.claims["w1"]  # the audit counts it, at the time it was taken
    assert (claim.job_id, claim.attempt, claim.time) == ("j1", 1, taken.at.timestamp())


async def test_a_job_that_runs_on_says_started_under_the_time_it_was_taken(
    streams: Settings, nc: Any, start_worker: Any, outcomes: Any
) -> None:
    gate = Gate()
    await submit(nc, streams, job(1))
    await start_worker(backend=gate, settings=streams.replace(started_after_s=0.05))
    await outcomes.wait_for(lambda: "started" in outcomes.names("j1"))
    gate.release.set()
    await outcomes.wait_terminal("j1")
    assert outcomes.names("j1") == ["started", "completed"]
    started, done = outcomes.events["j1"]
    assert claim_of(done.event, done.time) is None  # the claim is in the log once
    taken = claim_of(started.event, started.time)
    assert taken is not None and taken.at == started.time
    stored = await nc.jetstream().get_last_msg(
        streams.streams.job_events, streams.subjects.job_event("j1", "started") + ".w1"
    )
    # said once the run had lasted started_after_s, under the time the job was taken
    assert (stored.time - started.time).total_seconds() >= 0.05  # type: ignore[operator]


async def test_a_bare_job_may_not_take_an_id_claimed_on_an_outcome(
    streams: Settings, nc: Any, start_worker: Any, outcomes: Any
) -> None:
    js = nc.jetstream()
    subject = streams.subjects.submit("standard", "echo")
    first = await js.publish(subject, b'{"model": "echo", "prompt": "first", "id": "report"}')
    await start_worker(settings=streams.replace(started_after_s=MAX_CLAIM_DELAY_S))
    await outcomes.wait_terminal("report")
    assert outcomes.names("report") == ["completed"]  # its claim rides on its outcome
    rejected = await nc.subscribe(streams.subjects.job_event("report", "rejected") + ".*")
    second = await js.publish(subject, b'{"model": "echo", "prompt": "evil", "id": "report"}')
    refusal = decode((await rejected.next_msg(timeout=20)).data).event
    assert refusal.jobs_seq == second.seq and f"JOBS seq {first.seq}" in refusal.reason
