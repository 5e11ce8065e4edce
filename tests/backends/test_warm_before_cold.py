"""Warm before cold with real workers, a real nats-server and fake Ollama servers; the pool
status read from JetStream, by the function and by `jetgrid pools`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.projections.pools import read_pool_status
from jetgrid.worker.backends.ollama import OllamaBackend
from tests.helpers import job, submit

pytestmark = pytest.mark.integration


def pools_file(tmp_path: Path, cold_wait_s: float, cold_backlog: int) -> Path:
    path = tmp_path / "pools.toml"
    path.write_text(
        f'[[pool]]\nname = "standard"\ncold_wait_s = {cold_wait_s}\ncold_backlog = {cold_backlog}\n'
    )
    return path


@pytest.fixture
async def ollamas() -> Any:
    """Two fake Ollama servers, each with room for one loaded model: a has m1, b has m2."""
    from jetgrid_tests_fake_ollama import FakeOllama  # loaded by this directory's conftest

    servers = []
    for loaded in ("m1:1b", "m2:1b"):
        s = FakeOllama(max_loaded=1)
        s.add("m1:1b", "m2:1b")
        s.add(loaded, loaded=True)
        await s.start()
        servers.append(s)
    yield servers
    for s in servers:
        await s.stop()


async def ollama_worker(start_worker, settings: Settings, wid: str, server: Any) -> Any:
    backend = OllamaBackend(server.url, ["m1:1b", "m2:1b"])
    await start_worker("m1:1b", "m2:1b", worker_id=wid, backend=backend, settings=settings)
    return backend


async def test_each_worker_takes_the_jobs_of_its_loaded_model(
    streams, nc, start_worker, outcomes, ollamas, tmp_path
) -> None:
    s = streams.replace(pools_file=pools_file(tmp_path, cold_wait_s=3600, cold_backlog=1000))
    backends = [
        await ollama_worker(start_worker, s, w, o) for w, o in zip("ab", ollamas, strict=True)
    ]
    ids = {f"{m}-{i}": f"{m}:1b" for m in ("m1", "m2") for i in range(6)}
    for job_id, model in ids.items():
        await submit(nc, s, job(0, job_id=job_id, model=model))
    await outcomes.wait_terminal(*ids, timeout=30)
    ran_on = {j: outcomes.terminal(j)[0].event.worker_id for j in ids}
    assert {j for j, w in ran_on.items() if w == "a"} == {j for j in ids if j.startswith("m1")}
    assert [o.loads for o in ollamas] == [0, 0]  # no cold load anywhere
    for b in backends:
        await b.close()


async def test_a_cold_worker_takes_a_job_that_waited_too_long(
    streams, nc, start_worker, outcomes, ollamas, tmp_path
) -> None:
    s = streams.replace(pools_file=pools_file(tmp_path, cold_wait_s=0.3, cold_backlog=1000))
    b = await ollama_worker(start_worker, s, "b", ollamas[1])  # warm for m2 only
    await submit(nc, s, job(0, job_id="late", model="m1:1b"))
    await outcomes.wait_terminal("late", timeout=30)
    done = outcomes.terminal("late")[0].event
    assert done.worker_id == "b" and ollamas[1].loads == 1
    assert done.usage["load_duration"] > 1000  # it paid for the load
    await b.refreshed.wait()
    await b.close()


async def test_a_cold_worker_takes_the_overflow_of_a_backlog(
    streams, nc, start_worker, outcomes, ollamas, tmp_path
) -> None:
    s = streams.replace(pools_file=pools_file(tmp_path, cold_wait_s=3600, cold_backlog=2))
    b = await ollama_worker(start_worker, s, "b", ollamas[1])
    ids = [f"j{i}" for i in range(5)]
    for j in ids:
        await submit(nc, s, job(0, job_id=j, model="m1:1b"))
    # Three are over the threshold; once b has loaded m1 it is warm and takes the rest too.
    await outcomes.wait_terminal(*ids, timeout=30)
    assert {outcomes.terminal(j)[0].event.worker_id for j in ids} == {"b"}
    await b.close()


async def test_pool_status_shows_backlog_and_warm_and_cold_workers(
    streams, nc, start_worker, ollamas, tmp_path
) -> None:
    path = pools_file(tmp_path, cold_wait_s=3600, cold_backlog=1000)
    s = streams.replace(pools_file=path)
    a = await ollama_worker(start_worker, s, "a", ollamas[0])  # warm m1, cold m2
    for i in range(3):
        await submit(nc, s, job(0, job_id=f"w{i}", model="m2:1b"))

    async def rows() -> dict[str, Any]:
        while True:
            got = {r.model: r for r in await read_pool_status(Bus(nc, s), s, time.time())}
            if got.get("m2:1b") and got["m2:1b"].backlog == 3 and got["m1:1b"].warm_workers:
                return got
            await asyncio.sleep(0.1)

    got = await asyncio.wait_for(rows(), 15)
    m1, m2 = got["m1:1b"], got["m2:1b"]
    assert (m1.warm_workers, m1.cold_workers, m1.backlog) == (["a"], [], 0)
    assert (m2.warm_workers, m2.cold_workers, m2.backlog) == ([], ["a"], 3)
    assert m2.oldest_wait_s is not None and m2.oldest_wait_s >= 0
    assert m2.suggested_workers == 1

    env = {
        **os.environ,
        "JETGRID_NATS_URL": s.nats_url,
        "JETGRID_SUBJECT_PREFIX": s.subject_prefix,
        "JETGRID_STREAM_PREFIX": s.stream_prefix,
        "JETGRID_POOLS_FILE": str(path),
    }
    jetgrid = str(Path(sys.executable).parent / "jetgrid")
    for args in (["pools", "--json"], ["pools"]):
        proc = await asyncio.create_subprocess_exec(
            jetgrid, *args, env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out
        if "--json" in args:
            by = {r["model"]: r for r in json.loads(out)["pools"]}
            assert by["m2:1b"]["backlog"] == 3 and by["m2:1b"]["cold_workers"] == ["a"]
        else:
            lines = out.decode().splitlines()
            assert lines[0].split()[:9] == [
                "POOL", "MODEL", "BACKLOG", "RUNNING", "OLDEST", "WARM", "COLD", "SUGGESTED",
                "UNSERVED",
            ]  # fmt: skip
            assert any(ln.startswith("standard") and "m2:1b" in ln for ln in lines[1:])
    await a.close()
