"""The fake OpenAI-compatible server speaks the protocol: the official `openai` client, unchanged,
streams and reads answers, embeddings and models from it and raises its own error types."""

from __future__ import annotations

import openai
import pytest


def client(server, **kw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0, **kw)


async def test_chat_streams_and_counts_usage(fake_openai) -> None:
    async with client(fake_openai) as c:
        stream = await c.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "one two three"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_completions_embeddings_and_models(fake_openai) -> None:
    async with client(fake_openai) as c:
        done = await c.completions.create(model="tiny", prompt="a b c", max_tokens=2)
        emb = await c.embeddings.create(model="tiny", input=["x", "y z"])
        models = await c.models.list()
    assert done.choices[0].text == "a b" and done.choices[0].finish_reason == "length"
    assert [d.index for d in sorted(emb.data, key=lambda d: d.index)] == [0, 1]
    assert emb.usage.prompt_tokens == 3
    assert [m.id for m in models.data] == ["tiny"]


async def test_errors_are_the_clients_own_types(fake_openai) -> None:
    async with client(fake_openai) as c:
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            await c.chat.completions.create(model="nope", messages=[{"role": "user"}])
        fake_openai.api_key = "secret"
        with pytest.raises(openai.AuthenticationError):
            await c.models.list()
        fake_openai.api_key = None
        fake_openai.fail_next.append((429, "slow down"))
        with pytest.raises(openai.RateLimitError):
            await c.completions.create(model="tiny", prompt="x")
        fake_openai.stream_error_after = 1
        with pytest.raises(openai.APIError, match="generation failed"):
            stream = await c.completions.create(model="tiny", prompt="x y z", stream=True)
            async for _ in stream:
                pass
