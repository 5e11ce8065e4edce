"""Shedding on a real gateway and worker: beyond a pool's max_backlog or max_wait_s a submit is
429 with Retry-After in each API's error shape (jetgrid, OpenAI, Ollama), nothing stored; over
NATS the worker that takes a job that waited past max_wait_s ends it `rejected`, never run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobSubmitted
from jetgrid.events import now as wall_clock
from jetgrid.worker.backends import EchoBackend, Result, RunContext
from tests.gateway.conftest import in_process
from tests.helpers import job, submit, until, write_pools

pytestmark = pytest.mark.integration


class Gate(EchoBackend):
    """Echo that holds every job until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.started: list[str] = []

    async def run(self, job: JobSubmitted, ctx: RunContext) -> Result:
        self.started.append(job.job_id)
        await self.release.wait()
        return await super().run(job, ctx)


def limited(streams: Settings, tmp_path: Path, **limits: Any) -> Settings:
    return streams.replace(pools_file=write_pools(tmp_path / "pools.toml", **limits))


async def jobs_stored(nc: NATS, streams: Settings) -> int:
    return int((await nc.jetstream().stream_info(streams.streams.jobs)).state.messages)


async def test_beyond_max_backlog_every_api_answers_429_with_retry_after(
    streams: Settings,
    tmp_path: Path,
    nc: NATS,
    start_worker: Callable[..., Awaitable[Any]],
) -> None:
    settings = limited(streams, tmp_path, max_backlog=2)
    gate = Gate()
    await start_worker(settings=settings, backend=gate, concurrency=1)
    try:
        await over_the_backlog(settings, streams, nc, gate)
    finally:
        gate.release.set()  # the worker can drain whatever happened


async def over_the_backlog(settings: Settings, streams: Settings, nc: NATS, gate: Gate) -> None:
    async with in_process(settings) as (gw, http):
        await until(lambda: "echo" in gw.fleet.live_models())
        ids = []
        for i in range(3):  # one runs (held by the gate), two wait: the limit
            r = await http.post("/v1/jobs", json={"model": "echo", "prompt": str(i)})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
            if i == 0:  # running, and the gateway has heard so (its `started` comes after
                # started_after_s): the two that follow are the queue
                await until(lambda: len(gate.started) == 1)
                await until(lambda: gw.queue.running.get(("standard", "echo")) is not None)
                assert gw.queue.backlog("standard", "echo", gw.clock())[0] == 0
        await until(lambda: gw.queue.backlog("standard", "echo", gw.clock())[0] == 2)
        stored = await jobs_stored(nc, streams)

        r = await http.post("/v1/jobs", json={"model": "echo", "prompt": "one too many"})
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        err = r.json()["error"]
        assert (err["code"], err["field"]) == ("pool_over_limit", "model")
        assert "max_backlog" in err["message"] and "2 jobs queued, limit 2" in err["message"]
        assert f"retry in {r.headers['retry-after']} s" in err["message"]

        chat = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        r = await http.post("/v1/chat/completions", json=chat)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "max_backlog" in r.json()["error"]["message"]  # the OpenAI shape
        r = await http.post("/api/generate", json={"model": "echo", "prompt": "x", "stream": False})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "max_backlog" in r.json()["error"]  # Ollama's flat shape
        assert await jobs_stored(nc, streams) == stored  # refused before anything was stored

        gate.release.set()
        await until(lambda: gw.queue.keys() == [])
        r = await http.post("/v1/jobs?wait=10", json={"model": "echo", "prompt": "later"})
        assert r.status_code == 200 and r.json()["status"] == "completed"  # accepted again


async def test_beyond_max_wait_a_submit_is_429_until_the_queue_is_younger(
    streams: Settings, tmp_path: Path
) -> None:
    settings = limited(streams, tmp_path, max_wait_s=30)
    ghost = {"model": "ghost:1b", "prompt": "x"}
    async with in_process(settings) as (gw, http):
        r = await http.post("/v1/jobs?queue_unserved=true", json=ghost)
        assert r.status_code == 202
        await until(lambda: gw.queue.backlog("standard", "ghost:1b", gw.clock())[0] == 1)
        r = await http.post("/v1/jobs?queue_unserved=true", json=ghost)
        assert r.status_code == 202  # the oldest has not waited 30 s yet
        ahead = wall_clock() + timedelta(seconds=45)
        gw.clock = lambda: ahead
        r = await http.post("/v1/jobs?queue_unserved=true", json=ghost)
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "30"  # nothing drains: the idle wait, max_wait_s
        assert "max_wait_s" in r.json()["error"]["message"]
        r = await http.post("/v1/jobs?queue_unserved=true", json={**ghost, "model": "other:1b"})
        assert r.status_code == 202  # the limit is per model


async def test_over_nats_a_job_taken_past_max_wait_is_rejected_not_run(
    streams: Settings,
    tmp_path: Path,
    nc: NATS,
    start_worker: Callable[..., Awaitable[Any]],
    outcomes: Any,
) -> None:
    settings = limited(streams, tmp_path, max_wait_s=30)
    gate = Gate()
    gate.release.set()
    agent = await start_worker(settings=settings, backend=gate)
    await submit(nc, streams, job(1))
    await outcomes.wait_terminal("j1")  # in time: it runs
    agent.jobs.clock = lambda: wall_clock() + timedelta(seconds=60)  # as if it waited 60 s
    await submit(nc, streams, job(2))
    await outcomes.wait_for(lambda: "rejected" in outcomes.names("j2"))
    assert outcomes.names("j2") == ["rejected"] and gate.started == ["j1"]
    (ev,) = outcomes.events["j2"]
    assert ev.event.worker_id == "w1" and ev.id == f"j2:rejected:{ev.event.jobs_seq}"
    assert "pool 'standard' shed it" in ev.event.reason and "max_wait_s of 30 s" in ev.event.reason
