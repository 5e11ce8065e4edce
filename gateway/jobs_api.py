"""jetgrid's own jobs API: submit, status."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coordinator.connect import denied_or
from coordinator.settings import Settings
from events import JobSubmitted, encode
from gateway.errors import HTTPError, from_validation
from gateway.schemas import JobOut, SubmitJob
from projections.jobs import JobView

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("jetgrid.gateway.jobs")

MAX_WAIT_S = 300.0


def job_out(view: JobView, settings: Settings) -> dict[str, Any]:
    out = JobOut(
        id=view.job_id,
        status=view.status if view.status != "unknown" else "queued",
        model=view.model,
        pool=view.pool,
        kind=view.kind,
        priority=view.priority,
        worker_id=view.worker_id,
        attempts=view.attempts,
        submitted_at=view.submitted_at,
        started_at=view.started_at,
        finished_at=view.finished_at,
        output=view.output,
        usage=view.usage,
        error=view.error,
        error_type=view.error_type,
        seq=view.jobs_seq,
        subject=(
            settings.subjects.submit(view.pool, view.model, view.priority or "normal")
            if view.pool and view.model
            else None
        ),
    )
    return out.model_dump(mode="json")


async def read_json(request: Request) -> Any:
    body = await request.body()
    if not body:
        raise HTTPError(400, "Request body is empty; send a JSON object.", field="body")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPError(400, f"Request body is not valid JSON: {exc}.", field="body") from exc


def wait_param(request: Request) -> float | None:
    raw = request.query_params.get("wait")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise HTTPError(
            422, f"Query parameter 'wait' must be seconds, got {raw!r}.", field="wait"
        ) from None
    if not 0 <= value <= MAX_WAIT_S:
        raise HTTPError(
            422,
            f"Query parameter 'wait' must be between 0 and {MAX_WAIT_S:g}, got {raw!r}.",
            field="wait",
        )
    return value


def idempotent_id(key: str) -> str:
    """The job id an Idempotency-Key maps to (stable, so a retried submit finds its job)."""
    if not 1 <= len(key) <= 256:
        raise HTTPError(
            422, "Header 'Idempotency-Key' must be 1-256 characters.", field="Idempotency-Key"
        )
    return "idem-" + hashlib.sha256(key.encode()).hexdigest()[:40]


async def submit_job(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    settings = gw.settings
    try:
        req = SubmitJob.model_validate(await read_json(request))
    except ValidationError as exc:
        raise from_validation(exc) from None
    wait = wait_param(request)
    pools = gw.pools
    pool = req.pool or pools.route(req.model)
    if pools.get(pool) is None:
        raise HTTPError(
            422,
            f"field 'pool': unknown pool {pool!r}; this deployment has {list(pools.names)}.",
            field="pool",
        )
    key = request.headers.get("idempotency-key")
    job_id = req.id or (idempotent_id(key) if key else uuid.uuid4().hex)
    assert gw.board is not None and gw.js is not None and gw.nc is not None
    existing = gw.board.get(job_id)
    if existing is not None and existing.jobs_seq is not None:
        return await _respond(gw, existing, wait, replayed=True)
    job = JobSubmitted(
        job_id=job_id,
        model=req.model,
        pool=pool,
        kind=req.kind,
        prompt=req.prompt,
        input=req.input,
        options=req.options,
        priority=req.priority,
        timeout_s=req.timeout_s,
        idempotency_key=key,
        submitter=request.headers.get("x-jetgrid-submitter"),
    )
    subject = settings.subjects.submit(pool, req.model, job.priority)
    waiter = gw.board.waiter(job_id) if wait else None
    try:
        ack = await gw.js.publish(
            subject, encode(job, source=gw.source, id=job_id), headers={"Nats-Msg-Id": job_id}
        )
    except Exception as exc:
        if waiter:
            gw.board.forget_waiter(job_id, waiter)
        err = denied_or(gw.nc, exc, f"publish to {subject}")
        log.error("submit of %s failed: %s", job_id, err)
        raise HTTPError(503, f"Could not store the job on NATS: {err}.") from exc
    body = {"id": job_id, "status": "queued", "seq": ack.seq, "subject": subject}
    if ack.duplicate:
        body["duplicate"] = True
    if waiter is None:
        return JSONResponse(body, status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})
    try:
        view = await asyncio.wait_for(asyncio.shield(waiter), timeout=wait)
    except TimeoutError:
        gw.board.forget_waiter(job_id, waiter)
        return JSONResponse(body, status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})
    return JSONResponse(job_out(view, settings), status_code=200)


async def _respond(gw: Gateway, view: JobView, wait: float | None, *, replayed: bool) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    assert gw.board is not None
    if wait and not view.terminal:
        fut = gw.board.waiter(view.job_id)
        with contextlib.suppress(TimeoutError):
            view = await asyncio.wait_for(asyncio.shield(fut), timeout=wait)
        gw.board.forget_waiter(view.job_id, fut)
    status = 200 if view.terminal else 202
    return JSONResponse(job_out(view, gw.settings), status_code=status, headers=headers)


async def get_job(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    job_id = request.path_params["job_id"]
    assert gw.board is not None
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(gw.board.caught_up.wait(), timeout=10)
    view = gw.board.get(job_id)
    if view is None:
        raise HTTPError(404, f"No job with id {job_id!r}.", field="job_id")
    return JSONResponse(job_out(view, gw.settings))


routes = [
    Route("/v1/jobs", submit_job, methods=["POST"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
]
