"""GET /openapi.json: the OpenAPI 3.1 document of jetgrid's own API (/v1).

Schemas come from the same pydantic models the handlers validate with and answer in
(`model_json_schema`); the paths are assembled here by hand.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.gateway.schemas import (
    ErrorOut,
    JobList,
    JobOut,
    JobResult,
    PoolList,
    QueueList,
    StallList,
    SubmitAccepted,
    SubmitJob,
    UsageList,
)
from jetgrid.projections.jobs import Status

MODELS: tuple[type[BaseModel], ...] = (
    SubmitJob,
    SubmitAccepted,
    JobOut,
    JobList,
    JobResult,
    PoolList,
    QueueList,
    UsageList,
    StallList,
    ErrorOut,
)
REF = "#/components/schemas/{model}"


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "the body is not JSON",
        401: "missing or wrong API key",
        403: "the key's scope does not cover this pool or model",
        404: "no such job",
        409: "the job is finished",
        413: "the body is too large",
        422: "a field or parameter is wrong (named in `error.field`)",
        429: "over the key's rate limit, an open-stream or open-wait limit, or the pool's "
        "max_backlog or max_wait_s (see Retry-After)",
        503: "NATS could not store it",
    }
    return {str(c): _json(ErrorOut, words[c]) for c in codes}


_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
}
_WAIT = {
    "name": "wait",
    "in": "query",
    "required": False,
    "description": "seconds to wait for the job to finish (0-300)",
    "schema": {"type": "number", "minimum": 0, "maximum": 300},
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_TIME = {"type": "string", "format": "date-time"}


def paths() -> dict[str, Any]:
    common = (401, 413, 429)
    return {
        "/v1/jobs": {
            "post": {
                "operationId": "submitJob",
                "summary": "Submit a job (async, or wait for its result)",
                "parameters": [
                    _WAIT,
                    _query(
                        "queue_unserved",
                        {"type": "boolean"},
                        "queue the job even if no worker has served its model in its pool "
                        "recently (otherwise 422)",
                    ),
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(SubmitJob)}},
                },
                "responses": {
                    "200": _json(JobOut, "the job finished within `wait`"),
                    "202": _json(SubmitAccepted, "queued"),
                    **_errors(400, 403, 422, 503, *common),
                },
            },
            "get": {
                "operationId": "listJobs",
                "summary": "List jobs, newest first",
                "parameters": [
                    _query(
                        "status",
                        {
                            "type": "string",
                            "enum": [s for s in get_args(Status) if s != "unknown"],
                        },
                        "only jobs in this status",
                    ),
                    _query("model", {"type": "string"}, "only jobs for this model"),
                    _query("pool", {"type": "string"}, "only jobs in this pool"),
                    _query("worker", {"type": "string"}, "only jobs run by this worker"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size"),
                    _query(
                        "cursor", {"type": "string", "pattern": "^[0-9]+$"}, "next_cursor of a page"
                    ),
                ],
                "responses": {"200": _json(JobList, "a page of jobs"), **_errors(422, *common)},
            },
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "operationId": "getJob",
                "summary": "A job's status and, when finished, its outcome",
                "parameters": [_JOB_ID],
                "responses": {"200": _json(JobOut, "the job"), **_errors(404, *common)},
            },
            "delete": {
                "operationId": "cancelJob",
                "summary": "Ask for the job to be cancelled",
                "parameters": [
                    _JOB_ID,
                    _query("reason", {"type": "string", "maxLength": 1000}, "why"),
                ],
                "responses": {
                    "202": _json(JobOut, "the cancel request is stored"),
                    **_errors(403, 404, 409, 503, *common),
                },
            },
        },
        "/v1/jobs/{job_id}/result": {
            "get": {
                "operationId": "getJobResult",
                "summary": "The output of a completed job",
                "parameters": [_JOB_ID, _WAIT],
                "responses": {
                    "200": _json(JobResult, "completed"),
                    "202": _json(JobOut, "not finished yet (see Retry-After)"),
                    **_errors(404, 409, 422, *common),
                },
            },
        },
        "/v1/jobs/{job_id}/events": {
            "get": {
                "operationId": "streamJobEvents",
                "summary": "The job's lifecycle and token chunks as Server-Sent Events",
                "parameters": [
                    _JOB_ID,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "`event: <name>` with `id: <JOB_EVENTS seq>`; ends after "
                        "the terminal event",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(404, 422, *common),
                },
            },
        },
        "/v1/pools": {
            "get": {
                "operationId": "listPools",
                "summary": "Pools with their queues, warm and cold workers and a suggested size",
                "responses": {"200": _json(PoolList, "the pools"), **_errors(503, *common)},
            },
        },
        "/v1/queue": {
            "get": {
                "operationId": "getQueue",
                "summary": "The live queue per pool, model and tenant: queued, running, waits, "
                "drain rate",
                "responses": {"200": _json(QueueList, "the queues"), **_errors(*common)},
            },
        },
        "/v1/usage": {
            "get": {
                "operationId": "getUsage",
                "summary": "GPU-seconds, energy and tokens of the runs that ended in a period",
                "parameters": [
                    {**_query("from", _TIME, "start of the period (RFC 3339)"), "required": True},
                    _query("to", _TIME, "end of the period, exclusive (default now)"),
                    _query("by", {"enum": ["key", "model", "worker"]}, "sum per what"),
                ],
                "responses": {"200": _json(UsageList, "the usage"), **_errors(422, *common)},
            },
        },
        "/v1/stalls": {
            "get": {
                "operationId": "getStalls",
                "summary": "Recent stalls per worker",
                "parameters": [_query("since_s", {"type": "number"}, "how far back (s)")],
                "responses": {"200": _json(StallList, "the stalls"), **_errors(422, *common)},
            },
        },
    }


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in MODELS:
        schema = model.model_json_schema(ref_template=REF, mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["SubmitJob"] = SubmitJob.model_json_schema(ref_template=REF, mode="validation")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jetgrid",
            "version": "1",
            "description": "jetgrid's own job API. The Ollama (/api/...) and OpenAI "
            "(/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models, "
            "/v1/models/{id}, /v1/responses) compatible routes follow those projects' APIs.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
        "paths": paths(),
    }


_DOC: dict[str, Any] | None = None


async def openapi(request: Request) -> Response:
    global _DOC
    if _DOC is None:
        _DOC = document()
    return JSONResponse(_DOC)


routes = [Route("/openapi.json", openapi, methods=["GET"])]
