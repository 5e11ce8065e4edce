"""The openai backend against a real engine: llama-cpp-python's OpenAI-compatible server running
a tiny random-weight llama model written with `gguf` (tiny_gguf.py), end to end through a
jetgrid worker, nats-server and the gateway's OpenAI routes, driven by the official `openai`
client.

llama-cpp-python ships no prebuilt wheel on PyPI: installing it compiles llama.cpp (about 11
CPU-minutes), too slow for CI, so it is not a dev dependency. These tests run where an engine
is installed: in this venv, or in the Python that ``JETGRID_TEST_LLAMA_PYTHON`` names
(``python -m venv /opt/llama && /opt/llama/bin/pip install 'llama-cpp-python[server]' gguf``);
elsewhere they are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from jetgrid.worker.backends import RunContext
from jetgrid.worker.backends.openai import OpenAIBackend
from jetgrid.worker.errors import PermanentError, TransientError
from tests import helpers
from tests.helpers import until

_MADE = Path(__file__).resolve().parents[2] / ".venv-llama" / "bin" / "python"  # `make engine`
ENGINE = os.environ.get("JETGRID_TEST_LLAMA_PYTHON") or str(
    _MADE if _MADE.exists() else sys.executable
)
NEEDS = ("llama_cpp", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings", "gguf")


def _missing() -> list[str]:
    """The engine's modules that `ENGINE` cannot import."""
    check = (
        "import importlib.util as u, sys; "
        f"print(' '.join(m for m in {NEEDS!r} if u.find_spec(m) is None))"
    )
    try:
        out = subprocess.run([ENGINE, "-c", check], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        return [f"{ENGINE} ({exc})"]
    return out.stdout.split() if out.returncode == 0 else [f"{ENGINE} ({out.stderr.strip()})"]


MISSING = _missing()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"no real engine: {', '.join(MISSING)} missing in {ENGINE}; llama-cpp-python has "
        "no wheel on PyPI and compiles llama.cpp on install: run `make engine` (or point "
        "JETGRID_TEST_LLAMA_PYTHON at a Python with 'llama-cpp-python[server]' and gguf)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def llama_server(tmp_path: Path) -> AsyncIterator[str]:
    """llama-cpp-python's server with the tiny model as `tiny` (generation) and `tiny-embed`
    (embeddings), its output in `tmp_path/server.log`; yields its base URL."""
    tmp = tmp_path
    model = tmp / "tiny.gguf"
    writer = str(Path(__file__).with_name("tiny_gguf.py"))
    wrote = await asyncio.create_subprocess_exec(ENGINE, writer, str(model))
    assert await asyncio.wait_for(wrote.wait(), 120) == 0
    port = _free_port()
    common = {"model": str(model), "n_ctx": 2048, "n_threads": 1, "verbose": False}
    config = {
        "host": "127.0.0.1",
        "port": port,
        "models": [
            {**common, "model_alias": "tiny"},
            {**common, "model_alias": "tiny-embed", "embedding": True},
        ],
    }
    (tmp / "config.json").write_text(json.dumps(config))
    log = open(tmp / "server.log", "wb")  # noqa: ASYNC230  # opened once, before the server runs
    proc = await asyncio.create_subprocess_exec(
        ENGINE, "-m", "llama_cpp.server", "--config_file", str(tmp / "config.json"),
        stdout=log, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:

            async def up() -> bool:
                if proc.returncode is not None:
                    raise RuntimeError((tmp / "server.log").read_text()[-2000:])
                with contextlib.suppress(httpx.TransportError):
                    return (await http.get(f"{url}/v1/models")).status_code == 200
                return False

            await until(up, timeout=60)
        yield url
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
        log.close()


@pytest.fixture
async def backend(llama_server) -> AsyncIterator[OpenAIBackend]:
    b = OpenAIBackend(llama_server, ["tiny", "tiny-embed"])
    yield b
    await b.close()


async def test_the_real_server_lists_its_models(backend) -> None:
    assert await backend.refresh()
    assert backend.has("tiny") and backend.has("tiny-embed") and backend.is_warm("tiny")


async def test_chat_streams_real_tokens_through_worker_and_gateway(
    backend, gateway, start_worker
) -> None:
    await start_worker("tiny", "tiny-embed", backend=backend, concurrency=2)
    async with httpx.AsyncClient(base_url=gateway) as http:

        async def listed() -> bool:
            models = (await http.get("/v1/models")).json()["data"]
            return {"tiny", "tiny-embed"} <= {m["id"] for m in models}

        await until(listed, timeout=30)
    async with openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key="x", max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "the grid runs"}],
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices]
        text = "".join(p or "" for p in pieces)
        assert sum(1 for p in pieces if p) >= 2  # streamed, token by token
        assert text.strip() and text.isprintable()
        # llama-cpp-python's server sends no usage in a stream: the worker counts the chunks.
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens == 8

        again = await c.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "the grid runs"}],
            max_tokens=8,
            temperature=0,
        )
        assert again.choices[0].message.content == text  # greedy: the same tokens
        assert again.usage is not None and again.usage.completion_tokens == 8

        done = await c.completions.create(model="tiny", prompt="a cat", max_tokens=5)
        assert done.choices[0].text.strip()
        assert done.usage is not None and done.usage.completion_tokens == 5

        emb = await c.embeddings.create(model="tiny-embed", input=["the cat", "a dog"])
        assert [len(d.embedding) for d in emb.data] == [64, 64]
        assert emb.data[0].embedding != emb.data[1].embedding


async def test_a_whole_answer_carries_the_servers_own_counts(backend) -> None:
    msgs = [{"role": "user", "content": "one two"}]
    j = helpers.job(1, model="tiny", kind="chat", input={"messages": msgs, "stream": False})
    out = await backend.run(
        j.model_copy(update={"options": {"num_predict": 4}}), RunContext("w", 1)
    )
    assert out.output["message"]["content"].strip() and out.output["done_reason"] == "length"
    assert out.usage["prompt_tokens"] > 0 and out.usage["completion_tokens"] == 4
    assert "usage_estimated" not in out.usage


async def test_cancel_closes_the_stream_and_the_real_server_stops(backend, tmp_path) -> None:
    started = asyncio.Event()
    context = RunContext("w", 1)

    async def emit(_: str) -> None:
        started.set()
        context.cancelled.set()  # what a cancel request does to a running job

    context.emit = emit
    j = helpers.job(1, model="tiny", prompt="the grid", options={"num_predict": 1900})
    with pytest.raises(PermanentError, match="cancelled") as info:
        await backend.run(j, context)
    assert started.is_set() and info.value.error_type == "cancelled"
    log = tmp_path / "server.log"
    await until(lambda: "Disconnected from client" in log.read_text(), timeout=30)


async def test_the_real_servers_errors_map_to_jetgrids_classes(backend) -> None:
    # llama-cpp-python's server answers a request it cannot validate with 500 (vLLM and OpenAI
    # say 400): transient by the rules, so the gate closes until /v1/models answers again.
    j = helpers.job(1, model="tiny", prompt="x", options={"max_tokens": -5})
    with pytest.raises(TransientError, match=r"(?s)500.*greater than or equal to 0"):
        await backend.run(j, RunContext("w", 1))
    assert not backend.accepting
    assert await backend.refresh() and backend.accepting
    bad = helpers.job(2, model="tiny", kind="chat", input={"messages": [{"content": "x"}]})
    with pytest.raises(PermanentError, match="with a 'role'"):  # refused before sending
        await backend.run(bad, RunContext("w", 1))
