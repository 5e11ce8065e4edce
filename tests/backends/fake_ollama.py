"""A small, protocol-faithful Ollama server for tests and benchmarks (no model, no GPU).

It speaks the shapes of Ollama's HTTP API that jetgrid's Ollama backend and the official
``ollama`` client use: ``/api/generate``, ``/api/chat``, ``/api/embed`` (NDJSON streaming by
default, one JSON object with ``"stream": false``), ``/api/tags``, ``/api/ps``, ``/api/pull``
(progress lines), ``/api/version``; durations in nanoseconds; errors as ``{"error": "..."}`` with
400/404/429/503. "Generation" echoes the prompt (or the last chat message) word by word.

Knobs on `FakeOllama` (change them while it runs): `available` and `loaded` models,
`max_loaded` (loading one more evicts the oldest, as VRAM would), `load_delay_s` (a cold model
costs this much once), `token_delay_s` (between streamed words: makes a job slow enough to
cancel), `prompt_token_s` (prompt evaluation: this much per prompt word not in its prefix cache,
before the first token; the cache keeps the word sequences (prompt, then reply) of the last
`cache_entries` requests per model, as a server's KV cache keeps a conversation, and
`prompt_eval_count` reports only the words it had to evaluate; 0 turns the cache off),
`refuse` (an HTTP status every API call answers with, e.g. 503), `fail_next` (errors the next
inference calls answer with), `pull_steps`. It records every inference request and
every stream the client abandoned (`disconnects`), so a test can prove a cancel reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

GiB = 2**30


def full_name(model: str) -> str:
    """Ollama's tag rule: a name without a tag means `:latest`."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _details(name: str) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": name.split(":")[0].split(".")[0],
        "families": None,
        "parameter_size": "1B",
        "quantization_level": "Q4_K_M",
    }


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@dataclass
class FakeOllama:
    available: dict[str, int] = field(default_factory=dict)  # full name -> size in bytes
    loaded: dict[str, float] = field(default_factory=dict)  # full name -> load time
    max_loaded: int = 0  # 0: no limit
    load_delay_s: float = 0.0
    token_delay_s: float = 0.0
    prompt_token_s: float = 0.0
    cache_entries: int = 16
    cache: dict[str, list[list[str]]] = field(default_factory=dict)  # model -> sequences, LRU
    refuse: int | None = None
    fail_next: list[tuple[int, str]] = field(default_factory=list)
    # Once a `fail_next` error has been served, refuse everything with this status: the server
    # falls over at that exact moment, with no window for a probe to see it still up.
    then_refuse: int | None = None
    pull_steps: int = 4
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    disconnects: int = 0
    loads: int = 0
    url: str = ""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    def add(self, *models: str, size: int = 2 * GiB, loaded: bool = False) -> None:
        for m in models:
            self.available[full_name(m)] = size
            if loaded:
                self.loaded[full_name(m)] = time.monotonic()

    # -- running ----------------------------------------------------------------------------
    async def start(self) -> str:
        app = Starlette(
            routes=[
                Route("/api/generate", self._generate, methods=["POST"]),
                Route("/api/chat", self._chat, methods=["POST"]),
                Route("/api/embed", self._embed, methods=["POST"]),
                Route("/api/tags", self._tags, methods=["GET"]),
                Route("/api/ps", self._ps, methods=["GET"]),
                Route("/api/pull", self._pull, methods=["POST"]),
                Route("/api/version", self._version, methods=["GET"]),
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
    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            data = None
        return data if isinstance(data, dict) else {}

    def _refusal(self) -> Response | None:
        if self.refuse is not None:
            return JSONResponse({"error": "server busy, please try again"}, self.refuse)
        return None

    def _check(self, path: str, body: dict[str, Any]) -> Response | str:
        """The model's full name, or the error response Ollama would give."""
        self.requests.append((path, body))
        self._touch()
        if (r := self._refusal()) is not None:
            return r
        if self.fail_next:
            status, message = self.fail_next.pop(0)
            if self.then_refuse is not None:
                self.refuse, self.then_refuse = self.then_refuse, None
            return JSONResponse({"error": message}, status)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return JSONResponse({"error": "model is required"}, 400)
        name = full_name(model)
        if name not in self.available:
            return JSONResponse({"error": f"model '{model}' not found"}, 404)
        opts = body.get("options")
        if opts is not None and not isinstance(opts, dict):
            return JSONResponse({"error": "invalid options"}, 400)
        return name

    async def _load(self, name: str) -> int:
        """Load `name` if it is cold; its load_duration in ns."""
        if name in self.loaded:
            self.loaded[name] = time.monotonic()
            return 1000
        t0 = time.perf_counter()
        if self.load_delay_s:
            await asyncio.sleep(self.load_delay_s)
        if self.max_loaded and len(self.loaded) >= self.max_loaded:
            oldest = min(self.loaded, key=self.loaded.__getitem__)
            del self.loaded[oldest]
        self.loaded[name] = time.monotonic()
        self.loads += 1
        self._touch()
        return int((time.perf_counter() - t0) * 1e9) + 1000

    async def _evaluate(self, name: str, tokens: list[str], words: int) -> tuple[int, int]:
        """Evaluate a prompt: wait `prompt_token_s` per token past the longest cached prefix;
        (tokens evaluated, ns). Without a prompt cost: (its `words`, 1000 ns)."""
        if not self.prompt_token_s:
            return words, 1000
        best = 0
        for seq in self.cache.get(name, []):
            n = 0
            for a, b in zip(seq, tokens, strict=False):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        todo = len(tokens) - best
        t0 = time.perf_counter()
        await asyncio.sleep(self.prompt_token_s * todo)
        return todo, max(int((time.perf_counter() - t0) * 1e9), 1000)

    def _remember(self, name: str, tokens: list[str]) -> None:
        """Keep `tokens` (prompt and reply) in the model's prefix cache, newest last."""
        if not self.prompt_token_s:
            return
        seqs = [s for s in self.cache.get(name, []) if s != tokens]
        self.cache[name] = [*seqs, tokens][-self.cache_entries :]

    def _stream(
        self, words: list[str], make: Any, final: Any, load_ns: int, t0: float
    ) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            finished = False
            try:
                t_eval = time.perf_counter()
                for i, w in enumerate(words):
                    if self.token_delay_s:
                        await asyncio.sleep(self.token_delay_s)
                    yield (json.dumps(make(w if i == 0 else " " + w)) + "\n").encode()
                yield (json.dumps(final(load_ns, t0, t_eval)) + "\n").encode()
                finished = True
            finally:
                if not finished:
                    self.disconnects += 1
                    self._touch()

        return StreamingResponse(body(), media_type="application/x-ndjson")

    @staticmethod
    def _timings(
        words: list[str], prompt: tuple[int, int], load_ns: int, t0: float, t_eval: float
    ) -> dict[str, int]:
        now = time.perf_counter()
        return {
            "total_duration": int((now - t0) * 1e9) + load_ns,
            "load_duration": load_ns,
            "prompt_eval_count": prompt[0],
            "prompt_eval_duration": prompt[1],
            "eval_count": len(words),
            "eval_duration": max(int((now - t_eval) * 1e9), 1),
        }

    # -- endpoints --------------------------------------------------------------------------
    async def _generate(self, request: Request) -> Response:
        body = await self._body(request)
        name = self._check("/api/generate", body)
        if isinstance(name, Response):
            return name
        t0 = time.perf_counter()
        load_ns = await self._load(name)
        prompt = body.get("prompt") or ""
        if not prompt:  # an empty prompt only loads the model
            return JSONResponse(
                {"model": body["model"], "created_at": _now(), "response": "", "done": True,
                 "done_reason": "load"}
            )  # fmt: skip
        words = str(prompt).split()
        n_prompt = await self._evaluate(name, words, len(words))
        self._remember(name, words + words)

        def chunk(text: str) -> dict[str, Any]:
            return {"model": body["model"], "created_at": _now(), "response": text, "done": False}

        def final(load_ns: int, t0: float, t_eval: float, response: str = "") -> dict[str, Any]:
            return {
                "model": body["model"], "created_at": _now(), "response": response, "done": True,
                "done_reason": "stop", "context": [1, 2, 3],
                **self._timings(words, n_prompt, load_ns, t0, t_eval),
            }  # fmt: skip

        if body.get("stream", True) is False:
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s * len(words))
            return JSONResponse(final(load_ns, t0, time.perf_counter(), " ".join(words)))
        return self._stream(words, chunk, final, load_ns, t0)

    async def _chat(self, request: Request) -> Response:
        body = await self._body(request)
        name = self._check("/api/chat", body)
        if isinstance(name, Response):
            return name
        messages = body.get("messages")
        if messages is not None and not isinstance(messages, list):
            return JSONResponse({"error": "messages must be a list"}, 400)
        t0 = time.perf_counter()
        load_ns = await self._load(name)
        if not messages:
            return JSONResponse(
                {"model": body["model"], "created_at": _now(),
                 "message": {"role": "assistant", "content": ""}, "done": True,
                 "done_reason": "load"}
            )  # fmt: skip
        words = str(messages[-1].get("content", "")).split()
        tokens = [
            t for m in messages for t in [str(m.get("role")), *str(m.get("content", "")).split()]
        ]
        n_prompt = await self._evaluate(
            name, tokens, sum(len(str(m.get("content", "")).split()) for m in messages)
        )
        self._remember(name, [*tokens, "assistant", *words])

        def chunk(text: str) -> dict[str, Any]:
            return {
                "model": body["model"], "created_at": _now(),
                "message": {"role": "assistant", "content": text, "images": None}, "done": False,
            }  # fmt: skip

        def final(load_ns: int, t0: float, t_eval: float, content: str = "") -> dict[str, Any]:
            return {
                "model": body["model"], "created_at": _now(),
                "message": {"role": "assistant", "content": content}, "done": True,
                "done_reason": "stop", **self._timings(words, n_prompt, load_ns, t0, t_eval),
            }  # fmt: skip

        if body.get("stream", True) is False:
            return JSONResponse(final(load_ns, t0, time.perf_counter(), " ".join(words)))
        return self._stream(words, chunk, final, load_ns, t0)

    async def _embed(self, request: Request) -> Response:
        body = await self._body(request)
        name = self._check("/api/embed", body)
        if isinstance(name, Response):
            return name
        inp = body.get("input")
        texts = [inp] if isinstance(inp, str) else inp
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return JSONResponse({"error": "invalid input type"}, 400)
        t0 = time.perf_counter()
        load_ns = await self._load(name)
        return JSONResponse(
            {
                "model": body["model"],
                "embeddings": [embedding(name, t) for t in texts],
                "total_duration": int((time.perf_counter() - t0) * 1e9) + load_ns,
                "load_duration": load_ns,
                "prompt_eval_count": sum(len(t.split()) for t in texts),
            }
        )

    async def _tags(self, request: Request) -> Response:
        if (r := self._refusal()) is not None:
            return r
        models = [
            {"name": n, "model": n, "modified_at": _now(), "size": size, "digest": _digest(n),
             "details": _details(n)}
            for n, size in self.available.items()
        ]  # fmt: skip
        return JSONResponse({"models": models})

    async def _ps(self, request: Request) -> Response:
        if (r := self._refusal()) is not None:
            return r
        models = [
            {"name": n, "model": n, "size": self.available.get(n, 0), "digest": _digest(n),
             "details": _details(n), "expires_at": "2099-01-01T00:00:00Z",
             "size_vram": self.available.get(n, 0), "context_length": 4096}
            for n in self.loaded
        ]  # fmt: skip
        return JSONResponse({"models": models})

    async def _version(self, request: Request) -> Response:
        if (r := self._refusal()) is not None:
            return r
        return JSONResponse({"version": "0.5.1"})

    async def _pull(self, request: Request) -> Response:
        body = await self._body(request)
        self.requests.append(("/api/pull", body))
        if (r := self._refusal()) is not None:
            return r
        model = body.get("model") or body.get("name")
        if not isinstance(model, str) or not model:
            return JSONResponse({"error": "model is required"}, 400)
        name = full_name(model)
        known = model.startswith("pullable") or name in self.available
        total = 4 * 2**20

        async def lines() -> AsyncIterator[bytes]:
            yield b'{"status":"pulling manifest"}\n'
            if not known:
                yield b'{"error":"pull model manifest: file does not exist"}\n'
                return
            for i in range(1, self.pull_steps + 1):
                await asyncio.sleep(0)
                digest = _digest(name)
                part = {"status": f"pulling {digest[:12]}", "digest": f"sha256:{digest}",
                        "total": total, "completed": total * i // self.pull_steps}  # fmt: skip
                yield (json.dumps(part) + "\n").encode()
            for s in ("verifying sha256 digest", "writing manifest", "success"):
                yield (json.dumps({"status": s}) + "\n").encode()
            self.available[name] = total
            self._touch()

        if body.get("stream", True) is False:
            if not known:
                return JSONResponse({"error": "pull model manifest: file does not exist"}, 500)
            self.available[name] = total
            self._touch()
            return JSONResponse({"status": "success"})
        return StreamingResponse(lines(), media_type="application/x-ndjson")


def embedding(name: str, text: str, dim: int = 8) -> list[float]:
    """The deterministic vector the fake server returns for `text`."""
    h = hashlib.sha256(f"{name}\n{text}".encode()).digest()
    return [round(b / 255.0, 6) for b in h[:dim]]
