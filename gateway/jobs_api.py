"""jetgrid's own jobs API: submit, status, result, cancel, list.

POST /v1/jobs answers 422 for a `start_by` already past (coordinator.deadlines), 429 when the
job's pool and model is over the pool's max_backlog or max_wait_s (gateway.queue_api.check_load),
and 422 for a model no worker has served in the job's pool within the
`unserved_model_window_s` setting (live workers always count; gateway.fleet.Fleet.served), as
such a job would wait with nothing to run it, unless the caller asks ``?queue_unserved=true``;
queued unserved jobs show in /v1/pools, `jetgrid pools` and /metrics (projections.pools).

GET /v1/jobs/{id}/result answers 200 with the output once the job completed, 202 (with the job
and Retry-After) while it is queued or running, and 409 naming the outcome when it failed, was
cancelled, is dead, was rejected or expired: a result that will never come is a conflict, not a
wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.coordinator import tracecontext
from jetgrid.coordinator.deadlines import deadline_of, late_start
from jetgrid.coordinator.routing import RouteError, route_job
from jetgrid.coordinator.share import queue_lane, queue_tenant
from jetgrid.events import (
    InvalidEvent,
    JetgridError,
    JobCancelRequested,
    JobSubmitted,
    check_chosen_id,
    load_json,
)
from jetgrid.gateway import auth, hooks
from jetgrid.gateway.errors import HTTPError, from_validation
from jetgrid.gateway.jobout import job_out, job_response
from jetgrid.gateway.limits import holds_wait
from jetgrid.gateway.queue_api import check_load
from jetgrid.gateway.schemas import JobResult, SubmitJob
from jetgrid.projections.jobs import JobView

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway

log = logging.getLogger("jetgrid.gateway.jobs")

MAX_WAIT_S = 300.0


async def read_json(request: Request) -> Any:
    body = await request.body()
    if not body:
        raise HTTPError(400, "Request body is empty; send a JSON object.", field="body")
    try:
        return load_json(body)
    except InvalidEvent as exc:  # not JSON, or outside the codec's bounds (depth, numbers, text)
        reason = exc.reason.removeprefix("Body ").replace("is not JSON", "is not valid JSON", 1)
        raise HTTPError(400, f"Request body {reason}", field="body") from None


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


def flag_param(request: Request, name: str) -> bool:
    """A true/false query parameter (absent: false)."""
    raw = request.query_params.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise HTTPError(
        422, f"Query parameter {name!r} must be true or false, got {raw!r}.", field=name
    )


async def check_served(gw: Gateway, pool: str, model: str) -> None:
    """422 when no worker has served `model` in `pool` within the configured window."""
    window = gw.settings.unserved_model_window_s
    if gw.fleet.served(pool, model, window):
        return
    with contextlib.suppress(Exception):  # a worker registered a moment ago: fold up to it
        await gw.fleet.sync()
    if gw.fleet.served(pool, model, window):
        return
    raise HTTPError(
        422,
        f"No worker has served model {model!r} in pool {pool!r} in the last {window:g} s, so "
        "the job would wait with nothing to run it; start a worker that serves it, or submit "
        "with ?queue_unserved=true to queue it anyway.",
        field="model",
    )


def check_deadline(job: JobSubmitted, now: datetime) -> None:
    """422 for a job whose deadline has already passed: it could only expire."""
    deadline = deadline_of(job, now)
    if late_start(deadline, now):
        raise HTTPError(
            422,
            f"field 'start_by': {job.start_by.isoformat() if job.start_by else None!r} has "
            f"already passed (now {now.isoformat()}); give a later time, or none.",
            field="start_by",
        )


def _principal(request: Request) -> str:
    """What scopes the caller's ids: its API key's stored hash (a secret of the gateway's, so no
    one else can compute its ids), or "" on a gateway without keys (one principal)."""
    key: auth.ApiKey | None = request.scope.get(auth.SCOPE_KEY)
    return key.hash if key is not None else ""


def idempotent_id(key: str, principal: str = "") -> str:
    """The job id an Idempotency-Key maps to for `principal` (stable, so a retried submit finds
    its job; another principal's same key maps elsewhere)."""
    if not 1 <= len(key) <= 256:
        raise HTTPError(
            422, "Header 'Idempotency-Key' must be 1-256 characters.", field="Idempotency-Key"
        )
    material = f"{principal}\0{key}" if principal else key
    return "idem-" + hashlib.sha256(material.encode()).hexdigest()[:40]


def scoped_id(chosen: str, principal: str) -> str:
    """The stored id of a client-chosen id: itself on a gateway without keys, else one derived
    from the key and the id (``key-<40 hex>``), so no other key or NATS user can take it."""
    if not principal:
        return chosen
    return "key-" + hashlib.sha256(f"{principal}\0id\0{chosen}".encode()).hexdigest()[:40]


def chosen_id(chosen: str) -> str:
    """422 for an id no submitter may choose (events.check_chosen_id: ``seq-<N>`` ids)."""
    try:
        check_chosen_id(chosen)
    except InvalidEvent as exc:
        raise HTTPError(422, exc.reason, field="id") from None
    return chosen


async def submit_job(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    settings = gw.settings
    try:
        req = SubmitJob.model_validate(await read_json(request))
    except ValidationError as exc:
        raise from_validation(exc) from None
    wait = wait_param(request)
    queue_unserved = flag_param(request, "queue_unserved")
    if req.kind == "python" and not settings.gateway_allow_python:
        raise HTTPError(
            403,
            "field 'kind': this gateway does not accept remote Python functions (kind "
            "'python'); submit them over NATS with jetgrid.remote, or enable them with "
            "JETGRID_GATEWAY_ALLOW_PYTHON=1.",
            field="kind",
        )
    auth.check_scope(request, pool=req.pool, model=req.model)  # 403 before routing's 422
    try:
        pool = route_job(gw.pools, model=req.model, kind=req.kind, pool=req.pool)
    except RouteError as exc:
        raise HTTPError(422, str(exc), field=exc.field) from None
    auth.check_scope(request, pool=pool, model=None)
    if req.webhook is not None:
        hooks.check_webhook(settings, request, req.webhook)
    key = request.headers.get("idempotency-key")
    principal = _principal(request)
    if req.id:
        job_id = scoped_id(chosen_id(req.id), principal)
    else:
        job_id = idempotent_id(key, principal) if key else uuid.uuid4().hex
    existing = await _existing(gw, job_id) if (req.id or key) else None
    if existing is not None and existing.jobs_seq is not None:
        return await _respond(gw, existing, wait, replayed=True)
    if not queue_unserved:
        await check_served(gw, pool, req.model)
    check_load(gw, pool, req.model)
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
        submitter=(submitter := auth.submitter(request)),
        tenant=(tenant := queue_tenant(gw.pools[pool], submitter)),
        session=req.session,
        lane=queue_lane(
            gw.pools[pool], tenant, session=req.session, kind=req.kind, input=req.input
        ),
        start_by=req.start_by,
        ttl_s=req.ttl_s,
        webhook=req.webhook,
        trace_id=(trace := tracecontext.parse(request.headers.get("traceparent")) or
                  tracecontext.new_trace()).trace_id,
    )  # fmt: skip
    check_deadline(job, gw.clock())
    job = hooks.prove(request, job)
    waiter = gw.board.waiter(job_id) if wait else None
    try:
        stored = await gw.bus.store(job, gw.speaker, traceparent=trace.header())
    except JetgridError as exc:
        gw.board.own.forget(job_id)
        if waiter:
            gw.board.forget_waiter(job_id, waiter)
        log.error("submit of %s failed: %s", job_id, exc)
        raise HTTPError(503, f"Could not store the job on NATS: {exc}") from exc
    view = await gw.board.outcome(job_id, waiter, wait) if waiter and wait else None
    if view is not None:
        return job_response(view, settings)
    subject = settings.subjects.submit(pool, req.model, job.priority)
    body = {"id": job_id, "status": "queued", "seq": stored.seq, "subject": subject,
            "trace_id": trace.trace_id}  # fmt: skip
    if stored.duplicate:
        body["duplicate"] = True
    return JSONResponse(body, status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})


async def _existing(gw: Gateway, job_id: str) -> JobView | None:
    """The job already stored under a chosen or idempotent id, read back from the log."""
    try:
        return await gw.board.find(job_id)
    except JetgridError as exc:
        raise HTTPError(503, f"Could not read job {job_id!r} from NATS: {exc}") from exc


async def _respond(gw: Gateway, view: JobView, wait: float | None, *, replayed: bool) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    if wait and not view.terminal:
        fut = gw.board.waiter(view.job_id)
        view = await gw.board.outcome(view.job_id, fut, wait) or view
    status = 200 if view.terminal else 202
    return job_response(view, gw.settings, status_code=status, headers=headers)


async def find_job(request: Request) -> JobView:
    """The job named in the path (from the board's cache, or read back from the log: any
    retained job is found); 404 if unknown.

    The path may name the job's id, or the id the caller chose for it (scoped_id)."""
    gw: Gateway = request.app.state.gateway
    job_id = request.path_params["job_id"]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(gw.board.caught_up.wait(), timeout=10)
    principal = _principal(request)

    async def look() -> JobView | None:
        try:
            mine = await gw.board.find(scoped_id(job_id, principal)) if principal else None
            return mine or await gw.board.find(job_id)
        except JetgridError as exc:
            raise HTTPError(503, f"Could not read job {job_id!r} from NATS: {exc}") from exc

    view = await look()
    if view is None:  # perhaps submitted a moment ago: fold up to the log's end, then look
        with contextlib.suppress(Exception):
            await gw.board.sync()
        view = await look()
    # A key scoped to other pools or models is told no more than about a job that never was.
    if view is None or not auth.may_see(request, pool=view.pool, model=view.model):
        raise HTTPError(404, f"No job with id {job_id!r}.", field="job_id")
    return view


async def get_job(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    view = await find_job(request)
    return job_response(view, gw.settings, gw.queue.place(view, gw.clock()))


async def get_result(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    view = await find_job(request)
    wait = wait_param(request)
    if wait and not view.terminal:
        fut = gw.board.waiter(view.job_id)
        view = await gw.board.outcome(view.job_id, fut, wait) or view
    if view.status == "completed":
        out = JobResult(id=view.job_id, status="completed", output=view.output, usage=view.usage)
        return JSONResponse(out.model_dump(mode="json"))
    if view.terminal:
        raise HTTPError(
            409,
            f"Job {view.job_id!r} has no result: it is {view.status} "
            f"({view.error or 'no reason given'}).",
            field="job_id",
        )
    return job_response(
        view,
        gw.settings,
        status_code=202,
        headers={"Retry-After": "1", "Location": f"/v1/jobs/{view.job_id}/result"},
    )


async def cancel_job(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    view = await find_job(request)  # in the caller's scope, or 404
    if view.terminal:
        raise HTTPError(
            409, f"Job {view.job_id!r} is already {view.status}; nothing to cancel.", field="job_id"
        )
    event = JobCancelRequested(
        job_id=view.job_id,
        reason=request.query_params.get("reason"),
        requested_by=auth.submitter(request),
    )
    try:
        await gw.bus.store(event, gw.speaker)
    except JetgridError as exc:
        raise HTTPError(503, f"Could not store the cancel request on NATS: {exc}") from exc
    body = job_out(view, gw.settings)
    body["cancel_requested"] = True
    return JSONResponse(body, status_code=202)


MAX_LIMIT = 500
LIST_FILTERS = ("status", "model", "pool", "worker")


def list_params(request: Request) -> tuple[dict[str, str], int, int | None]:
    q = request.query_params
    filters = {k: q[k] for k in LIST_FILTERS if q.get(k)}
    raw_limit = q.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise HTTPError(
            422, f"Query parameter 'limit' must be 1-{MAX_LIMIT}, got {raw_limit!r}.", field="limit"
        )
    raw_cursor = q.get("cursor")
    if raw_cursor is not None and not raw_cursor.isdigit():
        raise HTTPError(
            422,
            f"Query parameter 'cursor' must be a next_cursor from a previous page, "
            f"got {raw_cursor!r}.",
            field="cursor",
        )
    return filters, int(raw_limit), int(raw_cursor) if raw_cursor is not None else None


def matches(view: JobView, filters: dict[str, str]) -> bool:
    attr = {"worker": "worker_id"}
    return all(
        (view.status if k == "status" else getattr(view, attr.get(k, k))) == want
        for k, want in filters.items()
    )


LIST_SCAN = 2048  # JOBS messages one page reads at most
LIST_CHUNK = 256  # JOBS messages read (and jobs looked up together) at a time


async def list_jobs(request: Request) -> Response:
    """Newest first by JOBS sequence, read from the stream (batched direct gets backwards from
    `cursor`), each job's state from the board. A page holds up to `limit` jobs; one that
    filters out most jobs may stop short after LIST_SCAN submissions, with a next_cursor."""
    gw: Gateway = request.app.state.gateway
    filters, limit, cursor = list_params(request)
    stream = gw.settings.streams.jobs
    try:
        info = await gw.bus.call(gw.bus.js.stream_info(stream), f"read stream {stream}")
        first = max(1, int(info.state.first_seq or 1))
        hi = int(info.state.last_seq) if cursor is None else min(cursor - 1, info.state.last_seq)
        page: list[JobView] = []
        more, scanned, resume = False, 0, None
        while hi >= first and not more:
            if scanned >= LIST_SCAN:
                more, resume = True, hi + 1
                break
            lo = max(first, hi - LIST_CHUNK + 1)
            msgs = await gw.bus.messages(stream, seq=lo, up_to_seq=hi, limit=hi - lo + 1)
            scanned += hi - lo + 1
            subs = [env for m in reversed(msgs) if (env := gw.board.submission(m)) is not None]
            subs = [
                e for e in subs if auth.may_see(request, pool=e.event.pool, model=e.event.model)
            ]
            views = await asyncio.gather(
                *(gw.board.find(e.event.job_id, jobs_seq=e.seq) for e in subs)
            )
            for env, view in zip(subs, views, strict=True):
                if view is None or view.jobs_seq != env.seq or not matches(view, filters):
                    continue  # a later submission under a taken id is not a job of its own
                if len(page) == limit:
                    more = True
                    break
                page.append(view)
            hi = lo - 1
    except JetgridError as exc:
        raise HTTPError(503, f"Could not read the jobs from NATS: {exc}") from exc
    nxt = (resume or page[-1].jobs_seq) if more else None
    return JSONResponse(
        {
            "jobs": [job_out(v, gw.settings) for v in page],
            "next_cursor": str(nxt) if nxt is not None else None,
        }
    )


routes = [
    Route("/v1/jobs", holds_wait(submit_job), methods=["POST"]),
    Route("/v1/jobs", list_jobs, methods=["GET"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}", cancel_job, methods=["DELETE"]),
    Route("/v1/jobs/{job_id}/result", holds_wait(get_result), methods=["GET"]),
]
