"""The official `openai` client, unchanged, against the gateway with echo workers."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from jetgrid.worker.backends import EchoBackend

pytestmark = pytest.mark.integration

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello big world"},
]


@pytest.fixture
async def client(echo_gateway):  # type: ignore[no-untyped-def]
    async with openai.AsyncOpenAI(
        base_url=f"{echo_gateway}/v1", api_key="unused", max_retries=0
    ) as c:
        yield c


async def test_chat_completion_fills_every_field(client) -> None:
    done = await client.chat.completions.create(model="echo", messages=MESSAGES)
    assert done.id.startswith("chatcmpl-") and done.object == "chat.completion"
    assert isinstance(done.created, int) and done.created > 0 and done.model == "echo"
    (choice,) = done.choices
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert choice.message.role == "assistant" and choice.message.content == "hello big world"
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (3, 3)
    assert done.usage.total_tokens == 6


async def test_streaming_chunks_share_an_id_and_end_with_usage(
    gateway, start_worker, wait_model
) -> None:
    await start_worker(backend=EchoBackend(token_delay_s=0.05))
    await wait_model(gateway)
    text = "one two three four five six"
    async with openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key="x", max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": text}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" and c.model == "echo" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta]
    assert sum(1 for x in content if x) >= 3  # streamed, not one blob
    assert "".join(x or "" for x in content) == text
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.total_tokens == 12


async def test_stream_ends_with_done_on_the_wire(echo_gateway) -> None:
    async with httpx.AsyncClient(base_url=echo_gateway) as http:
        r = await http.post(
            "/v1/chat/completions", json={"model": "echo", "messages": MESSAGES, "stream": True}
        )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [line for line in r.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all("usage" not in json.loads(e[6:]) for e in events[:-1])  # not asked for


async def test_models_lists_live_models(client) -> None:
    page = await client.models.list()
    assert [m.id for m in page.data] == ["echo"]
    assert page.data[0].object == "model" and page.data[0].owned_by == "jetgrid"


async def test_unknown_model_raises_not_found(client) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        await client.chat.completions.create(model="nope", messages=MESSAGES)
    assert err.value.status_code == 404 and "nope" in err.value.message
    assert err.value.code == "model_not_found"


async def test_bad_request_raises_bad_request(client) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(model="echo", messages=[])
    assert "messages" in err.value.message


async def test_a_failing_job_raises_mid_stream(client) -> None:
    stream = await client.chat.completions.create(
        model="echo", messages=MESSAGES, stream=True, extra_body={"fail": "permanent"}
    )
    with pytest.raises(openai.APIError) as err:
        async for _ in stream:
            pass
    assert "permanently" in err.value.message


def test_openai_fields_become_the_backends_options() -> None:
    from jetgrid.gateway.openai_api import job_options

    body = {"model": "m", "messages": [], "max_tokens": 7, "temperature": 0.2, "stop": ["x"]}
    assert job_options(body, frozenset({"model", "messages"})) == {
        "num_predict": 7,
        "temperature": 0.2,
        "stop": ["x"],
    }
    assert job_options({"max_completion_tokens": 3}, frozenset()) == {"num_predict": 3}
