"""The OpenAI wire rules, pure: URLs, errors, request bodies, SSE decoding, answers, usage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from jetgrid.worker.backends import openai_wire as wire
from jetgrid.worker.errors import PermanentError, TransientError
from tests import helpers


def job(**kw: Any) -> Any:
    return helpers.job(1, **{"model": "tiny", **kw})


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1"),
        ("http://h:8000/v1/", "http://h:8000/v1"),
        ("https://api.example.com/openai/v1", "https://api.example.com/openai/v1"),
    ],
)
def test_api_url(given: str, url: str) -> None:
    assert wire.api_url(given) == url


@pytest.mark.parametrize("bad", ["localhost:8080", "ftp://h/v1", "http://", "/v1"])
def test_a_base_url_that_is_no_http_url_is_refused_with_an_example(bad: str) -> None:
    with pytest.raises(ValueError, match=f"{bad!r} is not an http\\(s\\) URL; give one like"):
        wire.api_url(bad)


def test_redacted_drops_credentials() -> None:
    assert wire.redacted("https://u:secret@h:1/v1") == "https://h:1/v1"
    assert wire.redacted("http://h/v1") == "http://h/v1"


@pytest.mark.parametrize(
    ("status", "kind", "error_type"),
    [
        (400, PermanentError, "bad_request"),
        (422, PermanentError, "bad_request"),
        (401, TransientError, "openai_auth"),
        (403, TransientError, "openai_auth"),
        (404, PermanentError, "unknown_model"),
        (408, TransientError, "openai_overloaded"),
        (429, TransientError, "openai_overloaded"),
        (500, TransientError, "openai_overloaded"),
        (501, PermanentError, "not_supported"),
        (503, TransientError, "openai_overloaded"),
    ],
)
def test_classify_status(status: int, kind: type, error_type: str) -> None:
    err = wire.classify_status(status, "boom")
    assert isinstance(err, kind) and err.error_type == error_type
    assert f"openai server {status}: boom" in str(err)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": {"message": "no such model", "code": "model_not_found"}}', "no such model"),
        (b'{"error": "plain"}', "plain"),
        (b'{"detail": "fastapi says"}', "fastapi says"),
        (b'{"object": "error", "message": "vllm says"}', "vllm says"),
        (b"Bad Gateway", "Bad Gateway"),
        (b"", "no message"),
        (b"x" * 1000, "x" * 300),
    ],
)
def test_error_message(body: bytes, message: str) -> None:
    assert wire.error_message(body) == message


def test_sampling_renames_drops_and_passes_through() -> None:
    j = job(options={"num_predict": 5, "temperature": 0, "num_ctx": 4096, "top_k": 3, "n": 2})
    assert wire.sampling(j, {"options": {"seed": 7, "keep_alive": "5m"}}) == {
        "max_tokens": 5,
        "temperature": 0,
        "top_k": 3,
        "seed": 7,
    }
    assert wire.sampling(job(options={"num_predict": -1}), {}) == {}
    with pytest.raises(PermanentError, match="'options' must be an object"):
        wire.sampling(job(), {"options": [1]})


def test_requests_per_kind() -> None:
    path, body = wire.request(job(prompt="hi", options={"num_predict": 2}), stream=True)
    assert (path, body) == (
        "/completions",
        {"model": "tiny", "prompt": "hi", "max_tokens": 2, "stream": True,
         "stream_options": {"include_usage": True}},
    )  # fmt: skip
    msgs = [{"role": "user", "content": "x"}]
    tools = [{"type": "function", "function": {"name": "f"}}]
    path, body = wire.request(
        job(kind="chat", input={"messages": msgs, "tools": tools, "format": "json"}), stream=False
    )
    assert path == "/chat/completions"
    assert body == {
        "model": "tiny",
        "messages": msgs,
        "tools": tools,
        "response_format": {"type": "json_object"},
    }
    _, body = wire.request(job(kind="chat", prompt="p"), stream=False)
    assert body["messages"] == [{"role": "user", "content": "p"}]
    path, body = wire.request(
        job(kind="embed", input={"input": ["a"], "dimensions": 4}), stream=True
    )
    assert (path, body) == (
        "/embeddings",
        {"model": "tiny", "input": ["a"], "encoding_format": "float", "dimensions": 4},
    )
    _, body = wire.request(
        job(kind="chat", prompt="p", input={"format": {"type": "object"}}), stream=False
    )
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"kind": "chat", "input": {"messages": "x"}}, "needs 'messages'"),
        ({"kind": "chat", "input": {"messages": ["x"]}}, "needs 'messages'"),
        ({"kind": "chat", "input": {"messages": [{"role": 7}]}}, "with a 'role'"),
        ({"kind": "generate", "input": {"prompt": 3}}, "needs a string 'prompt'"),
        ({"kind": "embed", "input": {"input": []}}, "needs 'input'"),
        ({"kind": "python", "prompt": "x"}, "not 'python'"),
        ({"kind": "chat", "prompt": "x", "input": {"format": "yaml"}}, "'format' must be"),
    ],
)
def test_bad_input_is_permanent(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(PermanentError, match=message) as info:
        wire.request(job(**kw), stream=True)
    assert info.value.error_type == "bad_input"


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def events(*parts: bytes, max_line: int = wire.MAX_LINE) -> list[str]:
    return [e async for e in wire.sse_data(chunks(*parts), max_line=max_line)]


async def test_sse_events_split_anywhere() -> None:
    raw = b': comment\r\nevent: x\r\ndata: {"a":1}\r\n\r\ndata:{"b":\ndata: 2}\n\nid: 3\n\n'
    expected = ['{"a":1}', '{"b":\n2}']
    assert await events(raw) == expected
    assert await events(*[raw[i : i + 1] for i in range(len(raw))]) == expected


async def test_sse_stops_at_done_and_keeps_a_last_event_without_blank_line() -> None:
    assert await events(b"data: 1\n\ndata: [DONE]\n\ndata: 2\n\n") == ["1"]
    assert await events(b"data: 1\n\ndata: 2") == ["1", "2"]


async def test_sse_refuses_a_line_past_the_limit() -> None:
    with pytest.raises(TransientError, match="longer than 16 bytes"):
        await events(b"data: " + b"x" * 40, max_line=16)


def test_parse_raises_an_error_event_as_transient() -> None:
    with pytest.raises(TransientError, match="generation failed") as info:
        wire.parse('{"error": {"message": "generation failed"}}')
    assert info.value.error_type == "openai_stream_error"
    with pytest.raises(TransientError, match="not JSON"):
        wire.parse("<html>")
    with pytest.raises(TransientError, match="JSON object"):
        wire.parse("[1]")


def test_a_streamed_chat_answer_with_reasoning_and_tool_calls() -> None:
    a = wire.Answer(kind="chat", model="tiny")
    parts = [
        {"choices": [{"delta": {"role": "assistant", "reasoning_content": "hm"}}]},
        {"choices": [{"delta": {"content": "Hi"}}]},
        {"choices": [{"delta": {"tool_calls": [
            {"index": 0, "id": "c1", "function": {"name": "get", "arguments": '{"ci'}}]}}]},
        {"choices": [{"delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]}}]},
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
    ]  # fmt: skip
    assert [a.add(p) for p in parts] == ["", "Hi", "", "", "", ""]
    assert a.output() == {
        "model": "tiny",
        "message": {
            "role": "assistant",
            "content": "Hi",
            "thinking": "hm",
            "tool_calls": [
                {"id": "c1", "function": {"name": "get", "arguments": {"city": "Oslo"}}}
            ],
        },
        "done_reason": "tool_calls",
    }
    assert a.usage() == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_a_stream_without_usage_counts_its_text_chunks_and_says_so() -> None:
    a = wire.Answer(kind="generate", model="tiny")
    for piece in ["a", "", "b", "c"]:
        a.add({"choices": [{"text": piece}]})
    assert a.usage() == {
        "prompt_tokens": 0, "completion_tokens": 3, "total_tokens": 3, "usage_estimated": True,
    }  # fmt: skip


def test_a_whole_completion_with_llama_cpp_timings() -> None:
    a = wire.Answer(kind="generate", model="tiny")
    a.whole(
        {
            "choices": [{"text": "abc", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 3},
            "timings": {"prompt_n": 4, "prompt_ms": 1.5, "predicted_n": 3, "predicted_ms": 2},
        }
    )
    assert a.output() == {"model": "tiny", "response": "abc", "done_reason": "length"}
    assert a.usage() == {
        "prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7, "prompt_eval_count": 4,
        "eval_count": 3, "prompt_eval_duration": 1_500_000, "eval_duration": 2_000_000,
    }  # fmt: skip


def test_embeddings_in_input_order_and_model_ids() -> None:
    data = {
        "data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}],
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    out, usage = wire.embeddings(data, "e")
    assert out == {"model": "e", "embeddings": [[1.0], [2.0]]}
    assert usage == {"prompt_tokens": 2, "completion_tokens": 0, "total_tokens": 2}
    for bad in ("x", [[1.0], [2.0]]):  # not a vector; one vector per token
        with pytest.raises(PermanentError, match="not a list of numbers"):
            wire.embeddings({"data": [{"embedding": bad}]}, "e")
    assert wire.model_ids({"data": [{"id": "a"}, {"id": 3}, "x"]}) == ["a"]
    with pytest.raises(TransientError):
        wire.model_ids({"models": []})
