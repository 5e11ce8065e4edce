"""The openai backend against the fake OpenAI-compatible server, alone and inside a worker on
real NATS: the same error classes, gate and cancel behaviour as the Ollama backend."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from jetgrid.events import JobSubmitted, decode
from jetgrid.worker.backends import RunContext
from jetgrid.worker.backends.choose import make_backend
from jetgrid.worker.backends.openai import OpenAIBackend
from jetgrid.worker.errors import PermanentError, TransientError
from tests import helpers
from tests.helpers import collect, submit

pytestmark = pytest.mark.integration


def job(i: int | str, **kw: Any) -> JobSubmitted:
    """The shared test job, for the fake server's `tiny` model."""
    return helpers.job(i, **{"model": "tiny", **kw})


@pytest.fixture
async def backend(fake_openai) -> Any:
    b = OpenAIBackend(fake_openai.url, ["tiny"], probe_s=0.05)
    yield b
    await b.close()


def ctx(**kw: Any) -> RunContext:
    return RunContext(worker_id="w", attempt=1, **kw)


async def test_a_streamed_generate_emits_tokens_and_reports_counts(
    fake_openai, streams, nc, start_worker, outcomes, backend
) -> None:
    tokens = await collect(nc, streams.subjects.token_streams("j1"), json.loads)
    await start_worker("tiny", backend=backend)
    options = {"temperature": 0, "num_predict": 3, "num_ctx": 2048}
    await submit(nc, streams, job(1, prompt="the quick brown fox", options=options))
    await outcomes.wait_terminal("j1")
    done = outcomes.terminal("j1")[0].event
    assert outcomes.names("j1")[-1] == "completed"
    assert done.output == {"model": "tiny", "response": "the quick brown", "done_reason": "length"}
    u = done.usage
    assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (4, 3, 7)
    await tokens.wait_for(lambda: "".join(t["text"] for t in tokens) == "the quick brown")
    path, body = fake_openai.requests[-1]
    assert path == "/v1/completions"
    assert body == {
        "model": "tiny",
        "prompt": "the quick brown fox",
        "temperature": 0,
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_a_chat_and_an_embed(fake_openai, streams, nc, start_worker, outcomes, backend):
    await start_worker("tiny", backend=backend, concurrency=2)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi you"}]
    await submit(nc, streams, job(1, kind="chat", input={"messages": msgs}))
    await submit(nc, streams, job(2, kind="embed", input={"input": ["a b", "c"]}))
    await submit(nc, streams, job(3, kind="chat", input={"messages": msgs, "stream": False}))
    await outcomes.wait_terminal("j1", "j2", "j3")
    chat = outcomes.terminal("j1")[0].event
    assert chat.output == {
        "model": "tiny",
        "message": {"role": "assistant", "content": "hi you"},
        "done_reason": "stop",
    }
    assert chat.usage["prompt_tokens"] == 4 and chat.usage["completion_tokens"] == 2
    assert outcomes.terminal("j3")[0].event.output == chat.output
    emb = outcomes.terminal("j2")[0].event
    vector = sys.modules["jetgrid_tests_fake_openai"].embedding
    assert emb.output == {"model": "tiny", "embeddings": [vector("tiny", t) for t in ("a b", "c")]}
    assert emb.usage["prompt_tokens"] == 3 and emb.usage["completion_tokens"] == 0


async def test_overload_is_retried_and_gates_pulling_until_the_server_answers(
    fake_openai, streams, nc, start_worker, outcomes, backend
) -> None:
    pings = await collect(
        nc, streams.subjects.worker_event("w1", "heartbeat"), lambda d: decode(d).event
    )
    await start_worker("tiny", backend=backend)
    await asyncio.wait_for(backend.refreshed.wait(), 10)
    # The server falls over at the job's own call and stays down (see the Ollama test).
    fake_openai.fail_next.append((503, "server overloaded"))
    fake_openai.then_refuse = 503
    await submit(nc, streams, job(1))
    await outcomes.wait_for(lambda: "retrying" in outcomes.names("j1"))
    retry = next(e.event for e in outcomes.events["j1"] if e.type.endswith("retrying"))
    assert "503" in retry.reason
    assert not backend.accepting
    await pings.wait_for(lambda: any(not p.accepting for p in pings))
    gated = next(p for p in pings if not p.accepting)
    assert gated.backend_error and "503" in gated.backend_error
    n = len(pings)
    await pings.wait_for(lambda: len(pings) >= n + 4)
    assert [r[0] for r in fake_openai.requests].count("/v1/completions") == 1
    fake_openai.refuse = None
    await outcomes.wait_terminal("j1", timeout=20)
    assert outcomes.terminal("j1")[0].type.endswith("completed")
    await pings.wait_for(lambda: pings[-1].accepting)


async def test_unknown_model_and_bad_requests_fail_at_once_with_the_servers_message(
    fake_openai, streams, nc, start_worker, outcomes, backend
) -> None:
    await start_worker("tiny", backend=backend)
    fake_openai.fail_next.append((404, "The model `tiny` does not exist."))
    await submit(nc, streams, job(1))
    await outcomes.wait_terminal("j1")
    fake_openai.fail_next.append((400, "max_tokens must be at least 1"))
    await submit(nc, streams, job(2))
    await submit(nc, streams, job(3, kind="chat", input={"messages": "not a list"}))
    await outcomes.wait_terminal("j2", "j3")
    for j, error_type, words in [
        ("j1", "unknown_model", "does not exist"),
        ("j2", "bad_request", "max_tokens must be at least 1"),
        ("j3", "bad_input", "needs 'messages'"),
    ]:
        assert "retrying" not in outcomes.names(j)
        failed = outcomes.terminal(j)[0].event
        assert failed.error_type == error_type and words in failed.reason


async def test_cancel_closes_the_stream_to_the_server(
    fake_openai, streams, nc, start_worker, outcomes, backend
) -> None:
    fake_openai.token_delay_s = 0.05
    tokens = await collect(nc, streams.subjects.token_streams("j1"), json.loads)
    agent = await start_worker("tiny", backend=backend)
    await submit(nc, streams, job(1, kind="chat", prompt=" ".join(["word"] * 400)))
    await tokens.wait_for(lambda: len(tokens) >= 2)
    agent.held.contexts["j1"].cancelled.set()  # what a cancel request does to a running job
    await fake_openai.wait_for(lambda: fake_openai.disconnects == 1)
    await outcomes.wait_terminal("j1")
    assert outcomes.terminal("j1")[0].type == "jetgrid.job.cancelled"


async def test_cancelling_the_job_task_closes_the_stream(fake_openai, backend) -> None:
    fake_openai.token_delay_s = 0.05
    seen = asyncio.Event()

    async def emit(_: str) -> None:
        seen.set()

    task = asyncio.create_task(backend.run(job(1, prompt="w " * 400), ctx(emit=emit)))
    await asyncio.wait_for(seen.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake_openai.wait_for(lambda: fake_openai.disconnects == 1)


async def test_an_error_mid_stream_is_transient(fake_openai, backend) -> None:
    fake_openai.stream_error_after = 2
    with pytest.raises(TransientError, match="generation failed") as info:
        await backend.run(job(1, prompt="a b c d"), ctx())
    assert info.value.error_type == "openai_stream_error" and not backend.accepting


async def test_a_stream_cut_short_is_transient_not_a_short_answer(fake_openai, backend) -> None:
    fake_openai.cut_after = 2
    with pytest.raises(TransientError, match="ended before the answer finished"):
        await backend.run(job(1, prompt="a b c d"), ctx())


async def test_a_server_that_ignores_stream_answers_whole(fake_openai, backend) -> None:
    fake_openai.ignore_stream = True
    seen: list[str] = []

    async def emit(text: str) -> None:
        seen.append(text)

    out = await backend.run(job(1, kind="chat", prompt="a b c"), ctx(emit=emit))
    assert out.output["message"]["content"] == "a b c" and seen == ["a b c"]
    assert out.usage["completion_tokens"] == 3


async def test_embeddings_on_a_server_without_them_are_permanent(fake_openai, backend) -> None:
    fake_openai.embeddings = False
    with pytest.raises(PermanentError, match="--embeddings") as info:
        await backend.run(job(1, kind="embed", prompt="x"), ctx())
    assert info.value.error_type == "not_supported" and backend.accepting


async def test_unreachable_server_is_transient_and_closes_the_gate() -> None:
    b = OpenAIBackend("http://127.0.0.1:9", ["tiny"], probe_s=60)
    try:
        with pytest.raises(TransientError, match=r"at http://127\.0\.0\.1:9/v1 unreachable"):
            await b.run(job(1), ctx())
        assert not b.accepting and b.last_error
        assert not await b.refresh()
    finally:
        await b.close()


async def test_the_api_key_is_sent_and_a_wrong_one_closes_the_gate(fake_openai) -> None:
    fake_openai.api_key = "sk-right"
    good = make_backend("openai", models=["tiny"], base_url=fake_openai.url, api_key="sk-right")
    bad = OpenAIBackend(fake_openai.url, ["tiny"], api_key="sk-wrong")
    try:
        assert await good.refresh() and good.has("tiny")  # type: ignore[attr-defined]
        out = await good.run(job(1, prompt="x y"), ctx())
        assert out.output["response"] == "x y"
        assert fake_openai.headers[-1]["authorization"] == "Bearer sk-right"
        assert "sk-right" not in repr(good)
        assert not await bad.refresh()
        assert not bad.accepting and "401" in (bad.last_error or "")
        assert "--api-key" in (bad.last_error or "")
    finally:
        await good.close()
        await bad.close()


async def test_pings_report_the_servers_models_and_jobs_wait_for_one_that_lists_theirs(
    fake_openai, streams, nc, start_worker, outcomes, backend
) -> None:
    fake_openai.models = ["tiny", "other"]
    pings = await collect(
        nc, streams.subjects.worker_event("w1", "heartbeat"), lambda d: decode(d).event
    )
    await start_worker("tiny", "gone", backend=backend)
    await pings.wait_for(lambda: any(p.models_available for p in pings))
    ping = next(p for p in pings if p.models_available)
    assert {m.name for m in ping.models_available} == {"tiny", "other"}
    assert {m.name for m in ping.models_loaded} == {"tiny", "other"}
    assert backend.is_warm("tiny") and not backend.has("gone")
    # A job for a model the server does not list waits; the worker still runs the others.
    await submit(nc, streams, job(1, model="gone"), job(2))
    await outcomes.wait_terminal("j2")
    assert not outcomes.names("j1")
    assert not [r for r in fake_openai.requests if r[1].get("model") == "gone"]
