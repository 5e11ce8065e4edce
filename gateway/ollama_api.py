"""The Ollama-compatible API: what the official `ollama` client calls, served by the fleet.

Streaming is the default (NDJSON, one object per line, the last with `done: true` and the
counters); `"stream": false` returns that last object with the whole output. Durations are in
nanoseconds, from event times: total = submitted -> finished, eval = started -> finished.
Errors are `{"error": "..."}`; an error during a stream is one more line with `error` (status
stays 200, as Ollama does). Models are those served by live workers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.events import JobKind
from jetgrid.gateway import auth
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.jobs_api import read_json
from jetgrid.gateway.live import LiveResponse
from jetgrid.gateway.llm import LLMRun, new_job, output_text, pick_pool, resolve_model, token_counts
from jetgrid.projections.jobs import JobView

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway

OLLAMA_VERSION = "0.6.0"


class _Req(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    stream: bool = True
    options: dict[str, Any] | None = None
    keep_alive: Any = None


class GenerateReq(_Req):
    prompt: str | None = None
    system: str | None = None
    suffix: str | None = None
    format: Any = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | None = None


class ChatReq(_Req):
    messages: list[ChatMessage] | None = None
    tools: list[dict[str, Any]] | None = None
    format: Any = None


class EmbedReq(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[str] = ""
    options: dict[str, Any] | None = None


class EmbeddingsReq(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: Any = None


class ShowReq(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = Field(default=None, min_length=1)
    name: str | None = None  # older clients


def _parse(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        raise HTTPError(400, f"field '{loc}': {err['msg']}", field=loc) from None


def _ts(t: datetime | None = None) -> str:
    return (t or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _ns(a: datetime | None, b: datetime | None) -> int:
    return int((b - a).total_seconds() * 1e9) if a and b and b >= a else 0


def _served(request: Request, name: str) -> tuple[str, str]:
    """(model, pool) for a requested model name, or 404 in Ollama's words."""
    gw: Gateway = request.app.state.gateway
    live = gw.fleet.live_models()
    model = resolve_model(name, live)
    if model is None:
        raise HTTPError(404, f"model '{name}' not found", field="model")
    pool = pick_pool(gw, model, live[model])
    auth.check_scope(request, pool=pool, model=model)
    return model, pool


def _final(view: JobView, model: str) -> dict[str, Any]:
    prompt_n, eval_n = token_counts(view)
    return {
        "model": model,
        "created_at": _ts(view.finished_at),
        "done": True,
        "done_reason": "stop",
        "total_duration": _ns(view.submitted_at, view.finished_at),
        "load_duration": 0,
        "prompt_eval_count": prompt_n,
        "prompt_eval_duration": 0,
        "eval_count": eval_n,
        "eval_duration": _ns(view.started_at or view.submitted_at, view.finished_at),
    }


def _failure(view: JobView | None) -> str:
    if view is None:
        return "the job did not finish in time"
    return f"job {view.job_id} {view.status}: {view.error or 'no reason given'}"


async def _run(request: Request, req: _Req, kind: JobKind, chat: bool, **work: Any) -> Response:
    gw: Gateway = request.app.state.gateway
    model, pool = _served(request, req.model)
    job = new_job(gw, model=model, pool=pool, kind=kind, options=req.options, **work)
    run = LLMRun(gw, job, tokens=bool(req.stream))
    await run.start(request)

    def piece(text: str) -> dict[str, Any]:
        base: dict[str, Any] = {"model": req.model, "created_at": _ts(), "done": False}
        if chat:
            base["message"] = {"role": "assistant", "content": text}
        else:
            base["response"] = text
        return base

    if not req.stream:
        view = await run.result()
        if view is None or view.status != "completed":
            status = 504 if view is None else 500
            raise HTTPError(status, _failure(view))
        final = _final(view, req.model)
        text = output_text(view.output)
        if chat:
            final["message"] = {"role": "assistant", "content": text}
        else:
            final["response"] = text
        return JSONResponse(final)

    async def lines() -> AsyncIterator[bytes]:
        async for kind_, value in run.stream():
            if kind_ == "token":
                yield (json.dumps(piece(value)) + "\n").encode()
            elif kind_ == "done" and value.status == "completed":
                final = {**piece(""), **_final(value, req.model)}
                yield (json.dumps(final) + "\n").encode()
            else:
                yield (json.dumps({"error": _failure(value)}) + "\n").encode()

    return LiveResponse(lines(), run.close, media_type="application/x-ndjson")


def _load(req: _Req, chat: bool) -> Response:
    unload = req.keep_alive in (0, "0", "0s")
    body: dict[str, Any] = {
        "model": req.model,
        "created_at": _ts(),
        "done": True,
        "done_reason": "unload" if unload else "load",
    }
    if chat:
        body["message"] = {"role": "assistant", "content": ""}
    else:
        body["response"] = ""
    return JSONResponse(body)


async def generate(request: Request) -> Response:
    req: GenerateReq = _parse(GenerateReq, await read_json(request))
    if not req.prompt:
        _served(request, req.model)
        return _load(req, chat=False)
    work: dict[str, Any] = {"prompt": req.prompt}
    extra = {k: v for k, v in (("system", req.system), ("suffix", req.suffix)) if v}
    if req.format is not None:
        extra["format"] = req.format
    if extra:
        work["input"] = extra
    return await _run(request, req, "generate", chat=False, **work)


async def chat(request: Request) -> Response:
    req: ChatReq = _parse(ChatReq, await read_json(request))
    if not req.messages:
        _served(request, req.model)
        return _load(req, chat=True)
    inp: dict[str, Any] = {"messages": [m.model_dump(exclude_none=True) for m in req.messages]}
    if req.tools:
        inp["tools"] = req.tools
    if req.format is not None:
        inp["format"] = req.format
    return await _run(request, req, "chat", chat=True, input=inp)


async def _embed(
    request: Request, name: str, texts: list[str], options: dict[str, Any] | None
) -> tuple[list[Any], JobView]:
    """The vectors of one `embed` job over `texts`, and its terminal view."""
    gw: Gateway = request.app.state.gateway
    model, pool = _served(request, name)
    job = new_job(gw, model=model, pool=pool, kind="embed", input={"input": texts}, options=options)
    run = LLMRun(gw, job, tokens=False)
    await run.start(request)
    view = await run.result()
    if view is None or view.status != "completed":
        raise HTTPError(504 if view is None else 500, _failure(view))
    out = view.output if isinstance(view.output, dict) else {}
    embeddings = out.get("embeddings")
    if not isinstance(embeddings, list):
        raise HTTPError(400, f"model '{name}' does not produce embeddings", field="model")
    return embeddings, view


async def embed(request: Request) -> Response:
    req: EmbedReq = _parse(EmbedReq, await read_json(request))
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    embeddings, view = await _embed(request, req.model, texts, req.options)
    prompt_n, _ = token_counts(view)
    return JSONResponse(
        {
            "model": req.model,
            "embeddings": embeddings,
            "total_duration": _ns(view.submitted_at, view.finished_at),
            "load_duration": 0,
            "prompt_eval_count": prompt_n,
        }
    )


async def embeddings(request: Request) -> Response:
    """The legacy single-text route: `{"model", "prompt"}` -> `{"embedding": [...]}`; an empty
    prompt answers an empty vector without running a job, as Ollama does."""
    req: EmbeddingsReq = _parse(EmbeddingsReq, await read_json(request))
    if not req.prompt:
        _served(request, req.model)
        return JSONResponse({"embedding": []})
    embeddings, _ = await _embed(request, req.model, [req.prompt], req.options)
    return JSONResponse({"embedding": embeddings[0] if embeddings else []})


def _details() -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "jetgrid",
        "family": "",
        "families": None,
        "parameter_size": "",
        "quantization_level": "",
    }


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


async def tags(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    models = [
        {
            "name": m,
            "model": m,
            "modified_at": _ts(),
            "size": 0,
            "digest": _digest(m),
            "details": _details(),
        }
        for m in auth.visible_models(request, gw.fleet.live_models())
    ]
    return JSONResponse({"models": models})


async def ps(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    expires = _ts(datetime.now(UTC) + timedelta(minutes=5))
    models = [
        {
            "name": m,
            "model": m,
            "size": 0,
            "digest": _digest(m),
            "details": _details(),
            "expires_at": expires,
            "size_vram": 0,
            "context_length": None,
        }
        for m in auth.visible_models(request, gw.fleet.live_models())
    ]
    return JSONResponse({"models": models})


async def version(request: Request) -> Response:
    return JSONResponse({"version": OLLAMA_VERSION})


async def show(request: Request) -> Response:
    req: ShowReq = _parse(ShowReq, await read_json(request))
    name = req.model or req.name
    if not name:
        raise HTTPError(400, "field 'model': Field required", field="model")
    model, pool = _served(request, name)
    gw: Gateway = request.app.state.gateway
    backends = sorted({w.backend or "" for w in gw.fleet.live() if model in w.models})
    return JSONResponse(
        {
            "modelfile": f"# served by jetgrid pool {pool}\nFROM {model}\n",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": _details(),
            "model_info": {"jetgrid.pool": pool, "jetgrid.backends": backends},
            "capabilities": ["completion", "embedding"],
            "modified_at": _ts(),
        }
    )


routes = [
    Route("/api/generate", generate, methods=["POST"]),
    Route("/api/chat", chat, methods=["POST"]),
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/embeddings", embeddings, methods=["POST"]),
    Route("/api/tags", tags, methods=["GET"]),
    Route("/api/ps", ps, methods=["GET"]),
    Route("/api/version", version, methods=["GET"]),
    Route("/api/show", show, methods=["POST"]),
]
