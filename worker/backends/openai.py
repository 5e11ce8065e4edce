"""The OpenAI-compatible backend: jobs run on any server that speaks the OpenAI API (vLLM,
SGLang, llama.cpp's server, LM Studio, a hosted API) over one `httpx.AsyncClient`.

==========  ========================  ===================================================
kind        request                   taken from the job
==========  ========================  ===================================================
generate    ``POST /v1/completions``  ``prompt`` (or ``input["prompt"]``); from ``input``:
                                      ``suffix``, ``response_format``, ``format``
chat        ``POST /v1/chat/...``     ``input["messages"]`` (or ``prompt`` as one user
            ``completions``           message); from ``input``: ``tools``,
                                      ``tool_choice``, ``parallel_tool_calls``,
                                      ``response_format``, ``format``
embed       ``POST /v1/embeddings``   ``input["input"]`` (a string or a list) or ``prompt``;
                                      ``input["dimensions"]``
==========  ========================  ===================================================

Sampling options map as `openai_wire` says (``num_predict`` -> ``max_tokens``, the rest by
their names). generate and chat stream by default (``input["stream"] = false`` asks for one
answer), with ``stream_options.include_usage``: each text chunk goes to ``RunContext.emit`` (a
server that answers with one JSON body instead is taken as it is). A stream that ends before a
``finish_reason`` is an error (transient), not a short answer.
Outputs and usage have the Ollama backend's shapes: ``{"model", "response", "done_reason"}``,
``{"model", "message": {"role", "content", "tool_calls"?, "thinking"?}, "done_reason"}``,
``{"model", "embeddings"}``; ``done_reason`` is the server's ``finish_reason``; usage has
``prompt_tokens``, ``completion_tokens``, ``total_tokens`` as the server counted them, plus
llama.cpp's timings as ``prompt_eval_count``/``eval_count`` and ns durations when it sends them.

Errors (`openai_wire.classify_status`): server unreachable, 401/403, 408, 429 and 5xx, a
malformed answer or an error mid-stream -> TransientError, and the backend turns unhealthy: the
worker pulls nothing until ``GET /v1/models`` answers again. 404 (unknown model), 501 (an
endpoint the server lacks) and other 4xx -> PermanentError with the server's message. A cancel
(``ctx.cancelled`` set, or the job's task cancelled) closes the HTTP stream, which is how these
servers learn to stop generating.

Inventory: at start and every ``refresh_s``, ``GET /v1/models``. Such a server serves what it
lists, so the listed models are both available and loaded (warm); the worker takes no job for
a model the server does not list. An API key, when given, goes in ``Authorization: Bearer``.
Redirects are not followed, compressed answers are not asked for, and stream lines and bodies
have size limits (`openai_wire.MAX_LINE`, `MAX_BODY`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import httpx

from jetgrid.events import JobSubmitted
from jetgrid.events.workers import ModelInfo
from jetgrid.worker.backends import openai_wire as wire
from jetgrid.worker.backends.base import HealthWatch, Result, RunContext, cancellable
from jetgrid.worker.errors import BackendError, TransientError

log = logging.getLogger("jetgrid.worker.openai")


def classify(exc: BaseException, url: str) -> BackendError | None:
    """The jetgrid error for an exception from the HTTP client talking to `url` (None: not an
    HTTP error)."""
    if isinstance(exc, httpx.TransportError | ConnectionError):
        return TransientError(
            f"openai server at {url} unreachable: {type(exc).__name__}: {exc}",
            error_type="openai_unreachable",
        )
    return None


class OpenAIBackend(HealthWatch):
    """Runs generate/chat/embed jobs on one OpenAI-compatible server; tracks its models and
    its health."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        models: Iterable[str] = (),
        *,
        api_key: str | None = None,
        refresh_s: float = 10.0,
        probe_s: float = 1.0,
        timeout: httpx.Timeout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = wire.api_url(base_url)
        self.shown = wire.redacted(self.url)  # for logs and repr: no credentials in the URL
        self.watching(f"openai server at {self.shown}", refresh_s, probe_s)
        self.models = tuple(models)
        headers = {"Accept-Encoding": "identity", "User-Agent": "jetgrid-worker"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.client = httpx.AsyncClient(
            headers=headers,
            timeout=timeout or httpx.Timeout(10.0, read=600.0),
            follow_redirects=False,
            transport=transport,
        )

    def __repr__(self) -> str:
        return (
            f"<OpenAIBackend {self.shown} healthy={self.healthy} "
            f"models={[m.name for m in self.available]}>"
        )

    # -- the worker's view ------------------------------------------------------------------
    def serves(self, model: str) -> bool:
        return not self.models or model in self.models

    def has(self, model: str) -> bool:
        """Whether the server lists `model` (as of the last inventory)."""
        return any(m.name == model for m in self.available)

    def is_warm(self, model: str) -> bool:
        """An OpenAI-compatible server has every model it lists ready."""
        return self.has(model)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Take the first inventory, then keep watching (probing while the server is away)."""
        await self.refresh()
        for model in self.models:
            if self.refreshed.is_set() and not self.has(model):
                log.warning(
                    "model %s is not listed by %s/models; this worker leaves its jobs to others",
                    model,
                    self.shown,
                )
        self._watch = asyncio.create_task(self.watch_forever(), name=f"openai-watch-{self.shown}")

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        with contextlib.suppress(Exception):
            await self.client.aclose()

    async def refresh(self) -> bool:
        """List the server's models; True if it answered."""
        try:
            ids = wire.model_ids(await self._get_json("/models", limit=4 << 20))
        except Exception as exc:
            err = exc if isinstance(exc, BackendError) else classify(exc, self.shown)
            self.unhealthy(err or TransientError(f"openai server: {exc}"))
            return False
        self.available = [ModelInfo(name=i) for i in ids]
        self.loaded = list(self.available)
        if not self.healthy:
            log.warning("openai server at %s answers again; pulling resumes", self.shown)
        self.healthy = True
        self.last_error = None
        self.refreshed.set()
        return True

    # -- HTTP -------------------------------------------------------------------------------
    async def _read(self, resp: httpx.Response, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise wire.bad_response(f"an answer larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def _check(self, resp: httpx.Response) -> None:
        if resp.status_code >= 400:
            body = await self._read(resp, 64 << 10) if not resp.is_closed else b""
            raise wire.classify_status(resp.status_code, wire.error_message(body))
        if resp.status_code != 200:
            raise wire.bad_response(f"unexpected status {resp.status_code}")

    async def _get_json(self, path: str, *, limit: int) -> dict[str, Any]:
        async with self.client.stream("GET", self.url + path) as resp:
            await self._check(resp)
            return wire.parse(await self._read(resp, limit))

    async def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.client.stream("POST", self.url + path, json=body) as resp:
            await self._check(resp)
            return wire.parse(await self._read(resp, wire.MAX_BODY))

    async def _post_stream(
        self, path: str, body: dict[str, Any], answer: wire.Answer, ctx: RunContext
    ) -> None:
        async with self.client.stream("POST", self.url + path, json=body) as resp:
            await self._check(resp)
            if resp.headers.get("content-type", "").startswith("application/json"):
                answer.whole(wire.parse(await self._read(resp, wire.MAX_BODY)))  # not streamed
                if text := "".join(answer.text):
                    await ctx.emit(text)
                return
            async for data in wire.sse_data(resp.aiter_bytes()):
                if text := answer.add(wire.parse(data)):
                    await ctx.emit(text)
        if answer.finish is None:  # cut off: the server or a proxy closed the stream early
            raise wire.bad_response("the stream ended before the answer finished")

    # -- running jobs -----------------------------------------------------------------------
    async def run(self, job: JobSubmitted, ctx: RunContext) -> Result:
        stream = (job.input or {}).get("stream", True) is not False
        path, body = wire.request(job, stream=stream and job.kind != "embed")
        try:
            return await cancellable(self._call(job, path, body, ctx), ctx, "the openai server")
        except BackendError as exc:
            self._note(exc)
            raise
        except Exception as exc:
            if (err := classify(exc, self.shown)) is None:
                raise
            self._note(err)
            raise err from exc

    def _note(self, err: BackendError) -> None:
        if isinstance(err, TransientError):
            self.unhealthy(err)
        elif err.error_type == "unknown_model":
            self._wake.set()  # the inventory is out of date: take stock again

    async def _call(
        self, job: JobSubmitted, path: str, body: dict[str, Any], ctx: RunContext
    ) -> Result:
        if job.kind == "embed":
            output, usage = wire.embeddings(await self._post_json(path, body), job.model)
            return Result(output=output, usage=usage)
        answer = wire.Answer(kind=job.kind, model=job.model)
        if body.get("stream"):
            await self._post_stream(path, body, answer, ctx)
        else:
            answer.whole(await self._post_json(path, body))
        return Result(output=answer.output(), usage=answer.usage())
