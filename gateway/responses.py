"""The OpenAI Responses API: /v1/responses create, retrieve, cancel and delete.

A response is one chat job: its id is ``resp_<job_id>``, found as jobs are (gateway.jobs_api:
within the caller's key scope, any retained job). `input` (a string, or messages whose content
is a string or a list of text parts) and `instructions` (a system message first) become the
job's messages; every other field but `stream`/`background`/`store` goes to the backend as an
option (`max_output_tokens` as `num_predict`).

- `background: true` answers at once with status ``queued``; retrieve it later.
- Otherwise the request waits for the job and answers the finished response.
- `stream: true` answers the Responses streaming events as SSE, each with its
  `sequence_number`: ``response.created`` (0), ``response.in_progress`` (1),
  ``response.output_item.added`` (2), ``response.content_part.added`` (3), one
  ``response.output_text.delta`` per token chunk (4, 5, ...), then ``response.output_text.done``,
  ``response.content_part.done``, ``response.output_item.done`` and ``response.completed`` (or
  ``response.failed``). ``GET /v1/responses/{id}?stream=true&starting_after=N`` replays the
  same events after N, from any gateway: the deltas are the attempt's chunks read back from
  the TOKENS stream (gateway.chunks), so every gateway numbers them alike, and the completed
  output fills in chunks not yet stored. A job retried mid-stream goes on with the new
  attempt's deltas (the protocol cannot take text back); the ``.done`` events and
  ``response.completed`` carry the output of the attempt that completed.
- ``metadata["webhook_url"]`` is the job's `webhook` (checked as a job's is, gateway.hooks): the
  webhook service POSTs ``job.<status>`` for it, signed with the caller's key's secret.
- The job's `submitter`, tenant and lane are the caller's (gateway.llm.tenancy), as on every LLM
  route; a background response's too.

Job statuses map to response statuses: queued -> ``queued``; claimed, running ->
``in_progress``; completed -> ``completed``; cancelled -> ``cancelled``; failed, dead, rejected
-> ``failed``. Cancel stores a cancel request (a finished response is answered as it is). Delete
cancels a response still running, marks it deleted (the key ``deleted.<job_id>`` in the batches
bucket, gateway.batchstore, so every gateway agrees and a restart forgets nothing) and answers
``{"id", "object", "deleted": true}``; from then on retrieve, stream resume, cancel and delete
answer 404 for it. The job itself stays (``GET /v1/jobs/{id}``): its events stay in the log,
which is never rewritten, until its retention drops them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.events import JetgridError, JobCancelRequested
from jetgrid.gateway import hooks
from jetgrid.gateway.batchstore import BatchStore
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.files import unavailable
from jetgrid.gateway.jobs_api import find_job, read_json
from jetgrid.gateway.live import LiveResponse
from jetgrid.gateway.llm import LLMRun, new_job, output_text, tenancy, token_counts
from jetgrid.gateway.openai_api import _text, bad_request, job_options, served
from jetgrid.projections.jobs import JobView

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway

PREFIX = "resp_"
_NOT_OPTIONS = frozenset(
    {"model", "input", "instructions", "stream", "background", "store", "metadata"}
)
_STATUS = {
    "unknown": "queued",
    "queued": "queued",
    "claimed": "in_progress",
    "running": "in_progress",
    "completed": "completed",
    "cancelled": "cancelled",
}
FIRST_DELTA = 4  # sequence number of the first output_text.delta


class ResponseReq(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    stream: bool | None = False
    background: bool | None = False
    metadata: dict[str, str] | None = None


def messages_of(req: ResponseReq) -> list[dict[str, str]]:
    """The chat messages of a Responses request: instructions first, then the input."""
    out = [{"role": "system", "content": req.instructions}] if req.instructions else []
    if isinstance(req.input, str):
        return [*out, {"role": "user", "content": req.input}]
    for item in req.input:
        if item.get("type", "message") != "message" or not isinstance(item.get("role"), str):
            raise HTTPError(
                400,
                f"Input item {item.get('type')!r} is not supported; send messages with a "
                "role and text content.",
                field="input",
                type="invalid_request_error",
                code=None,
            )
        out.append({"role": item["role"], "content": _text(item.get("content"))})
    return out


def response_id(job_id: str) -> str:
    return PREFIX + job_id


def status_of(view: JobView) -> str:
    return _STATUS.get(view.status, "failed")


def message_item(view: JobView, text: str, status: str) -> dict[str, Any]:
    """The assistant message output item holding `text`."""
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "id": f"msg_{view.job_id}",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def response_body(view: JobView, *, background: bool = False) -> dict[str, Any]:
    """The Response object of a job, as the job stands."""
    status = status_of(view)
    p, c = token_counts(view)
    done = view.status == "completed"
    body: dict[str, Any] = {
        "id": response_id(view.job_id),
        "object": "response",
        "created_at": view.submitted_at.timestamp() if view.submitted_at else 0,
        "status": status,
        "background": background,
        "model": view.model or "",
        "output": [message_item(view, output_text(view.output), "completed")] if done else [],
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "usage": {
            "input_tokens": p,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": c,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": p + c,
        }
        if done
        else None,
    }
    if status == "failed":
        body["error"] = {"code": "server_error", "message": view.error or f"job {view.status}"}
    return body


async def is_deleted(gw: Gateway, job_id: str) -> bool:
    """Whether the response of `job_id` was deleted (gateway.batchstore)."""
    try:
        return await BatchStore(gw.bus, gw.settings).response_deleted(job_id)
    except JetgridError as exc:
        raise unavailable(
            f"read whether response {response_id(job_id)!r} was deleted", exc
        ) from exc


async def find_response(request: Request) -> JobView:
    """The chat job a ``resp_<job_id>`` path names, in the caller's scope; 404 otherwise,
    and for a deleted response."""
    rid = request.path_params["response_id"]
    if not rid.startswith(PREFIX) or len(rid) == len(PREFIX):
        raise HTTPError(404, f"No response with id {rid!r}.", field="response_id")
    request.scope["path_params"]["job_id"] = rid[len(PREFIX) :]
    try:
        view = await find_job(request)
    except HTTPError as exc:
        if exc.status == 404:
            raise HTTPError(404, f"No response with id {rid!r}.", field="response_id") from None
        raise
    if view.kind != "chat" or await is_deleted(request.app.state.gateway, view.job_id):
        raise HTTPError(404, f"No response with id {rid!r}.", field="response_id")
    return view


def sse_event(seq: int, body: dict[str, Any]) -> bytes:
    body["sequence_number"] = seq
    return f"event: {body['type']}\ndata: {json.dumps(body)}\n\n".encode()


async def stream_events(run: LLMRun, view: JobView, after: int) -> AsyncIterator[bytes]:
    """The Responses streaming events of `run`'s job with a sequence number over `after`."""
    item_id = f"msg_{view.job_id}"
    at = {"item_id": item_id, "output_index": 0, "content_index": 0}
    started = {**response_body(view), "status": "in_progress", "output": []}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    head: list[dict[str, Any]] = [
        {"type": "response.created", "response": {**started, "status": status_of(view)}},
        {"type": "response.in_progress", "response": started},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**message_item(view, "", "in_progress"), "content": []},
        },
        {"type": "response.content_part.added", **at, "part": part},
    ]
    for seq, body in enumerate(head):
        if seq > after:
            yield sse_event(seq, body)
    seq = FIRST_DELTA
    text = ""
    async for kind, value in run.stream():
        if kind == "token":
            text += value
            if seq > after:
                yield sse_event(
                    seq,
                    {"type": "response.output_text.delta", **at, "delta": value, "logprobs": []},
                )
            seq += 1
            continue
        final = value if isinstance(value, JobView) else view
        body = response_body(final)
        if final.status == "completed":
            text = output_text(final.output)  # the deltas' sum, unless a retry changed course
            tail: list[dict[str, Any]] = [
                {"type": "response.output_text.done", **at, "text": text, "logprobs": []},
                {"type": "response.content_part.done", **at, "part": {**part, "text": text}},
                {
                    "type": "response.output_item.done",
                    "output_index": 0,
                    "item": message_item(final, text, "completed"),
                },
                {"type": "response.completed", "response": body},
            ]
        else:
            if kind == "timeout":
                body = {**body, "status": "failed", "error": {"code": "server_error",
                        "message": "the job did not finish in time"}}  # fmt: skip
            tail = [{"type": "response.failed", "response": body}]
        for body in tail:
            if seq > after:
                yield sse_event(seq, body)
            seq += 1
        return


def streaming(run: LLMRun, view: JobView, after: int) -> Response:
    return LiveResponse(
        stream_events(run, view, after),
        run.close,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def create(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    try:
        req = ResponseReq.model_validate(await read_json(request))
    except ValidationError as exc:
        raise bad_request(exc) from None
    webhook = (req.metadata or {}).get("webhook_url")
    if webhook is not None:
        hooks.check_webhook(gw.settings, request, webhook, field="metadata.webhook_url")
    model, pool = served(request, req.model)
    options = job_options(req.model_dump(exclude_none=True), _NOT_OPTIONS)
    if "max_output_tokens" in options:
        options["num_predict"] = options.pop("max_output_tokens")
    inp = {"messages": messages_of(req)}
    job = new_job(
        gw,
        model=model,
        pool=pool,
        kind="chat",
        input=inp,
        options=options,
        webhook=webhook,
    )
    # The caller's tenancy first: with keys on, the proof covers the submitter.
    job = hooks.prove(request, tenancy(gw, request, job))
    view = JobView(job.job_id, status="queued", model=model, pool=pool, kind="chat")
    if req.background and not req.stream:
        try:
            await gw.bus.store(job, gw.speaker)
        except JetgridError as exc:
            raise HTTPError(503, f"Could not store the job on NATS: {exc}") from exc
        return JSONResponse(response_body(view, background=True))
    run = LLMRun(gw, job, tokens=bool(req.stream))
    await run.start(request)
    if req.stream:
        return streaming(run, view, -1)
    final = await run.result()
    if final is None:
        raise HTTPError(504, f"Response {response_id(job.job_id)!r} did not finish in time.")
    return JSONResponse(response_body(final))


def starting_after(request: Request) -> int:
    raw = request.query_params.get("starting_after")
    if raw is None or raw == "":
        return -1
    if not raw.isdigit():
        raise HTTPError(
            400,
            f"Query parameter 'starting_after' must be a sequence number, got {raw!r}.",
            field="starting_after",
            type="invalid_request_error",
            code=None,
        )
    return int(raw)


async def retrieve(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    view = await find_response(request)
    if request.query_params.get("stream", "").lower() != "true":
        return JSONResponse(response_body(view))
    after = starting_after(request)
    run = LLMRun(gw, view.job_id)
    run.follow(request)
    return streaming(run, view, after)


async def _request_cancel(gw: Gateway, view: JobView, reason: str) -> None:
    event = JobCancelRequested(job_id=view.job_id, reason=reason)
    try:
        await gw.bus.store(event, gw.speaker)
    except JetgridError as exc:
        raise HTTPError(503, f"Could not store the cancel request on NATS: {exc}") from exc


async def cancel(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    view = await find_response(request)
    if not view.terminal:
        await _request_cancel(gw, view, "response cancelled")
        return JSONResponse({**response_body(view, background=True), "status": "cancelled"})
    return JSONResponse(response_body(view))


async def delete(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    view = await find_response(request)
    if not view.terminal:
        await _request_cancel(gw, view, "response deleted")
    try:  # after the cancel: a delete that fails here can be sent again
        await BatchStore(gw.bus, gw.settings).mark_response_deleted(view.job_id)
    except JetgridError as exc:
        raise unavailable(f"mark response {response_id(view.job_id)!r} deleted", exc) from exc
    return JSONResponse({"id": response_id(view.job_id), "object": "response", "deleted": True})


routes = [
    Route("/v1/responses", create, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/cancel", cancel, methods=["POST"]),
]
