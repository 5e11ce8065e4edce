"""The fake Ollama server, checked through the official `ollama` client: it must parse."""

from __future__ import annotations

from collections.abc import AsyncIterator

import ollama
import pytest


@pytest.fixture
async def client(fake_ollama) -> AsyncIterator[ollama.AsyncClient]:
    c = ollama.AsyncClient(host=fake_ollama.url)
    yield c
    await c.close()


async def test_generate_streams_and_answers_whole(client, fake_ollama) -> None:
    parts = [p async for p in await client.generate("tiny:1b", "one two three", stream=True)]
    assert "".join(p.response for p in parts) == "one two three"
    final = parts[-1]
    assert final.done and final.done_reason == "stop"
    assert final.eval_count == 3 and final.prompt_eval_count == 3
    assert final.total_duration and final.total_duration >= final.eval_duration > 0
    whole = await client.generate("tiny:1b", "one two", stream=False)
    assert whole.response == "one two" and whole.done


async def test_chat_embed_tags_ps(client, fake_ollama) -> None:
    msgs = [{"role": "user", "content": "hello there"}]
    parts = [p async for p in await client.chat("tiny:1b", msgs, stream=True)]
    assert "".join(p.message.content or "" for p in parts) == "hello there"
    assert parts[-1].done and parts[-1].message.role == "assistant"
    resp = await client.chat("tiny:1b", msgs)
    assert resp.message.content == "hello there"
    emb = await client.embed("tiny:1b", ["a", "b"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == 8
    tags = await client.list()
    assert {m.model for m in tags.models} == {"tiny:1b", "other:1b"}
    ps = await client.ps()
    assert [(m.model, m.size_vram) for m in ps.models] == [("tiny:1b", 2 * 2**30)]


async def test_loading_a_cold_model_shows_in_ps_and_evicts(client, fake_ollama) -> None:
    fake_ollama.max_loaded = 1
    await client.generate("other:1b", "x")
    assert [m.model for m in (await client.ps()).models] == ["other:1b"]
    assert fake_ollama.loads == 1


@pytest.mark.parametrize(
    ("setup", "status"),
    [
        (lambda s: None, 404),  # unknown model
        (lambda s: s.fail_next.extend([(400, "invalid options")] * 2), 400),
        (lambda s: setattr(s, "refuse", 503), 503),
        (lambda s: s.fail_next.extend([(429, "too many requests")] * 2), 429),
    ],
)
async def test_errors_are_response_errors_with_status(client, fake_ollama, setup, status) -> None:
    setup(fake_ollama)
    model = "nope:1b" if status == 404 else "tiny:1b"
    with pytest.raises(ollama.ResponseError) as err:
        await client.generate(model, "x", stream=False)
    assert err.value.status_code == status
    with pytest.raises(ollama.ResponseError):
        async for _ in await client.generate(model, "x", stream=True):
            pass


async def test_pull_reports_progress(client, fake_ollama) -> None:
    steps = [p async for p in await client.pull("pullable:1b", stream=True)]
    assert steps[0].status == "pulling manifest" and steps[-1].status == "success"
    assert [p.completed for p in steps if p.total] == [2**20, 2 * 2**20, 3 * 2**20, 4 * 2**20]
    assert "pullable:1b" in {m.model for m in (await client.list()).models}
    with pytest.raises(ollama.ResponseError, match="file does not exist"):
        async for _ in await client.pull("missing:1b", stream=True):
            pass


async def test_prompt_evaluation_costs_only_the_uncached_prefix(client, fake_ollama) -> None:
    """A second turn of a chat evaluates only what follows the first turn (its prompt and the
    reply are cached); another conversation, or a cold cache, pays for every word."""
    fake_ollama.prompt_token_s = 0.001
    system = {"role": "system", "content": " ".join(["rule"] * 50)}
    turn1 = [system, {"role": "user", "content": "hello there"}]
    first = await client.chat("tiny:1b", turn1)
    assert first.prompt_eval_count == 2 + 50 + 2  # two roles, 52 words
    turn2 = [*turn1, {"role": "assistant", "content": "hello there"},
             {"role": "user", "content": "and now"}]  # fmt: skip
    second = await client.chat("tiny:1b", turn2)
    assert second.prompt_eval_count == 3  # "user and now": the rest was cached
    assert second.prompt_eval_duration < first.prompt_eval_duration
    other = await client.chat("tiny:1b", [{"role": "user", "content": "x y"}])
    assert other.prompt_eval_count == 3
    fake_ollama.cache.clear()
    assert (await client.chat("tiny:1b", turn2)).prompt_eval_count == 60
