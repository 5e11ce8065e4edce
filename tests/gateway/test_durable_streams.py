"""Durable token streams: a client resumes a job's token stream on another gateway after its
gateway dies, a retried job streams its new attempt without mixing attempts, and every chunk is
stored before the job's terminal event (issue 14)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import provision_streams
from jetgrid.coordinator.settings import Settings
from jetgrid.events import stream_specs
from jetgrid.gateway.chunks import stored_chunks
from jetgrid.gateway.server import serving
from jetgrid.worker.backends import EchoBackend
from tests.helpers import job, run_gateway, spawn_worker, submit, until, write_pools

pytestmark = pytest.mark.integration

TEXT = " ".join(f"w{i}" for i in range(100))  # 5 s at 50 ms a word: time to resume


async def sse(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, str]]:
    """SSE events (fields by name) from a response's lines."""
    fields: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if "event" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":") and ":" in line:
            k, _, v = line.partition(":")
            fields[k] = v.removeprefix(" ")


def tokens(events: list[dict[str, str]]) -> list[dict[str, str]]:
    return [e for e in events if e["event"] == "token"]


def text_of(events: list[dict[str, str]]) -> str:
    return "".join(json.loads(e["data"])["text"] for e in tokens(events))


async def test_a_stream_resumes_on_another_gateway_after_its_gateway_dies(
    gateway: str, streams: Settings, start_worker: Any, wait_model: Any
) -> None:
    await start_worker(backend=EchoBackend(token_delay_s=0.05))
    server, task, first = await run_gateway(streams)
    await wait_model(first)
    seen: list[dict[str, str]] = []
    try:
        async with httpx.AsyncClient(base_url=first, timeout=30) as http:
            job = (await http.post("/v1/jobs", json={"model": "echo", "prompt": TEXT})).json()
            async with http.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
                async for event in sse(r.aiter_lines()):
                    seen.append(event)
                    if len(tokens(seen)) == 5:
                        # The gateway dies mid-stream, not waiting for its open streams.
                        server.force_exit = server.should_exit = True
                        await asyncio.wait_for(task, 10)
                        break
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert seen[-1]["event"] == "token" and seen[-1]["id"].count(":") == 2
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        status = (await http.get(f"/v1/jobs/{job['id']}")).json()["status"]
        headers = {"Last-Event-ID": seen[-1]["id"]}
        async with http.stream("GET", f"/v1/jobs/{job['id']}/events", headers=headers) as r:
            rest = [e async for e in sse(r.aiter_lines())]
        stored = (await http.get(f"/v1/jobs/{job['id']}")).json()["output"]["response"]
        # After the end, from the first chunk on: the rest of the output, then `completed`.
        cut = tokens(seen)[0]["id"]
        late = await http.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": cut})
        tail = [e async for e in sse(late.aiter_lines())]
    assert status == "running"  # resumed while the job still ran
    assert rest[-1]["event"] == "completed"
    assert sum(e["event"] == "token" for e in rest) > 1  # chunks, not only the output's tail
    assert text_of(seen) + text_of(rest) == stored == TEXT  # nothing lost, nothing repeated
    ids = [e["id"] for e in seen + rest if e["event"] == "token"]
    assert len(set(ids)) == len(ids)
    assert text_of(tail) == TEXT[int(cut.split(":")[2]) :] and tail[-1]["event"] == "completed"


async def test_a_retried_job_streams_its_new_attempt_without_mixing(
    streams: Settings, start_worker: Any, wait_model: Any, tmp_path: Any
) -> None:
    s = streams.replace(pools_file=write_pools(tmp_path / "pools.toml", ack_wait_s=1.0))
    victim = await spawn_worker(s, "victim", "--no-dead-letters", "--echo-token-delay", "0.1")
    events: list[dict[str, str]] = []
    try:
        async with serving(s.replace(gateway_port=0)) as url:
            await wait_model(url)
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                job = (await http.post("/v1/jobs", json={"model": "echo", "prompt": TEXT})).json()
                async with http.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
                    async for event in sse(r.aiter_lines()):
                        events.append(event)
                        if victim.returncode is None and len(tokens(events)) == 3:
                            victim.send_signal(signal.SIGKILL)
                            await victim.wait()
                            await start_worker(
                                settings=s, worker_id="heir", backend=EchoBackend(0, 0.02)
                            )
    finally:
        if victim.returncode is None:
            victim.kill()
            await victim.wait()
    names = [e["event"] for e in events]
    assert names[-1] == "completed"
    done = json.loads(events[-1]["data"])
    assert (done["worker_id"], done["attempt"], done["output"]["response"]) == ("heir", 2, TEXT)
    chunks = tokens(events)
    attempts = [int(e["id"].split(":")[1]) for e in chunks]
    assert attempts == sorted(attempts) and set(attempts) == {1, 2}
    first = "".join(json.loads(e["data"])["text"] for e in chunks if e["id"].split(":")[1] == "1")
    second = "".join(json.loads(e["data"])["text"] for e in chunks if e["id"].split(":")[1] == "2")
    assert TEXT.startswith(first) and len(first) < len(TEXT)  # cut short by the kill
    assert second == TEXT  # the new attempt whole, from its first character
    # The new attempt's tokens follow the event that hands it the job.
    handover = max(
        i
        for i, e in enumerate(events)
        if e["event"] in ("claimed", "started") and json.loads(e["data"])["worker_id"] == "heir"
    )
    assert all(events.index(e) > handover for e in chunks if e["id"].split(":")[1] == "2")


async def test_every_chunk_is_stored_before_the_terminal_event(
    streams: Settings, nc: NATS, bus: Bus, start_worker: Any
) -> None:
    """Whoever sees a job's `completed` event can read all of its chunks back from TOKENS, even
    from TOKENS on file, where storing lags the worker's publishes most."""
    js = nc.jetstream()
    await js.delete_stream(streams.streams.tokens)
    specs = stream_specs(streams.subjects, streams.streams, tokens_storage="file")
    await provision_streams(js, [s for s in specs if s.logical == "TOKENS"])
    await start_worker(backend=EchoBackend(token_delay_s=0.001), concurrency=4)
    seen: dict[str, str] = {}
    outputs: dict[str, str] = {}

    async def on_completed(msg: Any) -> None:
        event = json.loads(msg.data)["data"]
        found = await stored_chunks(
            bus, streams, event["job_id"], event["worker_id"], event["attempt"]
        )
        seen[event["job_id"]] = "".join(c.text for c in found)
        outputs[event["job_id"]] = event["output"]["response"]

    sub = await nc.subscribe(f"{streams.subject_prefix}.job.*.completed.*", cb=on_completed)
    try:
        jobs = [job(i, prompt=" ".join(f"t{i}x{k}" for k in range(80))) for i in range(8)]
        await submit(nc.jetstream(), streams, *jobs)
        await until(lambda: len(seen) == len(jobs))
    finally:
        await sub.unsubscribe()
    assert seen == outputs
