"""The OpenAI-compatible API: /v1/chat/completions and /v1/models for the official `openai` client.

`stream: true` answers Server-Sent Events, one `chat.completion.chunk` per token chunk (same id
and `created` on every chunk), a finishing chunk with `finish_reason`, a usage chunk
(`choices: []`) when `stream_options.include_usage` is set, then `data: [DONE]`. Errors are
`{"error": {"message", "type", "code"}}`; an error during a stream is one `data:` line holding
`error`, which the client raises as APIError.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.gateway import auth
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.jobs_api import read_json
from jetgrid.gateway.live import LiveResponse
from jetgrid.gateway.llm import LLMRun, new_job, output_text, pick_pool, resolve_model, token_counts
from jetgrid.projections.jobs import JobView

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway

# Every other request field (temperature, max_tokens, seed, stop, ...) goes to the backend as
# job options, as Ollama's own OpenAI layer does.
_NOT_OPTIONS = frozenset({"model", "messages", "stream", "stream_options", "tools"})
# OpenAI fields whose backend option has another name (Ollama's OpenAI layer renames them too).
_RENAMED = {"max_tokens": "num_predict", "max_completion_tokens": "num_predict"}


def job_options(body: dict[str, Any], not_options: frozenset[str]) -> dict[str, Any]:
    """The job options of an OpenAI request: every field but `not_options`, under the name the
    backends take (`max_tokens` -> `num_predict`; the other sampling fields keep theirs)."""
    return {_RENAMED.get(k, k): v for k, v in body.items() if k not in not_options}


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionReq(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None


def bad_request(exc: ValidationError) -> HTTPError:
    """400 in OpenAI's error shape naming the first field at fault."""
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "body"
    return HTTPError(
        400, f"field '{loc}': {err['msg']}", field=loc, type="invalid_request_error", code=None
    )


def _text(content: Any) -> str:
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def usage(view: JobView) -> dict[str, int]:
    p, c = token_counts(view)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def failure(view: JobView | None) -> str:
    if view is None:
        return "the job did not finish in time"
    return f"job {view.job_id} {view.status}: {view.error or 'no reason given'}"


def not_found(name: str) -> HTTPError:
    """404 `model_not_found`, which the client raises as NotFoundError."""
    return HTTPError(
        404,
        f"The model '{name}' does not exist or no live worker serves it.",
        field="model",
        type="invalid_request_error",
        code="model_not_found",
    )


def served(request: Request, name: str) -> tuple[str, str]:
    """(model, pool) a live worker serves `name` in, within the caller's key scope, or 404."""
    gw: Gateway = request.app.state.gateway
    live = gw.fleet.live_models()
    model = resolve_model(name, live)
    if model is None:
        raise not_found(name)
    pool = pick_pool(gw, model, live[model])
    auth.check_scope(request, pool=pool, model=model)
    return model, pool


async def chat_completions(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    try:
        req = ChatCompletionReq.model_validate(await read_json(request))
    except ValidationError as exc:
        raise bad_request(exc) from None
    model, pool = served(request, req.model)
    body = req.model_dump(exclude_none=True)
    options = job_options(body, _NOT_OPTIONS)
    messages = [
        {**m.model_dump(exclude_none=True), "content": _text(m.content)} for m in req.messages
    ]
    inp: dict[str, Any] = {"messages": messages}
    if req.tools:
        inp["tools"] = req.tools
    job = new_job(gw, model=model, pool=pool, kind="chat", input=inp, options=options)
    run = LLMRun(gw, job, tokens=bool(req.stream))
    await run.start(request)
    cid = f"chatcmpl-{job.job_id}"
    created = int(datetime.now(UTC).timestamp())

    if not req.stream:
        view = await run.result()
        if view is None or view.status != "completed":
            raise HTTPError(504 if view is None else 500, failure(view), type="server_error")
        return JSONResponse(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": req.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": output_text(view.output)},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": usage(view),
                "system_fingerprint": "jetgrid",
            }
        )

    include_usage = bool((req.stream_options or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "system_fingerprint": "jetgrid",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        async for kind, value in run.stream():
            if kind == "token":
                yield chunk({"content": value})
            elif kind == "done" and value.status == "completed":
                yield chunk({}, finish="stop")
                if include_usage:
                    last = {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": req.model,
                        "choices": [],
                        "usage": usage(value),
                    }
                    yield b"data: " + json.dumps(last).encode() + b"\n\n"
            else:
                err = {"error": {"message": failure(value), "type": "server_error", "code": None}}
                yield b"data: " + json.dumps(err).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    return LiveResponse(
        events(), run.close, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def models(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    data = [
        {"id": m, "object": "model", "created": 0, "owned_by": "jetgrid"}
        for m in auth.visible_models(request, gw.fleet.live_models())
    ]
    return JSONResponse({"object": "list", "data": data})


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
]
