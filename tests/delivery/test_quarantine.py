"""A job that kills the worker running it is quarantined (dead, with the reason) after the
pool's bounded number of lost runs, instead of taking down a worker on every delivery."""

from __future__ import annotations

import asyncio
import signal

import pytest

import jetgrid
from jetgrid.events import MAX_CLAIM_DELAY_S
from tests.helpers import spawn_worker, write_pools

pytestmark = pytest.mark.integration


async def test_a_job_that_kills_its_workers_is_quarantined(streams, outcomes, tmp_path) -> None:
    pools = write_pools(tmp_path / "p.toml", ack_wait_s=1.0, max_deliver=5, quarantine_after=2)
    s = streams.replace(pools_file=pools)

    @jetgrid.remote(settings=s, timeout_s=30)
    def poison():
        import os
        import signal

        os.kill(os.getppid(), signal.SIGKILL)  # the worker (no sandbox here, to let it)

    call = asyncio.create_task(poison.call())
    killed = 0
    try:
        for n in range(1, 8):  # bounded: the job gets at most 5 runs and one recording delivery
            worker = await spawn_worker(
                s, f"w{n}", "--allow-python", log=tmp_path / f"w{n}.log",
                JETGRID_DATA_DIR=str(tmp_path / "data"), JETGRID_UNSAFE_PYTHON_NO_SANDBOX="1",
                # The first run dies long before its worker would say `started`: no event at all.
                JETGRID_STARTED_AFTER_S=str(MAX_CLAIM_DELAY_S),
            )  # fmt: skip
            exited = asyncio.create_task(worker.wait())
            await asyncio.wait({call, exited}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                assert worker.returncode == -signal.SIGKILL
                killed += 1
                continue
            worker.send_signal(signal.SIGTERM)
            await asyncio.wait_for(exited, 30)
            assert worker.returncode == 0  # the worker that quarantined it lives on
            break
        with pytest.raises(jetgrid.RemoteJobFailed) as err:
            await asyncio.wait_for(call, 30)
    finally:
        call.cancel()
    assert killed == 2
    assert err.value.status == "dead"
    job_id = err.value.job_id
    await outcomes.wait_terminal(job_id)
    [dead] = [e.event for e in outcomes.terminal(job_id)]
    assert dead.reason == (
        "quarantined: 2 runs (deliveries 1, 2) ended with no outcome, as when the job kills "
        "the worker running it (pool 'standard' allows 2); it is not run again"
    )
    assert dead.attempts == 2 and outcomes.names(job_id).count("started") == 1  # the second run
