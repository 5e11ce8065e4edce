"""A small, protocol-faithful OpenAI-compatible server for tests (no model, no GPU).

It speaks the shapes of the OpenAI API that vLLM, SGLang and llama.cpp's server share and that
jetgrid's openai backend and the official ``openai`` client use: ``/v1/chat/completions`` and
``/v1/completions`` (Server-Sent Events with ``stream: true``, ending ``data: [DONE]``, a usage
chunk with ``stream_options.include_usage``; one JSON answer otherwise), ``/v1/embeddings``,
``/v1/models``; errors as ``{"error": {"message", "type", "param", "code"}}`` with 400/401/404/
429/501/503. "Generation" echoes the prompt (or the last chat message) word by word; ``max_tokens``
cuts it short with ``finish_reason: "length"``.

Knobs on `FakeOpenAI` (change them while it runs): `models`, `api_key` (then every call needs
``Authorization: Bearer <key>``), `token_delay_s` (between streamed words: makes a job slow
enough to cancel), `refuse` (a status every call answers with), `fail_next` (errors the next
inference calls answer with), `then_refuse`, `stream_error_after` (an error event after that
many chunks, as vLLM sends when generation fails mid-stream), `cut_after` (the stream ends
cleanly after that many chunks, with no finish_reason nor ``[DONE]``: a proxy or a dying
server), `ignore_stream` (one JSON answer even to ``stream: true``), `embeddings` (False: 501, as
llama.cpp's server without ``--embeddings``). It records every inference request and every
stream the client abandoned (`disconnects`), so a test can prove a cancel reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def error(status: int, message: str, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status)


def embedding(model: str, text: str, dim: int = 8) -> list[float]:
    """The deterministic vector the fake server returns for `text`."""
    h = hashlib.sha256(f"{model}\n{text}".encode()).digest()
    return [round(b / 255.0, 6) for b in h[:dim]]


@dataclass
class FakeOpenAI:
    models: list[str] = field(default_factory=lambda: ["tiny"])
    api_key: str | None = None
    token_delay_s: float = 0.0
    refuse: int | None = None
    fail_next: list[tuple[int, str]] = field(default_factory=list)
    then_refuse: int | None = None
    stream_error_after: int | None = None
    cut_after: int | None = None
    ignore_stream: bool = False
    embeddings: bool = True
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    disconnects: int = 0
    url: str = ""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    # -- running ----------------------------------------------------------------------------
    async def start(self) -> str:
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="error", lifespan="off", access_log=False
        )

        class _Server(uvicorn.Server):
            def capture_signals(self):  # type: ignore[no-untyped-def,override]
                return contextlib.nullcontext()

        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)

    async def wait_for(self, condition: Any, timeout: float = 10.0) -> None:
        """Block until condition() holds (re-checked whenever the server's state changes)."""

        async def loop() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    def _touch(self) -> None:
        self._changed.set()

    # -- helpers ----------------------------------------------------------------------------
    def _gate(self, request: Request) -> Response | None:
        """The refusal every call gets (down, or a wrong key), if any."""
        self.headers.append(dict(request.headers))
        if self.refuse is not None:
            return error(self.refuse, "server busy, please try again")
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error(401, "Incorrect API key provided.", "invalid_api_key")
        return None

    async def _check(self, path: str, request: Request) -> Response | dict[str, Any]:
        """The request body, or the error response the server would give."""
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return error(400, "We could not parse the JSON body of your request.")
        self.requests.append((path, body))
        self._touch()
        if (r := self._gate(request)) is not None:
            return r
        if self.fail_next:
            status, message = self.fail_next.pop(0)
            if self.then_refuse is not None:
                self.refuse, self.then_refuse = self.then_refuse, None
            return error(status, message)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error(400, "you must provide a model parameter")
        if model not in self.models:
            return error(404, f"The model `{model}` does not exist.", "model_not_found")
        return body

    def _words(self, text: str, body: dict[str, Any]) -> tuple[list[str], str]:
        words = text.split()
        limit = body.get("max_tokens")
        if isinstance(limit, int) and limit < len(words):
            return words[:limit], "length"
        return words, "stop"

    def _answer(
        self, body: dict[str, Any], words: list[str], finish: str, n_prompt: int, chunk: Any
    ) -> Response:
        """Stream `chunk(text, finish)` objects as SSE, or one JSON answer built from them."""
        rid, created = f"cmpl-{time.monotonic_ns()}", int(time.time())
        usage = {
            "prompt_tokens": n_prompt,
            "completion_tokens": len(words),
            "total_tokens": n_prompt + len(words),
        }

        def frame(obj: dict[str, Any]) -> bytes:
            return f"data: {json.dumps({'id': rid, 'created': created, **obj})}\n\n".encode()

        if not body.get("stream") or self.ignore_stream:
            whole = chunk(" ".join(words), finish, whole=True)
            return JSONResponse({"id": rid, "created": created, **whole, "usage": usage})

        async def events() -> AsyncIterator[bytes]:
            finished = False
            try:
                for i, w in enumerate(words):
                    if self.stream_error_after is not None and i == self.stream_error_after:
                        err = {"message": "generation failed", "type": "server_error"}
                        yield f"data: {json.dumps({'error': err})}\n\n".encode()
                        finished = True
                        return
                    if self.cut_after is not None and i == self.cut_after:
                        finished = True
                        return
                    if self.token_delay_s:
                        await asyncio.sleep(self.token_delay_s)
                    yield frame(chunk(w if i == 0 else " " + w, None))
                yield frame(chunk("", finish))
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield frame(
                        {"object": chunk("", None)["object"], "choices": [], "usage": usage}
                    )
                yield b"data: [DONE]\n\n"
                finished = True
            finally:
                if not finished:
                    self.disconnects += 1
                    self._touch()

        return StreamingResponse(events(), media_type="text/event-stream")

    # -- endpoints --------------------------------------------------------------------------
    async def _chat(self, request: Request) -> Response:
        body = await self._check("/v1/chat/completions", request)
        if isinstance(body, Response):
            return body
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error(400, "'messages' is a required property")
        if not all(isinstance(m, dict) and "role" in m for m in messages):
            return error(400, "each message needs a 'role'")
        words, finish = self._words(str(messages[-1].get("content") or ""), body)
        n_prompt = sum(len(str(m.get("content") or "").split()) for m in messages)
        model = body["model"]

        def chunk(text: str, finish: str | None, whole: bool = False) -> dict[str, Any]:
            if whole:
                msg = {"role": "assistant", "content": text}
                return {"object": "chat.completion", "model": model,
                        "choices": [{"index": 0, "message": msg, "finish_reason": finish,
                                     "logprobs": None}]}  # fmt: skip
            delta = {"role": "assistant", "content": text} if text else {}
            return {"object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                 "logprobs": None}]}  # fmt: skip

        return self._answer(body, words, finish, n_prompt, chunk)

    async def _completions(self, request: Request) -> Response:
        body = await self._check("/v1/completions", request)
        if isinstance(body, Response):
            return body
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return error(400, "'prompt' must be a string")
        words, finish = self._words(prompt, body)
        model = body["model"]

        def chunk(text: str, finish: str | None, whole: bool = False) -> dict[str, Any]:
            return {"object": "text_completion", "model": model,
                    "choices": [{"index": 0, "text": text, "finish_reason": finish,
                                 "logprobs": None}]}  # fmt: skip

        return self._answer(body, words, finish, len(prompt.split()), chunk)

    async def _embeddings(self, request: Request) -> Response:
        body = await self._check("/v1/embeddings", request)
        if isinstance(body, Response):
            return body
        if not self.embeddings:
            return error(
                501, "This server does not support embeddings. Start it with `--embeddings`"
            )
        inp = body.get("input")
        texts = [inp] if isinstance(inp, str) else inp
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return error(400, "'input' must be a string or a list of strings")
        n = sum(len(t.split()) for t in texts)
        data = [
            {"object": "embedding", "index": i, "embedding": embedding(body["model"], t)}
            for i, t in enumerate(texts)
        ]
        return JSONResponse(
            {"object": "list", "data": data[::-1], "model": body["model"],
             "usage": {"prompt_tokens": n, "total_tokens": n}}
        )  # fmt: skip

    async def _models(self, request: Request) -> Response:
        if (r := self._gate(request)) is not None:
            return r
        data = [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"}
            for m in self.models
        ]
        return JSONResponse({"object": "list", "data": data})
