"""Live job streams: only the holder's token chunks reach a client, and streams share the
gateway's subscriptions (issue 11, findings 3 and 6)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import ollama
import openai
import pytest
from nats.aio.client import Client as NATS

from jetgrid.coordinator.settings import Settings
from jetgrid.worker.backends import EchoBackend
from tests.helpers import until

pytestmark = pytest.mark.integration

TEXT = "one two three four five six seven eight"


async def _forge_on_start(nc: NATS, settings: Settings) -> AsyncIterator[list[str]]:
    """Whenever a job starts, publish forged chunks for it as another worker would: on the
    job's token subject under an id that is not the holder's (and on the bare job subject)."""
    p = settings.subject_prefix
    forged: list[str] = []

    async def on_started(msg: Any) -> None:
        job_id = msg.subject.split(".")[2]
        for i in range(5):
            body = json.dumps({"job_id": job_id, "i": i, "attempt": 1, "text": "FORGED "})
            for subject in (f"{p}.tokens.{job_id}.intruder", f"{p}.tokens.{job_id}"):
                await nc.publish(subject, body.encode())
        forged.append(job_id)

    sub = await nc.subscribe(f"{p}.job.*.started.*", cb=on_started)
    try:
        yield forged
    finally:
        await sub.unsubscribe()


@pytest.fixture
async def forger(streams: Settings, nc: NATS) -> AsyncIterator[list[str]]:
    async for forged in _forge_on_start(nc, streams):
        yield forged


@pytest.fixture
async def slow_echo(gateway: str, start_worker: Any, wait_model: Any) -> str:
    await start_worker(backend=EchoBackend(token_delay_s=0.05))
    await wait_model(gateway)
    return gateway


async def test_forged_chunks_do_not_reach_an_openai_stream(slow_echo, forger) -> None:
    async with openai.AsyncOpenAI(base_url=f"{slow_echo}/v1", api_key="x", max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": TEXT}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta]
    assert forger, "no chunk was forged: the job never started"
    assert sum(1 for x in content if x) >= 3  # streamed, not one blob
    assert "".join(x or "" for x in content) == TEXT


async def test_forged_chunks_do_not_reach_an_ollama_stream(slow_echo, forger) -> None:
    async with ollama.AsyncClient(host=slow_echo) as client:
        stream = await client.generate(model="echo", prompt=TEXT, stream=True)
        parts = [p async for p in stream]
    assert forger, "no chunk was forged: the job never started"
    assert len(parts) >= 3
    assert "".join(p.response for p in parts) == TEXT


async def test_forged_chunks_do_not_reach_a_job_event_stream(slow_echo, forger) -> None:
    async with httpx.AsyncClient(base_url=slow_echo, timeout=30) as http:
        job = (await http.post("/v1/jobs", json={"model": "echo", "prompt": TEXT})).json()
        body = (await http.get(f"/v1/jobs/{job['id']}/events")).text
    tokens = [
        json.loads(line[6:])["text"]
        for block in body.split("\n\n")
        if "event: token" in block
        for line in block.splitlines()
        if line.startswith("data: ")
    ]
    assert "FORGED" not in "".join(tokens)
    assert "completed" in body


async def _consumers(nc: NATS, stream: str) -> int:
    return (await nc.jetstream().stream_info(stream)).state.consumer_count


async def test_event_streams_do_not_add_jetstream_consumers(
    gateway: str, streams: Settings, nc: NATS, start_worker: Any, wait_model: Any
) -> None:
    await start_worker(backend=EchoBackend(token_delay_s=0.05))
    await wait_model(gateway)
    stream = streams.streams.job_events
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        job = (
            await http.post(
                "/v1/jobs", json={"model": "echo", "input": {"sleep": 2}, "prompt": "x"}
            )
        ).json()
        before = await _consumers(nc, stream)
        opened: list[AsyncIterator[bytes]] = []
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(20):
                r = await stack.enter_async_context(
                    http.stream("GET", f"/v1/jobs/{job['id']}/events")
                )
                opened.append(r.aiter_bytes())
            # Every stream has sent its first frame: its subscriptions, if any, exist by now.
            firsts = [await anext(it) for it in opened]
            during = await _consumers(nc, stream)
            bodies = await asyncio.gather(*(_rest(it) for it in opened))
    assert during == before, f"{during - before} consumers for 20 event streams"
    assert all(f.startswith(b"retry:") for f in firsts)
    assert all("event: completed" in b for b in bodies)


async def _rest(it: AsyncIterator[bytes]) -> str:
    return b"".join([chunk async for chunk in it]).decode()


async def test_every_client_of_one_job_sees_its_events(
    gateway: str, start_worker: Any, wait_model: Any
) -> None:
    await start_worker(backend=EchoBackend(token_delay_s=0.05))
    await wait_model(gateway)
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        job = (await http.post("/v1/jobs", json={"model": "echo", "prompt": TEXT})).json()
        bodies = await asyncio.gather(
            *(http.get(f"/v1/jobs/{job['id']}/events") for _ in range(10))
        )

        async def done() -> bool:
            return (await http.get(f"/v1/jobs/{job['id']}")).json()["status"] == "completed"

        await until(done)
    for b in bodies:
        names = [line[7:] for line in b.text.splitlines() if line.startswith("event: ")]
        assert names[-1] == "completed" and "started" in names
