"""Who a job of an LLM route belongs to, and a background response's webhook (issue 14): every
LLM route records its caller as the job's `submitter`, and a response naming
``metadata["webhook_url"]`` gets its outcome POSTed, signed with the caller's key's secret."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import ollama
import openai
import pytest

from jetgrid.coordinator import webhooks as wh
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobSubmitted, decode
from jetgrid.gateway.auth import hash_key
from tests.gateway.test_webhooks import Receiver, hook_settings, receiving, webhook_service
from tests.helpers import read_stream, until

pytestmark = pytest.mark.integration

KEY = "jg_test_key_for_response_hooks"


async def test_a_background_responses_webhook_is_delivered_signed_with_the_keys_secret(
    streams: Settings,
    serve_gateway: Callable[[Settings], Any],
    start_worker: Callable[..., Awaitable[Any]],
    wait_model: Callable[..., Awaitable[None]],
) -> None:
    settings = hook_settings(streams, api_keys=hash_key(KEY))
    await start_worker()
    receiver = Receiver(wh.key_secret(hash_key(KEY)))
    async with (
        receiving(receiver),
        webhook_service(settings),
        serve_gateway(settings) as base,
    ):
        await wait_model(base, headers={"Authorization": f"Bearer {KEY}"})
        async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0) as c:
            queued = await c.responses.create(
                model="echo",
                input="hello response hooks",
                background=True,
                metadata={"webhook_url": f"{receiver.url}/resp"},
            )
        await until(lambda: bool(receiver.got.get("/resp")), timeout=30)
    ((headers, raw, ok),) = receiver.got["/resp"]
    assert ok  # verifies with the key's own secret
    body = json.loads(raw)
    job_id = queued.id.removeprefix("resp_")
    assert body["type"] == "job.completed" and headers["webhook-id"] == f"job_{job_id}"
    assert body["data"]["id"] == job_id and "hello response hooks" in json.dumps(body["data"])


async def test_a_responses_webhook_to_a_private_target_is_refused_at_create(
    streams: Settings, serve_gateway: Callable[[Settings], Any]
) -> None:
    settings = streams.replace(api_keys=hash_key(KEY))
    async with (
        serve_gateway(settings) as base,
        openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0) as c,
    ):
        with pytest.raises(openai.UnprocessableEntityError) as err:
            await c.responses.create(
                model="echo",
                input="x",
                background=True,
                metadata={"webhook_url": "http://127.0.0.1:9/h"},
            )
    body = err.value.body
    assert isinstance(body, dict) and body["field"] == "metadata.webhook_url"
    assert "127.0.0.1" in body["message"] and "JETGRID_WEBHOOK_ALLOW_PRIVATE" in body["message"]


async def test_every_llm_route_records_its_caller_as_the_submitter(
    echo_gateway: str, streams: Settings, nc: Any
) -> None:
    who = {"X-Jetgrid-Submitter": "tenant-a"}
    async with openai.AsyncOpenAI(
        base_url=f"{echo_gateway}/v1", api_key="unused", default_headers=who, max_retries=0
    ) as o:
        await o.chat.completions.create(model="echo", messages=[{"role": "user", "content": "c"}])
        await o.completions.create(model="echo", prompt="p")
        async for _ in await o.completions.create(model="echo", prompt="s", stream=True):
            pass
        await o.embeddings.create(model="echo", input="e")
        await o.responses.create(model="echo", input="r")
        await o.responses.create(model="echo", input="b", background=True)  # stored at once
    async with ollama.AsyncClient(host=echo_gateway, headers=who) as c:
        await c.generate(model="echo", prompt="g")
        await c.chat(model="echo", messages=[{"role": "user", "content": "o"}])
        await c.embed(model="echo", input="e")
        await c.embeddings(model="echo", prompt="e")
    async with httpx.AsyncClient(base_url=echo_gateway, headers=who) as http:
        resp = await http.post("/v1/jobs?wait=10", json={"model": "echo", "prompt": "j"})
        assert resp.status_code == 200, resp.text
    subs = [decode(m.data).event for m in await read_stream(nc.jetstream(), streams.streams.jobs)]
    jobs = [e for e in subs if isinstance(e, JobSubmitted)]
    assert len(jobs) == 11
    assert {j.submitter for j in jobs} == {"tenant-a"}
