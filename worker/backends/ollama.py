"""The Ollama backend: jobs run on an Ollama server through the official `ollama` client.

How a job maps onto Ollama (``JobSubmitted.kind`` picks the endpoint; ``job.model`` is the
Ollama model; ``job.options`` and ``input["options"]`` are merged into Ollama's ``options``,
the input's winning):

==========  ===============  ==========================================================
kind        Ollama call      taken from the job
==========  ===============  ==========================================================
generate    ``/api/generate``  ``prompt`` (or ``input["prompt"]``); from ``input``:
                             ``system``, ``suffix``, ``template``, ``context``, ``raw``,
                             ``format``, ``images``, ``think``, ``keep_alive``
chat        ``/api/chat``      ``input["messages"]`` (or ``prompt`` as one user message);
                             from ``input``: ``tools``, ``format``, ``think``, ``keep_alive``
embed       ``/api/embed``     ``input["input"]`` (a string or a list; or ``prompt``); from
                             ``input``: ``truncate``, ``dimensions``, ``keep_alive``
==========  ===============  ==========================================================

generate and chat stream by default (``input["stream"] = false`` asks for one answer): each
chunk of text goes to ``RunContext.emit`` as it arrives. The `completed` event's output is
``{"model", "response", "done_reason"}`` (generate; plus ``thinking`` when present),
``{"model", "message": {"role", "content", "tool_calls"?, "thinking"?}, "done_reason"}`` (chat)
or ``{"model", "embeddings"}`` (embed). Its usage has ``prompt_tokens``, ``completion_tokens``,
``total_tokens`` and Ollama's own counts and nanosecond durations under their Ollama names
(``prompt_eval_count``, ``eval_count``, ``total_duration``, ``load_duration``,
``prompt_eval_duration``, ``eval_duration``).

Errors: Ollama unreachable (connection refused, reset, timeouts) or overloaded (429, 5xx, an
error line mid-stream) -> TransientError, and the backend turns unhealthy, so the worker stops
pulling until a probe (``/api/ps``) answers again. 400 and 404 (bad request, unknown model) and
other 4xx -> PermanentError carrying Ollama's message. A cancel (``ctx.cancelled`` set, or the
job's task cancelled) closes the HTTP stream, which is how Ollama learns to stop generating.

On start and every ``refresh_s`` the backend lists the server's models (``/api/tags``) and the
loaded ones (``/api/ps``, with their VRAM); the worker puts them in its pings and uses them to
prefer jobs for models already loaded, and takes no job for a model the server does not have.
With ``pull=True`` a served model the server lacks is pulled in the background after the first
inventory, with progress in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any, TypeVar, cast

import httpx
import ollama

from jetgrid.coordinator.routing import full_model_name
from jetgrid.events import JobSubmitted
from jetgrid.events.workers import ModelInfo
from jetgrid.worker.backends.base import HealthWatch, Result, RunContext, cancellable
from jetgrid.worker.errors import BackendError, PermanentError, TransientError
from jetgrid.worker.tracing import add_traceparent

log = logging.getLogger("jetgrid.worker.ollama")
T = TypeVar("T")


def _closing(stream: AsyncIterator[T]) -> contextlib.aclosing[AsyncGenerator[T, None]]:
    """Close an ollama stream when done with it: the client types its streams as AsyncIterator,
    but they are async generators (which have aclose)."""
    return contextlib.aclosing(cast(AsyncGenerator[T, None], stream))


GENERATE_KEYS = ("system", "suffix", "template", "context", "raw", "format", "images", "think")
CHAT_KEYS = ("tools", "format", "think")
EMBED_KEYS = ("truncate", "dimensions")
NS_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


def classify(exc: BaseException) -> BackendError | None:
    """The jetgrid error for an exception from the Ollama client (None: not an Ollama error)."""
    if isinstance(exc, ollama.ResponseError):
        status, message = exc.status_code, str(exc.error)
        if status == -1:  # an error line in a 200 stream: the runner failed mid-generation
            return TransientError(f"ollama: {message}", error_type="ollama_stream_error")
        if status == 429 or status >= 500:
            return TransientError(f"ollama {status}: {message}", error_type="ollama_overloaded")
        if status == 404:
            return PermanentError(f"ollama 404: {message}", error_type="unknown_model")
        return PermanentError(f"ollama {status}: {message}", error_type="bad_request")
    if isinstance(exc, ConnectionError | httpx.TransportError):
        return TransientError(
            f"ollama unreachable: {type(exc).__name__}: {exc}", error_type="ollama_unreachable"
        )
    return None


def usage_of(final: Any) -> dict[str, Any]:
    """Token counts and Ollama's durations (ns) from a final response."""
    usage: dict[str, Any] = {k: getattr(final, k, None) for k in NS_FIELDS}
    usage = {k: v for k, v in usage.items() if v is not None}
    prompt, completion = usage.get("prompt_eval_count") or 0, usage.get("eval_count") or 0
    usage.update(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )
    return usage


def _merged_options(job: JobSubmitted, inp: dict[str, Any]) -> dict[str, Any] | None:
    extra = inp.get("options")
    if extra is not None and not isinstance(extra, dict):
        raise PermanentError("input 'options' must be an object", error_type="bad_input")
    merged = {**job.options, **(extra or {})}
    return merged or None


class OllamaBackend(HealthWatch):
    """Runs generate/chat/embed jobs on one Ollama server; tracks its models and its health."""

    name = "ollama"

    def __init__(
        self,
        host: str,
        models: Iterable[str] = (),
        *,
        pull: bool = False,
        refresh_s: float = 10.0,
        probe_s: float = 1.0,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        self.host = host
        self.watching(f"ollama at {host}", refresh_s, probe_s)
        self.models = tuple(models)
        self.pull = pull
        self.client = ollama.AsyncClient(
            host=host,
            timeout=timeout or httpx.Timeout(10.0, read=600.0),
            event_hooks={"request": [add_traceparent]},  # a job's calls carry its trace
        )
        self._pulled = asyncio.Event()

    def __repr__(self) -> str:
        return (
            f"<OllamaBackend {self.host} healthy={self.healthy} "
            f"loaded={[m.name for m in self.loaded]}>"
        )

    # -- the worker's view ------------------------------------------------------------------
    def serves(self, model: str) -> bool:
        return not self.models or full_model_name(model) in {
            full_model_name(m) for m in self.models
        }

    def is_warm(self, model: str) -> bool:
        """Whether `model` is loaded on the server (as of the last inventory)."""
        name = full_model_name(model)
        return any(full_model_name(m.name) == name for m in self.loaded)

    # -- lifecycle --------------------------------------------------------------------------
    def has(self, model: str) -> bool:
        """Whether the server has `model` on disk (a model it lacks is never pulled for)."""
        return full_model_name(model) in {full_model_name(m.name) for m in self.available}

    async def start(self) -> None:
        """Take the first inventory, then keep watching; missing models are pulled (if allowed)
        in the background, so the worker pings meanwhile and takes jobs of the models it has."""
        await self.refresh()
        self._watch = asyncio.create_task(self._watch_loop(), name=f"ollama-watch-{self.host}")

    async def wait_pulled(self) -> None:
        """Until the start-up pulls are done."""
        await self._pulled.wait()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        with contextlib.suppress(Exception):
            await self.client.close()  # type: ignore[no-untyped-call]  # unannotated upstream

    async def _watch_loop(self) -> None:
        while not self.refreshed.is_set():  # Ollama not up yet: probe until it answers
            await asyncio.sleep(self.probe_s)
            await self.refresh()
        try:
            await self.ensure_models()
        finally:
            self._pulled.set()
        await self.watch_forever()

    async def refresh(self) -> bool:
        """List available and loaded models; True if Ollama answered."""
        try:
            tags = await self.client.list()
            ps = await self.client.ps()
        except Exception as exc:
            err = classify(exc) or TransientError(f"ollama: {exc}")
            self.unhealthy(err)
            return False
        self.available = [
            ModelInfo(name=m.model or "", size_bytes=m.size) for m in tags.models if m.model
        ]
        self.loaded = [
            ModelInfo(
                name=m.model or m.name or "",
                size_bytes=m.size,
                size_vram_bytes=m.size_vram,
                expires_at=m.expires_at.isoformat() if m.expires_at else None,
            )
            for m in ps.models
            if m.model or m.name
        ]
        if not self.healthy:
            log.warning("ollama at %s answers again; pulling resumes", self.host)
        self.healthy = True
        self.last_error = None
        self.refreshed.set()
        return True

    def missing(self) -> list[str]:
        return [m for m in self.models if not self.has(m)]

    async def ensure_models(self) -> None:
        """Pull each served model the server lacks (when allowed), logging progress."""
        for model in self.missing():
            if not self.pull:
                log.warning(
                    "model %s is not on ollama at %s; this worker leaves its jobs to others "
                    "(start it with --pull to fetch the model)",
                    model,
                    self.host,
                )
                continue
            try:
                await self.pull_model(model)
            except BackendError as exc:
                log.error("pulling %s failed: %s", model, exc)
        await self.refresh()

    async def pull_model(self, model: str) -> None:
        log.warning("pulling %s from ollama at %s", model, self.host)
        last_pct = -10
        try:
            stream = await self.client.pull(model, stream=True)
            async with _closing(stream):
                async for p in stream:
                    if p.total and p.completed is not None:
                        pct = int(100 * p.completed / p.total)
                        if pct >= last_pct + 10 or pct == 100:
                            last_pct = pct
                            log.warning("pull %s: %s %d%%", model, p.status, pct)
                    else:
                        log.warning("pull %s: %s", model, p.status)
        except Exception as exc:
            raise classify(exc) or TransientError(f"ollama pull: {exc}") from exc

    # -- running jobs -----------------------------------------------------------------------
    async def run(self, job: JobSubmitted, ctx: RunContext) -> Result:
        if job.kind not in ("generate", "chat", "embed"):
            raise PermanentError(
                f"the ollama backend runs generate, chat and embed jobs, not {job.kind!r}",
                error_type="bad_input",
            )
        inp = dict(job.input or {})
        call = {"generate": self._generate, "chat": self._chat, "embed": self._embed}[job.kind]
        try:
            result = await cancellable(call(job, inp, ctx), ctx, "ollama")
            if not self.is_warm(job.model):
                self._wake.set()  # Ollama just loaded it (maybe evicting another): look again
            return result
        except BackendError:
            raise
        except Exception as exc:
            err = classify(exc)
            if err is None and isinstance(exc, TypeError | ValueError):
                # The client validates requests (messages, images, format) before sending.
                err = PermanentError(f"bad {job.kind} input: {exc}", error_type="bad_input")
            if err is None:
                raise
            if isinstance(err, TransientError):
                self.unhealthy(err)
            elif err.error_type == "unknown_model":
                self._wake.set()  # the inventory is out of date: take stock again
            raise err from exc

    async def _generate(self, job: JobSubmitted, inp: dict[str, Any], ctx: RunContext) -> Result:
        prompt = job.prompt if job.prompt is not None else inp.get("prompt")
        if not isinstance(prompt, str):
            raise PermanentError("a generate job needs a string 'prompt'", error_type="bad_input")
        kwargs = {k: inp[k] for k in GENERATE_KEYS if k in inp}
        common = dict(
            model=job.model,
            prompt=prompt,
            options=_merged_options(job, inp),
            keep_alive=inp.get("keep_alive"),
            **kwargs,
        )
        if inp.get("stream", True) is False:
            final = await self.client.generate(stream=False, **common)
            text, thinking = final.response, final.thinking or ""
        else:
            parts: list[str] = []
            thoughts: list[str] = []
            final = None
            stream = await self.client.generate(stream=True, **common)
            async with _closing(stream):
                async for part in stream:
                    final = part
                    if part.thinking:
                        thoughts.append(part.thinking)
                    if part.response:
                        parts.append(part.response)
                        await ctx.emit(part.response)
            text, thinking = "".join(parts), "".join(thoughts)
        out: dict[str, Any] = {
            "model": job.model,
            "response": text,
            "done_reason": getattr(final, "done_reason", None),
        }
        if thinking:
            out["thinking"] = thinking
        return Result(output=out, usage=usage_of(final))

    async def _chat(self, job: JobSubmitted, inp: dict[str, Any], ctx: RunContext) -> Result:
        messages = inp.get("messages")
        if messages is None and job.prompt is not None:
            messages = [{"role": "user", "content": job.prompt}]
        if not isinstance(messages, list):
            raise PermanentError("a chat job needs 'messages' (a list)", error_type="bad_input")
        kwargs = {k: inp[k] for k in CHAT_KEYS if k in inp}
        common = dict(
            model=job.model,
            messages=messages,
            options=_merged_options(job, inp),
            keep_alive=inp.get("keep_alive"),
            **kwargs,
        )
        if inp.get("stream", True) is False:
            final = await self.client.chat(stream=False, **common)
            message = final.message.model_dump(exclude_none=True)
        else:
            parts: list[str] = []
            thoughts: list[str] = []
            tool_calls: list[Any] = []
            final = None
            stream = await self.client.chat(stream=True, **common)
            async with _closing(stream):
                async for part in stream:
                    final = part
                    m = part.message
                    if m.thinking:
                        thoughts.append(m.thinking)
                    if m.tool_calls:
                        tool_calls.extend(t.model_dump(exclude_none=True) for t in m.tool_calls)
                    if m.content:
                        parts.append(m.content)
                        await ctx.emit(m.content)
            message = {"role": "assistant", "content": "".join(parts)}
            if thoughts:
                message["thinking"] = "".join(thoughts)
            if tool_calls:
                message["tool_calls"] = tool_calls
        message.pop("images", None)
        out = {
            "model": job.model,
            "message": message,
            "done_reason": getattr(final, "done_reason", None),
        }
        return Result(output=out, usage=usage_of(final))

    async def _embed(self, job: JobSubmitted, inp: dict[str, Any], ctx: RunContext) -> Result:
        text = inp.get("input", job.prompt)
        if not (isinstance(text, str) or (isinstance(text, list) and text)):
            raise PermanentError(
                "an embed job needs 'input' (a string or a list of strings) or 'prompt'",
                error_type="bad_input",
            )
        kwargs = {k: inp[k] for k in EMBED_KEYS if k in inp}
        resp = await self.client.embed(
            model=job.model,
            input=text,
            options=_merged_options(job, inp),
            keep_alive=inp.get("keep_alive"),
            **kwargs,
        )
        out = {"model": job.model, "embeddings": [list(e) for e in resp.embeddings]}
        usage = usage_of(resp)
        usage["completion_tokens"] = 0
        usage["total_tokens"] = usage["prompt_tokens"]
        return Result(output=out, usage=usage)
