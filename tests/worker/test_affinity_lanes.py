"""Cache affinity on a real nats-server: a session's jobs go to the worker that served its lane
recently while it is there, and to another worker after the pool's affinity wait once it is
gone, so a lane never strands a job."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jetgrid.coordinator.pools import PoolConfig
from jetgrid.coordinator.share import queue_lane
from jetgrid.worker.agent import Worker, WorkerOptions
from jetgrid.worker.backends.echo import EchoBackend
from tests.helpers import job, submit

pytestmark = pytest.mark.integration

EXTRA = {"fair_share": True, "affinity_lanes": 4, "affinity_wait_s": 1.0}


def _session_job(i: int, session: str) -> Any:
    lane = queue_lane(PoolConfig("standard", extra=EXTRA), "t", session=session, kind="generate")
    return job(f"{session}-{i}", tenant="t", submitter="t", session=session, lane=lane)


async def test_a_session_sticks_to_its_worker_and_moves_when_it_is_gone(
    streams: Any, nc: Any, outcomes: Any, tmp_path: Path
) -> None:
    pools = tmp_path / "pools.toml"
    pools.write_text(
        '[[pool]]\nname = "standard"\nfair_share = true\naffinity_lanes = 4\n'
        "affinity_wait_s = 1.0\n"
    )
    s = streams.replace(pools_file=pools)
    workers: dict[str, tuple[Worker, asyncio.Task[None]]] = {}
    for wid in ("a", "b"):
        w = Worker(s, WorkerOptions(pool="standard", models=("echo",), worker_id=wid,
                                    concurrency=2), EchoBackend())  # fmt: skip
        workers[wid] = (w, asyncio.create_task(w.run()))
        await asyncio.wait_for(w.ready.wait(), 10)

    async def run(j: Any) -> str:
        await submit(nc, s, j)
        await outcomes.wait_terminal(j.job_id, timeout=30)
        (done,) = outcomes.terminal(j.job_id)
        assert done.type.endswith("completed")
        return str(done.event.worker_id)

    try:
        first = await run(_session_job(0, "s1"))  # nobody owns the lane yet: after the wait
        later = [await run(_session_job(i, "s1")) for i in range(1, 9)]
        # Both workers are idle and serve the pool; only the lane's owner asks for its jobs.
        assert set(later) == {first}, later
        owner, task = workers.pop(first)
        owner.stop()
        await asyncio.wait_for(task, 20)
        (other,) = workers
        assert await run(_session_job(9, "s1")) == other  # the owner is gone: not stranded
    finally:
        for w, t in workers.values():
            w.stop()
            await asyncio.wait_for(t, 20)
