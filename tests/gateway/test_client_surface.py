"""The official `openai` and `ollama` clients, unchanged, on /v1/embeddings, /v1/completions,
/v1/models/{id} and Ollama's legacy /api/embeddings, against the gateway with echo workers."""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest

from jetgrid.gateway.openai_more import MAX_PROMPTS
from jetgrid.worker.backends import EchoBackend
from jetgrid.worker.backends.echo import EMBED_DIM, embedding

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(echo_gateway):  # type: ignore[no-untyped-def]
    async with openai.AsyncOpenAI(
        base_url=f"{echo_gateway}/v1", api_key="unused", max_retries=0
    ) as c:
        yield c


async def test_embeddings_in_base64_by_default_and_in_floats(client, echo_gateway) -> None:
    done = await client.embeddings.create(model="echo", input=["alpha", "beta gamma"])
    assert done.object == "list" and done.model == "echo"
    assert [d.index for d in done.data] == [0, 1]
    assert all(d.object == "embedding" and len(d.embedding) == EMBED_DIM for d in done.data)
    # the client asked for base64 (float32): equal to float32 precision
    assert done.data[0].embedding == pytest.approx(embedding("alpha"), abs=1e-6)
    assert done.data[1].embedding == pytest.approx(embedding("beta gamma"), abs=1e-6)
    assert done.usage.prompt_tokens == 3 and done.usage.total_tokens == 3
    floats = await client.embeddings.create(model="echo", input="alpha", encoding_format="float")
    assert floats.data[0].embedding == embedding("alpha")
    async with httpx.AsyncClient(base_url=echo_gateway) as http:
        body = {"model": "echo", "input": "alpha", "encoding_format": "base64"}
        wire = (await http.post("/v1/embeddings", json=body)).json()
    assert isinstance(wire["data"][0]["embedding"], str)


@pytest.mark.parametrize(
    ("inp", "words"),
    [([], "must not be empty"), ([1, 2, 3], "tokens"), ([""], "empty string")],
)
async def test_embeddings_bad_input_raises_bad_request(client, inp, words) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await client.embeddings.create(model="echo", input=inp)
    assert "input" in err.value.message and words in err.value.message


async def test_embeddings_of_an_unknown_model_raise_not_found(client) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        await client.embeddings.create(model="nope", input="x")
    assert err.value.code == "model_not_found" and "nope" in err.value.message


async def test_completion_fills_every_field(client) -> None:
    done = await client.completions.create(model="echo", prompt="hello big world", max_tokens=8)
    assert done.id.startswith("cmpl-") and done.object == "text_completion"
    assert isinstance(done.created, int) and done.created > 0 and done.model == "echo"
    (choice,) = done.choices
    assert (choice.index, choice.text, choice.finish_reason) == (0, "hello big world", "stop")
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (3, 3)
    many = await client.completions.create(model="echo", prompt=["one", "two words"])
    assert [(c.index, c.text) for c in many.choices] == [(0, "one"), (1, "two words")]
    assert many.usage is not None and many.usage.total_tokens == 2 + 4


async def test_streaming_completion_chunks_then_usage(gateway, start_worker, wait_model) -> None:
    await start_worker(backend=EchoBackend(token_delay_s=0.05))
    await wait_model(gateway)
    text = "one two three four five six"
    async with openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key="x", max_retries=0) as c:
        stream = await c.completions.create(
            model="echo", prompt=text, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert all(c.object == "text_completion" and c.model == "echo" for c in chunks)
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert sum(1 for x in pieces if x) >= 3  # streamed, not one blob
    assert "".join(pieces) == text
    finishing = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [f for f in finishing if f] == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.total_tokens == 12


async def test_completion_stream_ends_with_done_on_the_wire(echo_gateway) -> None:
    async with httpx.AsyncClient(base_url=echo_gateway) as http:
        r = await http.post(
            "/v1/completions", json={"model": "echo", "prompt": "a b", "stream": True}
        )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    bodies = [json.loads(e[6:]) for e in events[:-1]]
    assert "".join(b["choices"][0]["text"] for b in bodies) == "a b"
    assert all("usage" not in b for b in bodies)  # not asked for


async def test_a_failing_completion_raises_mid_stream_and_as_500(client) -> None:
    stream = await client.completions.create(
        model="echo", prompt="x", stream=True, extra_body={"fail": "permanent"}
    )
    with pytest.raises(openai.APIError) as err:
        async for _ in stream:
            pass
    assert "permanently" in err.value.message
    with pytest.raises(openai.InternalServerError) as err500:
        await client.completions.create(model="echo", prompt="x", extra_body={"fail": "permanent"})
    assert "permanently" in err500.value.message


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"prompt": []}, "prompt"),
        ({"prompt": [[1, 2]]}, "tokens"),
        ({"prompt": ["a", "b"], "stream": True}, "stream one prompt"),
        ({"prompt": "a", "max_tokens": -1}, "max_tokens"),
    ],
)
async def test_completion_bad_input_raises_bad_request(client, kwargs, words) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await client.completions.create(model="echo", **kwargs)
    assert words in err.value.message


async def test_completion_of_an_unknown_model_raises_not_found(client) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        await client.completions.create(model="nope", prompt="x")
    assert err.value.code == "model_not_found"


async def test_models_retrieve_a_live_model_or_raise_not_found(client) -> None:
    got = await client.models.retrieve("echo")
    assert (got.id, got.object, got.owned_by) == ("echo", "model", "jetgrid")
    assert (await client.models.retrieve("echo:latest")).id == "echo:latest"
    with pytest.raises(openai.NotFoundError) as err:
        await client.models.retrieve("org/nope:7b")
    assert err.value.code == "model_not_found" and "org/nope:7b" in err.value.message


async def test_ollama_legacy_embeddings(echo_gateway) -> None:
    async with ollama.AsyncClient(host=echo_gateway) as c:
        one = await c.embeddings(model="echo", prompt="alpha")
        assert list(one.embedding) == embedding("alpha")
        assert list((await c.embeddings(model="echo", prompt="")).embedding) == []
        with pytest.raises(ollama.ResponseError) as err:
            await c.embeddings(model="nope", prompt="x")
        assert err.value.status_code == 404 and "nope" in err.value.error
    async with httpx.AsyncClient(base_url=echo_gateway) as http:  # the client checks `model`
        r = await http.post("/api/embeddings", json={"prompt": 3})
    assert r.status_code == 400 and set(r.json()) == {"error"} and "model" in r.json()["error"]


async def test_many_prompts_share_one_wait_slot(
    streams, serve_gateway, start_worker, wait_model
) -> None:
    await start_worker(concurrency=4)
    async with serve_gateway(streams.replace(max_waits_per_key=1)) as base:
        await wait_model(base)
        async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0) as c:
            done = await c.completions.create(model="echo", prompt=["a", "b", "c"])
            assert [ch.text for ch in done.choices] == ["a", "b", "c"]
            with pytest.raises(openai.BadRequestError) as err:
                await c.completions.create(model="echo", prompt=["p"] * (MAX_PROMPTS + 1))
            assert f"more than {MAX_PROMPTS}" in err.value.message
