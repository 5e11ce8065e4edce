"""Fair share, on a real nats-server: in a fair-share pool a worker takes a small tenant's jobs
ahead of another tenant's flood that was queued first, serves the shared queue too, and leaves
no queue behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jetgrid.worker.backends.echo import EchoBackend
from tests.helpers import job, submit

pytestmark = pytest.mark.integration


def _taken_at(outcomes: Any, job_id: str) -> Any:
    """When a worker took the job (its first claim's time)."""
    return min(c.at for c in outcomes.claims(job_id))


async def test_a_small_tenant_does_not_wait_behind_a_flood(
    streams: Any, nc: Any, start_worker: Any, outcomes: Any, tmp_path: Path
) -> None:
    pools = tmp_path / "pools.toml"
    pools.write_text('[[pool]]\nname = "standard"\nfair_share = true\n')
    s = streams.replace(pools_file=pools)
    flood = [job(f"f{i}", tenant="flood", submitter="flood") for i in range(40)]
    small = [job(f"s{i}", tenant="small", submitter="small") for i in range(3)]
    shared = [job("shared")]  # no tenant token: the pool's shared queue
    await submit(nc, s, *flood, *small, *shared)
    await start_worker(settings=s, concurrency=2, backend=EchoBackend(latency_s=0.05))
    ids = [j.job_id for j in (*flood, *small, *shared)]
    await outcomes.wait_terminal(*ids, timeout=60)
    order = sorted(ids, key=lambda j: _taken_at(outcomes, j))
    first = [j.job_id for j in (*small, *shared)]
    # FIFO on one queue would run all 40 flood jobs first; fair share runs the small tenant's
    # 3 jobs and the shared one among the first 10.
    assert all(order.index(j) < 10 for j in first), order
    assert all(outcomes.terminal(j)[0].type.endswith("completed") for j in ids)


async def test_a_burst_worker_empties_every_tenant_queue_then_ends(
    streams: Any, nc: Any, outcomes: Any, tmp_path: Path
) -> None:
    import asyncio

    from jetgrid.worker.agent import Worker, WorkerOptions

    pools = tmp_path / "pools.toml"
    pools.write_text('[[pool]]\nname = "standard"\nfair_share = true\naffinity_lanes = 2\n')
    s = streams.replace(pools_file=pools)
    jobs = [job(f"{t}{i}", tenant=t, submitter=t) for t in ("a", "b") for i in range(3)]
    jobs += [job("lane", tenant="a", submitter="a", lane=1), job("shared")]
    await submit(nc, s, *jobs)
    w = Worker(s, WorkerOptions(pool="standard", models=("echo",), worker_id="burst",
                                concurrency=2, burst=True), EchoBackend())  # fmt: skip
    await asyncio.wait_for(w.run(), 60)  # returns by itself once every queue is empty
    await outcomes.wait_terminal(*(j.job_id for j in jobs), timeout=15)


async def test_a_sweep_reads_the_tenant_queues_afresh_when_a_slot_frees(
    streams: Any, nc: Any, bus: Any
) -> None:
    """A small tenant's job that arrives between two slot frees is seen by the next one (20 ms
    later here), not only at the next read of a timer: the counts are read per sweep."""
    from jetgrid.coordinator.pools import PoolConfig
    from jetgrid.coordinator.share import FairShare
    from jetgrid.worker.tenants import TenantQueues

    pool = PoolConfig("standard", extra={"fair_share": True})
    fair = FairShare.for_pool(pool)
    assert fair is not None
    now = [100.0]

    async def make(model: str, spec: Any) -> Any:
        raise AssertionError("not asked for pullers here")

    queues = TenantQueues(bus, streams, pool, ["echo"], fair, make, max_deliver=2,
                          clock=lambda: now[0])  # fmt: skip
    await submit(nc, streams, job("f0", tenant="flood", submitter="flood"))
    await queues.refresh()
    assert {k[2] for k in queues.counts} == {"flood"}
    await submit(nc, streams, job("s0", tenant="small", submitter="small"))
    now[0] += 0.02  # the next slot frees
    await queues.refresh()
    assert queues.has_jobs(("echo", "normal", "small", None))


async def test_a_reserved_slot_takes_a_small_tenants_job_while_a_flood_fills_the_rest(
    streams: Any, nc: Any, start_worker: Any, outcomes: Any, tmp_path: Path
) -> None:
    """With ``reserve_slots = 1`` a flood gets 3 of a worker's 4 slots; a small tenant's job
    that comes later takes the fourth at once, before any flood job ends (without the reserve
    the flood holds all 4 and the small job waits for one to end)."""
    pools = tmp_path / "pools.toml"
    pools.write_text('[[pool]]\nname = "standard"\nfair_share = true\nreserve_slots = 1\n')
    s = streams.replace(pools_file=pools)
    flood = [job(f"f{i}", tenant="flood", submitter="flood") for i in range(8)]
    await submit(nc, s, *flood)
    await start_worker(settings=s, concurrency=4, backend=EchoBackend(latency_s=2.0))
    started = lambda: [j.job_id for j in flood if j.job_id in outcomes.events]  # noqa: E731
    await outcomes.wait_for(lambda: len(started()) >= 3)
    small = job("s0", tenant="small", submitter="small")
    await submit(nc, s, small)
    await outcomes.wait_terminal(small.job_id, *(j.job_id for j in flood), timeout=60)
    first_end = min(outcomes.terminal(j.job_id)[0].time for j in flood)
    assert _taken_at(outcomes, small.job_id) < first_end
    assert all(outcomes.terminal(j.job_id)[0].type.endswith("completed") for j in flood)
