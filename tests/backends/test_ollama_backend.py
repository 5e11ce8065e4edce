"""The Ollama backend against the fake Ollama server, alone and inside a worker on real NATS."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from jetgrid.events import JobSubmitted, decode
from jetgrid.worker.backends import RunContext
from jetgrid.worker.backends.ollama import OllamaBackend, classify
from jetgrid.worker.errors import PermanentError, TransientError
from tests import helpers
from tests.helpers import collect, submit

pytestmark = pytest.mark.integration


def job(i: int | str, **kw: Any) -> JobSubmitted:
    """The shared test job, for the fake Ollama's tiny model."""
    return helpers.job(i, **{"model": "tiny:1b", **kw})


@pytest.fixture
async def backend(fake_ollama) -> Any:
    b = OllamaBackend(fake_ollama.url, ["tiny:1b"], probe_s=0.05)
    yield b
    await b.close()


async def test_a_streamed_generate_emits_tokens_and_reports_counts(
    fake_ollama, streams, nc, start_worker, outcomes, backend
) -> None:
    tokens = await collect(nc, streams.subjects.token_streams("j1"), json.loads)
    await start_worker("tiny:1b", backend=backend)
    await submit(nc, streams, job(1, prompt="the quick brown fox", options={"temperature": 0}))
    await outcomes.wait_terminal("j1")
    done = outcomes.terminal("j1")[0].event
    assert outcomes.said("j1") == ["completed"]
    assert done.output == {
        "model": "tiny:1b",
        "response": "the quick brown fox",
        "done_reason": "stop",
    }
    u = done.usage
    assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (4, 4, 8)
    assert u["eval_count"] == 4 and u["total_duration"] > 0 and u["eval_duration"] > 0
    assert "load_duration" in u and "prompt_eval_duration" in u
    # Chunks are coalesced (worker/tokens.py), so 1-4 messages carry the four tokens in order.
    await tokens.wait_for(lambda: "".join(t["text"] for t in tokens) == "the quick brown fox")
    assert 1 <= len(tokens) <= 4 and [t["i"] for t in tokens] == list(range(len(tokens)))
    assert fake_ollama.requests[-1][1]["options"] == {"temperature": 0}


async def test_a_chat_and_an_embed(fake_ollama, streams, nc, start_worker, outcomes, backend):
    await start_worker("tiny:1b", backend=backend, concurrency=2)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi you"}]
    await submit(nc, streams, job(1, kind="chat", input={"messages": msgs}))
    await submit(nc, streams, job(2, kind="embed", input={"input": ["a b", "c"]}))
    await submit(nc, streams, job(3, kind="chat", input={"messages": msgs, "stream": False}))
    await outcomes.wait_terminal("j1", "j2", "j3")
    chat = outcomes.terminal("j1")[0].event
    assert chat.output["message"] == {"role": "assistant", "content": "hi you"}
    assert chat.usage["prompt_tokens"] == 4 and chat.usage["completion_tokens"] == 2
    assert outcomes.terminal("j3")[0].event.output["message"]["content"] == "hi you"
    emb = outcomes.terminal("j2")[0].event
    expected = [fake_ollama_vector(fake_ollama, t) for t in ("a b", "c")]
    assert emb.output == {"model": "tiny:1b", "embeddings": expected}
    assert emb.usage["prompt_tokens"] == 3 and emb.usage["completion_tokens"] == 0


def fake_ollama_vector(server: Any, text: str) -> list[float]:
    import sys

    return sys.modules["jetgrid_tests_fake_ollama"].embedding("tiny:1b", text)


async def test_overload_is_retried_and_gates_pulling_until_ollama_answers(
    fake_ollama, streams, nc, start_worker, outcomes, backend
) -> None:
    pings = await collect(
        nc, streams.subjects.worker_event("w1", "heartbeat"), lambda d: decode(d).event
    )
    await start_worker("tiny:1b", backend=backend)
    # Ollama falls over at the job's own call and stays down. Refusing everything from the
    # start would race the worker's inventory probe (a failed probe closes the gate before the
    # job is pulled); refusing only after the call would let a probe reopen it in between.
    fake_ollama.fail_next.append((503, "server overloaded (503)"))
    fake_ollama.then_refuse = 503
    await submit(nc, streams, job(1))
    await outcomes.wait_for(lambda: "retrying" in outcomes.names("j1"))
    retry = next(e.event for e in outcomes.events["j1"] if e.type.endswith("retrying"))
    assert "503" in retry.reason
    assert not backend.accepting
    await pings.wait_for(lambda: any(not p.accepting for p in pings))
    gated = next(p for p in pings if not p.accepting)
    assert gated.backend_error and "503" in gated.backend_error
    # While gated, nothing is pulled: four more pings (2 s, past the 1 s retry delay) and the
    # job has not been tried again; the probes (/api/tags, /api/ps) keep going.
    n = len(pings)
    await pings.wait_for(lambda: len(pings) >= n + 4)
    assert [r[0] for r in fake_ollama.requests].count("/api/generate") == 1
    info = await nc.jetstream().consumer_info(streams.streams.jobs, "pool-standard-tiny_3A1b")
    assert info.num_pending + info.num_ack_pending == 1  # held back, not lost
    fake_ollama.refuse = None
    await outcomes.wait_terminal("j1", timeout=20)
    assert outcomes.terminal("j1")[0].type.endswith("completed")
    await pings.wait_for(lambda: pings[-1].accepting)


async def test_unknown_model_fails_at_once_with_ollamas_message(
    fake_ollama, streams, nc, start_worker, outcomes
) -> None:
    b = OllamaBackend(fake_ollama.url, ["tiny:1b"])
    try:
        await start_worker("tiny:1b", backend=b)
        # Ollama answers 404 for the model (e.g. `ollama rm` between two inventory reads; once
        # the worker's inventory shows it gone, it holds such jobs for a worker that has it).
        fake_ollama.fail_next.append((404, "model 'tiny:1b' not found"))
        await submit(nc, streams, job(1, model="tiny:1b"))
        await outcomes.wait_terminal("j1")
    finally:
        await b.close()
    assert outcomes.said("j1") == ["failed"]
    failed = outcomes.terminal("j1")[0].event
    assert failed.error_type == "unknown_model"
    assert "model 'tiny:1b' not found" in failed.reason


async def test_bad_request_fails_without_retry(fake_ollama, streams, nc, start_worker, outcomes):
    b = OllamaBackend(fake_ollama.url, ["tiny:1b"])
    try:
        await start_worker("tiny:1b", backend=b)
        fake_ollama.fail_next.append((400, "invalid format"))
        await submit(nc, streams, job(1))
        await submit(nc, streams, job(2, kind="chat", input={"messages": "not a list"}))
        await submit(nc, streams, job(3, kind="chat", input={"messages": [{"content": "x"}]}))
        await outcomes.wait_terminal("j1", "j2", "j3")
    finally:
        await b.close()
    assert outcomes.said("j1") == ["failed"]
    assert outcomes.terminal("j1")[0].event.error_type == "bad_request"
    assert "invalid format" in outcomes.terminal("j1")[0].event.reason
    assert outcomes.terminal("j2")[0].event.error_type == "bad_input"
    bad = outcomes.terminal("j3")[0].event  # refused by the client's own validation
    assert bad.error_type == "bad_input" and "bad chat input" in bad.reason


async def test_cancel_closes_the_stream_to_ollama(
    fake_ollama, streams, nc, start_worker, outcomes, backend
) -> None:
    fake_ollama.token_delay_s = 0.05
    tokens = await collect(nc, streams.subjects.token_streams("j1"), json.loads)
    agent = await start_worker("tiny:1b", backend=backend)
    await submit(nc, streams, job(1, prompt=" ".join(["word"] * 400)))
    await tokens.wait_for(lambda: len(tokens) >= 2)
    agent.held.contexts["j1"].cancelled.set()  # what a cancel request does to a running job
    await fake_ollama.wait_for(lambda: fake_ollama.disconnects == 1)
    await outcomes.wait_terminal("j1")
    assert outcomes.terminal("j1")[0].type == "jetgrid.job.cancelled"


async def test_cancelling_the_job_task_closes_the_stream(fake_ollama, backend) -> None:
    fake_ollama.token_delay_s = 0.05
    seen = asyncio.Event()

    async def emit(_: str) -> None:
        seen.set()

    task = asyncio.create_task(
        backend.run(job(1, prompt="w " * 400), RunContext(worker_id="w", attempt=1, emit=emit))
    )
    await asyncio.wait_for(seen.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake_ollama.wait_for(lambda: fake_ollama.disconnects == 1)


async def test_unreachable_ollama_is_transient_and_closes_the_gate() -> None:
    b = OllamaBackend("http://127.0.0.1:9", ["tiny:1b"], probe_s=60)
    try:
        with pytest.raises(TransientError, match="unreachable"):
            await b.run(job(1), RunContext(worker_id="w", attempt=1))
        assert not b.accepting and b.last_error
        assert not await b.refresh()
    finally:
        await b.close()


async def test_pings_report_loaded_and_available_models(
    fake_ollama, streams, nc, start_worker, backend
) -> None:
    pings = await collect(
        nc, streams.subjects.worker_event("w1", "heartbeat"), lambda d: decode(d).event
    )
    await start_worker("tiny:1b", backend=backend)
    # The first ping may precede the backend's first look at Ollama; the next ones carry it.
    await pings.wait_for(lambda: any(p.models_available for p in pings))
    ping = next(p for p in pings if p.models_available)
    assert [(m.name, m.size_vram_bytes) for m in ping.models_loaded] == [("tiny:1b", 2 * 2**30)]
    assert {m.name for m in ping.models_available} == {"tiny:1b", "other:1b"}
    assert ping.accepting


async def test_pull_fetches_a_missing_model_with_progress_in_the_log(fake_ollama, caplog):
    caplog.set_level(logging.WARNING, logger="jetgrid.worker.ollama")
    b = OllamaBackend(fake_ollama.url, ["tiny:1b", "pullable:3b"], pull=True)
    try:
        assert b.missing() == ["tiny:1b", "pullable:3b"]  # nothing listed before the first look
        await b.start()
        await asyncio.wait_for(b.wait_pulled(), 10)
        assert b.missing() == []
        assert ("/api/pull", {"model": "pullable:3b", "insecure": False, "stream": True}) in [
            (p, {k: v for k, v in body.items() if k in ("model", "insecure", "stream")})
            for p, body in fake_ollama.requests
        ]
    finally:
        await b.close()
    progress = [r.getMessage() for r in caplog.records if "pull pullable:3b" in r.getMessage()]
    assert any("100%" in line for line in progress), progress
    assert progress[-1].endswith("success")


async def test_without_pull_a_missing_model_is_only_reported(fake_ollama, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="jetgrid.worker.ollama")
    b = OllamaBackend(fake_ollama.url, ["pullable:3b"])
    try:
        await b.start()
        await asyncio.wait_for(b.wait_pulled(), 10)
        assert not b.has("pullable:3b") and b.has("tiny") is False and b.has("tiny:1b")
    finally:
        await b.close()
    assert b.missing() == ["pullable:3b"]
    assert not [r for r in fake_ollama.requests if r[0] == "/api/pull"]
    assert "--pull" in caplog.text


@pytest.mark.parametrize(
    ("status", "kind", "error_type"),
    [
        (400, PermanentError, "bad_request"),
        (401, PermanentError, "bad_request"),
        (404, PermanentError, "unknown_model"),
        (429, TransientError, "ollama_overloaded"),
        (500, TransientError, "ollama_overloaded"),
        (502, TransientError, "ollama_overloaded"),
        (503, TransientError, "ollama_overloaded"),
        (-1, TransientError, "ollama_stream_error"),
    ],
)
def test_classify_response_errors(status: int, kind: type, error_type: str) -> None:
    import ollama

    err = classify(ollama.ResponseError('{"error": "boom"}', status))
    assert isinstance(err, kind) and err.error_type == error_type and "boom" in str(err)


def test_classify_connection_errors() -> None:
    import httpx

    assert isinstance(classify(ConnectionError("refused")), TransientError)
    assert isinstance(classify(httpx.ReadTimeout("slow")), TransientError)
    assert classify(KeyError("x")) is None
