"""The official `ollama` client, unchanged, against the gateway with echo workers."""

from __future__ import annotations

import json

import httpx
import ollama
import pytest

from jetgrid.worker.backends import EchoBackend
from jetgrid.worker.backends.echo import EMBED_DIM, embedding

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(echo_gateway):  # type: ignore[no-untyped-def]
    async with ollama.AsyncClient(host=echo_gateway) as c:
        yield c


HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello big world"}]


def _check_final(resp, n_words: int) -> None:  # type: ignore[no-untyped-def]
    assert resp.done is True and resp.done_reason == "stop"
    assert resp.model == "echo" and resp.created_at
    assert resp.eval_count == n_words and resp.prompt_eval_count == n_words
    assert isinstance(resp.total_duration, int) and resp.total_duration > 0
    assert isinstance(resp.eval_duration, int) and resp.eval_duration >= 0
    assert resp.load_duration == 0


async def test_chat_without_streaming_returns_one_chat_response(client) -> None:
    resp = await client.chat(model="echo", messages=HELLO, stream=False)
    assert resp.message.role == "assistant" and resp.message.content == "hello big world"
    _check_final(resp, 3)


async def test_chat_streams_chunks_as_the_worker_produces_them(
    gateway, start_worker, wait_model
) -> None:
    await start_worker(backend=EchoBackend(token_delay_s=0.05))
    await wait_model(gateway)
    text = "one two three four five six"
    async with ollama.AsyncClient(host=gateway) as client:
        stream = await client.chat(
            model="echo", messages=[{"role": "user", "content": text}], stream=True
        )
        parts = [p async for p in stream]
    assert len(parts) >= 3  # streamed, not one blob
    assert all(p.done is False for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == text
    final = parts[-1]
    assert final.message is not None and final.message.content == ""
    _check_final(final, 6)


async def test_generate_streaming_and_not(client) -> None:
    resp = await client.generate(model="echo", prompt="say this", stream=False)
    assert resp.response == "say this"
    _check_final(resp, 2)
    parts = [p async for p in await client.generate(model="echo", prompt="say that", stream=True)]
    assert "".join(p.response for p in parts) == "say that" and parts[-1].done
    _check_final(parts[-1], 2)


async def test_model_with_latest_tag_is_the_same_model(client) -> None:
    resp = await client.generate(model="echo:latest", prompt="tagged", stream=False)
    assert resp.response == "tagged" and resp.model == "echo:latest"


async def test_empty_messages_load_the_model(client) -> None:
    resp = await client.chat(model="echo", messages=[])
    assert resp.done and resp.done_reason == "load"
    resp = await client.generate(model="echo", keep_alive=0)
    assert resp.done_reason == "unload"


async def test_embed_returns_deterministic_vectors(client) -> None:
    resp = await client.embed(model="echo", input=["alpha", "beta gamma"])
    assert resp.model == "echo"
    assert [len(v) for v in resp.embeddings] == [EMBED_DIM, EMBED_DIM]
    assert list(resp.embeddings[0]) == embedding("alpha")
    assert list(resp.embeddings[1]) == embedding("beta gamma")
    one = await client.embed(model="echo", input="alpha")
    assert list(one.embeddings[0]) == embedding("alpha")


async def test_tags_ps_show_and_version_list_live_models(client, echo_gateway) -> None:
    tags = await client.list()
    assert [m.model for m in tags.models] == ["echo"]
    assert tags.models[0].digest and tags.models[0].details is not None
    ps = await client.ps()
    assert [m.model for m in ps.models] == ["echo"] and ps.models[0].expires_at is not None
    show = await client.show("echo")
    assert "jetgrid" in (show.modelfile or "") and show.details is not None
    async with httpx.AsyncClient(base_url=echo_gateway) as http:
        assert (await http.get("/api/version")).json()["version"]


async def test_unknown_model_raises_the_clients_404(client) -> None:
    for call in (
        client.chat(model="nope", messages=HELLO),
        client.generate(model="nope", prompt="x", stream=False),
        client.embed(model="nope", input="x"),
        client.show("nope"),
    ):
        with pytest.raises(ollama.ResponseError) as err:
            await call
        assert err.value.status_code == 404 and "nope" in err.value.error


async def test_a_failing_job_ends_the_stream_with_an_error_line(client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        async for _ in await client.chat(
            model="echo", messages=HELLO, stream=True, options={"fail": "permanent"}
        ):
            pass
    assert "failed" in err.value.error and "permanently" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        await client.chat(model="echo", messages=HELLO, options={"fail": "permanent"})
    assert err.value.status_code == 500


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/api/chat", b"{", "not valid JSON"),
        ("/api/chat", b'{"messages": []}', "model"),
        ("/api/chat", b'{"model": "echo", "messages": [{"content": "x"}]}', "messages.0.role"),
        ("/api/generate", b'{"model": 3}', "model"),
    ],
)
async def test_bad_requests_get_400_in_ollamas_shape(echo_gateway, path, body, words) -> None:
    async with httpx.AsyncClient(base_url=echo_gateway) as http:
        r = await http.post(path, content=body)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and words in r.json()["error"]


async def test_streaming_body_is_ndjson(echo_gateway) -> None:
    async with httpx.AsyncClient(base_url=echo_gateway) as http:
        r = await http.post("/api/generate", json={"model": "echo", "prompt": "a b"})
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[-1]["done"] is True and "".join(x["response"] for x in lines) == "a b"
