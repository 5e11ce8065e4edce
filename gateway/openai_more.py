"""More of the OpenAI-compatible API: /v1/embeddings, /v1/completions and /v1/models/{id}.

`/v1/embeddings` runs one `embed` job for the input (a string or a list of strings) and answers
each vector as floats or, with `encoding_format: "base64"` (what the `openai` client asks for
unless told otherwise), as base64 of little-endian float32. `/v1/completions` (legacy text
completions) runs one `generate` job per prompt (at most MAX_PROMPTS, sharing one of the
caller's wait slots); with `stream: true` (one prompt only) it answers
Server-Sent Events, one `text_completion` chunk per token chunk, a finishing chunk, a usage chunk
with `stream_options.include_usage`, then `data: [DONE]`. Token-array inputs are refused with
400: the gateway has no tokenizer. Errors are in OpenAI's shape (see gateway.openai_api).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.gateway import auth
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.jobs_api import read_json
from jetgrid.gateway.live import LiveResponse
from jetgrid.gateway.llm import LLMRun, new_job, output_text, resolve_model, token_counts
from jetgrid.gateway.openai_api import (
    bad_request,
    failure,
    job_options,
    not_found,
    served,
    usage,
)
from jetgrid.projections.jobs import JobView

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway

_TOKENS = list[int] | list[list[int]]
M = TypeVar("M", bound=BaseModel)
MAX_PROMPTS = 32  # prompts one /v1/completions request may hold


class EmbeddingReq(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[str] | _TOKENS
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class CompletionReq(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    prompt: str | list[str] | _TOKENS
    max_tokens: int | None = Field(default=None, ge=0)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None


# Every other completions field (temperature, max_tokens, seed, stop, ...) goes to the backend as
# job options, as /v1/chat/completions does.
_NOT_OPTIONS = frozenset({"model", "prompt", "stream", "stream_options", "user"})


def _parse(model: type[M], body: Any) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise bad_request(exc) from None


def _texts(value: Any, field: str) -> list[str]:
    """The input as a non-empty list of non-empty strings, or 400 naming the field."""
    texts = [value] if isinstance(value, str) else list(value)
    if not texts or not all(isinstance(t, str) for t in texts):
        what = "must not be empty" if not texts else "holds tokens; send text instead"
        raise HTTPError(
            400,
            f"field '{field}' {what} (a string or a list of strings).",
            field=field,
            type="invalid_request_error",
            code=None,
        )
    if any(not t for t in texts):
        raise HTTPError(
            400,
            f"field '{field}' holds an empty string; send non-empty text.",
            field=field,
            type="invalid_request_error",
            code=None,
        )
    return texts


def embedding_vectors(output: Any, n: int) -> list[list[float]] | None:
    """The job's `n` embedding vectors, each a list of finite numbers; None for anything else.

    A worker's output is untrusted: a model without pooling answers one vector per token (a
    list of lists), a broken one anything at all; neither may reach the float32 packer.
    """
    vectors = output.get("embeddings") if isinstance(output, dict) else None
    if not isinstance(vectors, list) or len(vectors) != n:
        return None
    for v in vectors:
        if not isinstance(v, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v
        ):
            return None
    return vectors


def _b64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _finished(view: JobView | None) -> JobView:
    if view is None or view.status != "completed":
        raise HTTPError(504 if view is None else 500, failure(view), type="server_error")
    return view


async def embeddings(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    req = _parse(EmbeddingReq, await read_json(request))
    texts = _texts(req.input, "input")
    model, pool = served(request, req.model)
    inp: dict[str, Any] = {"input": texts}
    if req.dimensions is not None:
        inp["dimensions"] = req.dimensions
    job = new_job(gw, model=model, pool=pool, kind="embed", input=inp)
    run = LLMRun(gw, job, tokens=False)
    await run.start(request)
    view = _finished(await run.result())
    vectors = embedding_vectors(view.output, len(texts))
    if vectors is None:
        raise HTTPError(
            400,
            f"The model '{req.model}' does not produce embeddings; pick an embedding model.",
            field="model",
            type="invalid_request_error",
            code=None,
        )
    prompt_n, _ = token_counts(view)
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": _b64(v) if req.encoding_format == "base64" else v,
        }
        for i, v in enumerate(vectors)
    ]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": req.model,
            "usage": {"prompt_tokens": prompt_n, "total_tokens": prompt_n},
        }
    )


def _generate(
    gw: Gateway,
    model: str,
    pool: str,
    prompt: str,
    options: dict[str, Any],
    *,
    stream: bool,
    slot: bool = False,
) -> LLMRun:
    job = new_job(gw, model=model, pool=pool, kind="generate", prompt=prompt, options=options)
    return LLMRun(gw, job, tokens=stream, slot=slot)


async def completions(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    req = _parse(CompletionReq, await read_json(request))
    prompts = _texts(req.prompt, "prompt")
    if req.stream and len(prompts) > 1:
        raise HTTPError(
            400,
            f"field 'prompt' holds {len(prompts)} prompts; stream one prompt per request.",
            field="prompt",
            type="invalid_request_error",
            code=None,
        )
    if len(prompts) > MAX_PROMPTS:
        raise HTTPError(
            400,
            f"field 'prompt' holds {len(prompts)} prompts, more than {MAX_PROMPTS}; "
            "split them over several requests.",
            field="prompt",
            type="invalid_request_error",
            code=None,
        )
    model, pool = served(request, req.model)
    body = req.model_dump(exclude_none=True)
    options = job_options(body, _NOT_OPTIONS)
    if req.stream:
        runs = [_generate(gw, model, pool, prompts[0], options, stream=True, slot=True)]
        await runs[0].start(request)
    else:  # the prompts share one wait slot: 429 before any job is submitted, or none at all
        lease = gw.limits.lease(request, "wait")
        try:
            runs = [_generate(gw, model, pool, p, options, stream=False) for p in prompts]
            for run in runs:
                await run.start(request)
            views = [_finished(v) for v in await asyncio.gather(*(r.result() for r in runs))]
        finally:
            for run in runs:
                await run.close()
            lease.release()
    cid = f"cmpl-{runs[0].job_id}"
    created = int(datetime.now(UTC).timestamp())

    def choice(i: int, text: str, finish: str | None) -> dict[str, Any]:
        return {"text": text, "index": i, "logprobs": None, "finish_reason": finish}

    def shaped(choices: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": req.model,
            "system_fingerprint": "jetgrid",
            "choices": choices,
            **more,
        }

    if not req.stream:
        counts = [usage(v) for v in views]
        total = {k: sum(c[k] for c in counts) for k in counts[0]}
        choices = [choice(i, output_text(v.output), "stop") for i, v in enumerate(views)]
        return JSONResponse(shaped(choices, usage=total))

    (run,) = runs
    include_usage = bool((req.stream_options or {}).get("include_usage"))

    def event(body: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        async for kind, value in run.stream():
            if kind == "token":
                yield event(shaped([choice(0, value, None)]))
            elif kind == "done" and value.status == "completed":
                yield event(shaped([choice(0, "", "stop")]))
                if include_usage:
                    yield event(shaped([], usage=usage(value)))
            else:
                err = {"error": {"message": failure(value), "type": "server_error", "code": None}}
                yield event(err)
        yield b"data: [DONE]\n\n"

    return LiveResponse(
        events(), run.close, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def model(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    name: str = request.path_params["model_id"]
    visible = auth.visible_models(request, gw.fleet.live_models())
    found = resolve_model(name, {m: set() for m in visible})
    if found is None:
        raise not_found(name)
    return JSONResponse({"id": name, "object": "model", "created": 0, "owned_by": "jetgrid"})


routes = [
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models/{model_id:path}", model, methods=["GET"]),
]
