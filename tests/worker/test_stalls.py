"""A job whose worker lives but makes no progress is handed back, runs elsewhere, and the
stalled worker's next ping is unhealthy (coordinator.stalls)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from jetgrid.events import JobSubmitted, WorkerHeartbeat, decode
from jetgrid.worker.backends.base import Result, RunContext
from jetgrid.worker.backends.echo import EchoBackend
from tests.helpers import job, read_stream, submit, until, write_pools

pytestmark = pytest.mark.integration


class HangingBackend(EchoBackend):
    """Streams one token, then never answers (a wedged model server)."""

    name = "hanging"

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()

    async def run(self, job: JobSubmitted, ctx: RunContext) -> Result:
        await ctx.emit("first")
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_stalled_job_is_handed_back_and_completes_elsewhere(
    streams, nc, start_worker, outcomes, tmp_path: Path
) -> None:
    pools = write_pools(tmp_path / "p.toml", stall_after_s=0.3, backoff_s=[0.05])
    s = streams.replace(pools_file=pools)
    hanging = HangingBackend()
    w1 = await start_worker(worker_id="w1", backend=hanging, settings=s)
    await submit(nc, streams, job(1))
    await outcomes.wait_for(lambda: "retrying" in outcomes.names("j1"))
    retrying = next(e.event for e in outcomes.events["j1"] if e.type.endswith("retrying"))
    assert retrying.worker_id == "w1" and retrying.stall_s is not None
    assert retrying.stall_s >= 0.3 and retrying.reason.startswith("stalled:")
    assert w1.counters.stalled == 1
    await start_worker(worker_id="w2", settings=s)
    await outcomes.wait_terminal("j1")
    done = outcomes.terminal("j1")[0].event
    assert done.type.endswith("completed") and done.worker_id == "w2"

    async def unhealthy_ping() -> bool:
        msgs = await read_stream(nc.jetstream(), streams.streams.workers)
        pings = [decode(m.data).event for m in msgs]
        return any(
            isinstance(p, WorkerHeartbeat)
            and p.worker_id == "w1"
            and not p.healthy
            and "1 job stalled since the previous ping" in p.problems
            for p in pings
        )

    await until(unhealthy_ping)


async def test_without_stall_after_s_a_quiet_job_is_left_running(
    streams, nc, start_worker, outcomes
) -> None:
    hanging = HangingBackend()
    w1 = await start_worker(worker_id="w1", backend=hanging, drain_grace_s=0.2)
    await submit(nc, streams, job(1))
    await hanging.started.wait()
    await until(lambda: w1.counters.pings >= 3)  # a second and more of silence
    names = outcomes.names("j1")  # started (and claimed, while the log still says it)
    assert names[-1] == "started" and "retrying" not in names and w1.counters.stalled == 0


async def test_an_embed_job_emits_no_tokens_and_is_not_watched(
    streams, nc, start_worker, outcomes, tmp_path: Path
) -> None:
    pools = write_pools(tmp_path / "p.toml", stall_after_s=0.1)
    w1 = await start_worker(settings=streams.replace(pools_file=pools))
    await submit(nc, streams, job(1, kind="embed", input={"input": "a b", "sleep": 0.5}))
    await outcomes.wait_terminal("j1")
    names = outcomes.names("j1")
    assert names[-1] == "completed" and "retrying" not in names and w1.counters.stalled == 0
