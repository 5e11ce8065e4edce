"""The Batch API's rules as plain functions: input lines in, batch status and output lines out.

`parse_lines` reads an input file (JSONL, one ``{"custom_id", "method": "POST", "url", "body"}``
a line, ``url`` equal to the batch's endpoint, custom ids unique) or raises 400 naming the line.
`tally` derives a batch's status and request counts from its lines' job statuses;
`result_line` turns one ended line into a line of the output file or of the error file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from jetgrid.events import InvalidEvent, load_json
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.llm import output_text
from jetgrid.gateway.openai_api import ChatCompletionReq, usage
from jetgrid.gateway.openai_more import CompletionReq, EmbeddingReq
from jetgrid.projections.jobs import JobView

__all__ = ["ENDPOINTS", "Line", "Tally", "parse_lines", "result_line", "tally"]

# Endpoint -> the job kind each line becomes.
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "generate",
    "/v1/embeddings": "embed",
}
_MODELS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionReq,
    "/v1/completions": CompletionReq,
    "/v1/embeddings": EmbeddingReq,
}
MAX_CUSTOM_ID = 512


@dataclass(frozen=True, slots=True)
class Line:
    """One request of a batch: its caller's id and the body it would POST to the endpoint."""

    custom_id: str
    body: dict[str, Any]


def _bad(n: int, message: str, field: str = "input_file_id") -> HTTPError:
    return HTTPError(
        400, f"Line {n} of the input file {message}", field=field, type="invalid_request_error"
    )


def parse_lines(data: bytes, endpoint: str, max_lines: int) -> list[Line]:
    """The requests of an input file for `endpoint`, or 400 naming the first line at fault."""
    lines: list[Line] = []
    seen: set[str] = set()
    model = _MODELS[endpoint]
    for n, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        if len(lines) == max_lines:
            raise _bad(n, f"is past the limit of {max_lines} requests a batch may hold; split it.")
        try:
            obj = load_json(raw)
        except InvalidEvent as exc:
            raise _bad(n, f"is not a JSON object ({exc.reason}).") from None
        if not isinstance(obj, dict):
            raise _bad(n, "is not a JSON object.")
        cid, url, body = obj.get("custom_id"), obj.get("url"), obj.get("body")
        if not isinstance(cid, str) or not 1 <= len(cid) <= MAX_CUSTOM_ID:
            raise _bad(n, f"needs a 'custom_id' string of 1-{MAX_CUSTOM_ID} characters.")
        if cid in seen:
            raise _bad(n, f"repeats custom_id {cid!r}; each line needs its own.")
        if obj.get("method", "POST") != "POST":
            raise _bad(n, f"has method {obj.get('method')!r}; only POST is batched.")
        if url != endpoint:
            raise _bad(n, f"has url {url!r}, but the batch's endpoint is {endpoint!r}.")
        if not isinstance(body, dict):
            raise _bad(n, "needs a 'body' object: the request to send to the endpoint.")
        try:
            req = model.model_validate(body)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            raise _bad(n, f"has a bad body: field '{loc}': {err['msg']}.") from None
        if getattr(req, "stream", False):
            raise _bad(n, "asks to stream; batched requests cannot stream.")
        if isinstance(getattr(req, "prompt", ""), list):
            raise _bad(n, "holds a list of prompts; put one prompt on each line.")
        seen.add(cid)
        lines.append(Line(cid, body))
    if not lines:
        raise HTTPError(
            400,
            "The input file holds no requests; give one JSON request a line.",
            field="input_file_id",
            type="invalid_request_error",
        )
    return lines


@dataclass(frozen=True, slots=True)
class Tally:
    """A batch's state, derived from its lines' job statuses."""

    status: str
    total: int
    completed: int
    failed: int
    cancelled: int
    ended: bool

    def counts(self) -> dict[str, int]:
        return {"total": self.total, "completed": self.completed, "failed": self.failed}


def tally(statuses: list[str | None], *, cancel_asked: bool) -> Tally:
    """The batch's status and counts from each line's job status (None: not found yet).

    Ended lines count as completed, failed (failed, dead, rejected) or cancelled; the batch is
    in_progress (cancelling once a cancel was asked) until every line ended, then completed
    (cancelled once a cancel was asked)."""
    completed = sum(s == "completed" for s in statuses)
    cancelled = sum(s == "cancelled" for s in statuses)
    failed = sum(s in ("failed", "dead", "rejected") for s in statuses)
    ended = completed + cancelled + failed == len(statuses)
    if ended:
        status = "cancelled" if cancel_asked else "completed"
    else:
        status = "cancelling" if cancel_asked else "in_progress"
    return Tally(status, len(statuses), completed, failed, cancelled, ended)


def _response(endpoint: str, model: str, view: JobView, created: int) -> dict[str, Any]:
    if endpoint == "/v1/embeddings":
        out = view.output if isinstance(view.output, dict) else {}
        vectors = out.get("embeddings") or []
        prompt = usage(view)["prompt_tokens"]
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
            ],
            "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
    text = output_text(view.output)
    if endpoint == "/v1/completions":
        choice: dict[str, Any] = {"text": text, "index": 0, "logprobs": None}
        return {
            "id": f"cmpl-{view.job_id}",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{**choice, "finish_reason": "stop"}],
            "usage": usage(view),
        }
    return {
        "id": f"chatcmpl-{view.job_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage(view),
    }


def result_line(endpoint: str, line: Line, view: JobView) -> tuple[bool, bytes]:
    """(whether it is an error, the output- or error-file line) of one ended line."""
    created = int(view.finished_at.timestamp()) if view.finished_at else 0
    model = str(line.body.get("model", view.model or ""))
    base = {"id": f"batch_req_{view.job_id}", "custom_id": line.custom_id}
    if view.status == "completed":
        body = _response(endpoint, model, view, created)
        out = {
            **base,
            "response": {"status_code": 200, "request_id": view.job_id, "body": body},
            "error": None,
        }
        return False, json.dumps(out, separators=(",", ":")).encode()
    code = "batch_cancelled" if view.status == "cancelled" else f"job_{view.status}"
    message = f"job {view.job_id} {view.status}: {view.error or 'no reason given'}"
    out = {**base, "response": None, "error": {"code": code, "message": message}}
    return True, json.dumps(out, separators=(",", ":")).encode()
