"""The Responses API driven by the official `openai` client, unchanged (issue 14): create,
retrieve, cancel, delete, streaming, background, and resume by `starting_after` on another
gateway."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import provision_batches
from jetgrid.coordinator.settings import Settings
from jetgrid.gateway.server import serving
from jetgrid.worker.backends import EchoBackend
from tests.helpers import until

pytestmark = pytest.mark.integration

TEXT = " ".join(f"w{i}" for i in range(30))


def client(base: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)


@pytest.fixture
async def slow(gateway: str, start_worker: Any, wait_model: Any) -> str:
    await start_worker(backend=EchoBackend(token_delay_s=0.02), concurrency=2)
    await wait_model(gateway)
    return gateway


async def test_create_and_retrieve_a_response(slow: str) -> None:
    async with client(slow) as c:
        done = await c.responses.create(model="echo", input=TEXT, instructions="be brief")
        assert done.id.startswith("resp_") and done.status == "completed"
        assert done.output_text == TEXT and done.model == "echo"
        assert done.usage is not None and done.usage.output_tokens > 0
        again = await c.responses.retrieve(done.id)
        assert (again.id, again.status, again.output_text) == (done.id, "completed", TEXT)
        msgs = [{"role": "user", "content": [{"type": "input_text", "text": "hi there"}]}]
        listed = await c.responses.create(model="echo", input=msgs)  # type: ignore[arg-type]
        assert listed.output_text == "hi there"


async def test_a_streamed_response_has_numbered_events(slow: str) -> None:
    async with client(slow) as c:
        stream = await c.responses.create(model="echo", input=TEXT, stream=True)
        events = [e async for e in stream]
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 3 and "".join(deltas) == TEXT
    assert events[-1].response.output_text == TEXT  # type: ignore[union-attr]


async def test_a_background_response_resumes_on_another_gateway(
    slow: str, streams: Settings
) -> None:
    text = " ".join(f"w{i}" for i in range(100))
    async with serving(streams.replace(gateway_port=0)) as other:
        async with client(slow) as c:
            queued = await c.responses.create(model="echo", input=text, background=True)
            assert queued.status in ("queued", "in_progress") and queued.background
            first = await c.responses.retrieve(queued.id, stream=True)
            seen = []
            async for event in first:
                seen.append(event)
                if event.type == "response.output_text.delta" and len(seen) == 8:
                    break
            await first.close()
        async with client(other) as c:
            during = (await c.responses.retrieve(queued.id)).status
            after = seen[-1].sequence_number
            resumed = await c.responses.retrieve(queued.id, stream=True, starting_after=after)
            rest = [e async for e in resumed]
            done = await c.responses.retrieve(queued.id)
    assert during == "in_progress"  # resumed while it still ran
    assert rest[0].sequence_number == after + 1
    events = seen + rest
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == done.output_text == text and done.status == "completed"


@pytest.fixture
async def provisioned(streams: Settings, bus: Bus) -> Settings:
    """The streams, and the batches bucket that records deleted responses."""
    await provision_batches(bus.js, streams)
    return streams


async def test_cancel_and_delete(
    provisioned: Settings, gateway: str, start_worker: Any, wait_model: Any
) -> None:
    await start_worker(backend=EchoBackend(latency_s=30))
    await wait_model(gateway)
    async with client(gateway) as c:
        queued = await c.responses.create(model="echo", input="x", background=True)

        async def running() -> bool:
            return (await c.responses.retrieve(queued.id)).status == "in_progress"

        await until(running)
        cancelled = await c.responses.cancel(queued.id)
        assert cancelled.id == queued.id and cancelled.status == "cancelled"

        async def ended() -> bool:
            return (await c.responses.retrieve(queued.id)).status == "cancelled"

        await until(ended)
        assert await c.responses.delete(queued.id) is None
        with pytest.raises(openai.NotFoundError):
            await c.responses.retrieve("resp_nope")
        with pytest.raises(openai.NotFoundError):
            await c.responses.cancel("nope")
        with pytest.raises(openai.BadRequestError):
            await c.responses.create(model="echo", input=[{"type": "function_call"}])  # type: ignore[list-item]
        with pytest.raises(openai.NotFoundError):
            await c.responses.create(model="no-such-model", input="x")


async def test_a_deleted_response_is_gone_on_every_gateway(
    provisioned: Settings, gateway: str, start_worker: Any, wait_model: Any
) -> None:
    """After delete, retrieve, stream resume, cancel and a second delete are 404 (the client
    raises NotFoundError), here and on a gateway started after the delete; a running response
    is cancelled by its delete."""
    await start_worker(backend=EchoBackend(token_delay_s=0.05), concurrency=2)
    await wait_model(gateway)
    long = " ".join(f"w{i}" for i in range(600))  # 30 s of tokens
    async with client(gateway) as c:
        done = await c.responses.create(model="echo", input="x")
        running = await c.responses.create(model="echo", input=long, background=True)
        assert done.status == "completed"
        for r in (done, running):
            assert await c.responses.delete(r.id) is None
    async with serving(provisioned.replace(gateway_port=0)) as other:
        for base in (gateway, other):
            async with client(base) as c:
                for r in (done, running):
                    with pytest.raises(openai.NotFoundError):
                        await c.responses.retrieve(r.id)
                    with pytest.raises(openai.NotFoundError):
                        await c.responses.retrieve(r.id, stream=True, starting_after=0)
                    with pytest.raises(openai.NotFoundError):
                        await c.responses.cancel(r.id)
                    with pytest.raises(openai.NotFoundError):
                        await c.responses.delete(r.id)
    async with httpx.AsyncClient(base_url=gateway) as http:
        job_id = running.id.removeprefix("resp_")

        async def cancelled() -> bool:
            return (await http.get(f"/v1/jobs/{job_id}")).json()["status"] == "cancelled"

        await until(cancelled)
