"""OpenAI's Batch API: /v1/batches create, retrieve, cancel and list, over jetgrid jobs.

Create reads the input file (gateway.files), checks every line (gateway.batchlines), stores the
batch's record (gateway.batchstore), then submits each line as one low-priority job with the
id ``<batch_id>-<line>``, the batch id and the line's `custom_id`, then marks the record
submitted; a create that stopped half-way is finished by the next read (`resume`). There is
no validating phase to wait for: a bad line refuses the whole batch at create with 400 naming
the line.

A batch's state is derived from the log: its record, and each line's job as the job board reads
it (any gateway answers the same; a restart loses nothing). It is ``in_progress`` until every
line's job ended (``cancelling`` once a cancel was asked), then ``completed`` (or
``cancelled``); `request_counts` count completed and failed lines (cancelled lines count as
neither). The output file (completed lines, in input order) and the error file (failed and
cancelled lines) are written by the first request that sees the batch ended, under ids derived
from the batch's (``file-<hex>-output``, ``file-<hex>-errors``): they are built from the log,
so whichever gateway writes them writes the same bytes, and no service has to be running for
a batch to finish. Cancel asks every line's job that has not ended to cancel.

A batch may name a webhook in ``metadata["webhook_url"]``: the webhook service sends
``batch.completed`` or ``batch.cancelled`` when its last line ends (jetgrid.webhooks). A batch
belongs to the API key that created it; any other key is told 404.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.events import JetgridError, JobCancelRequested, JobSubmitted
from jetgrid.gateway import auth, hooks
from jetgrid.gateway.batchlines import ENDPOINTS, Line, Tally, parse_lines, result_line, tally
from jetgrid.gateway.batchstore import BatchRecord, BatchStore, FileInfo, FileStore
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.files import owner_of, stored_file, unavailable
from jetgrid.gateway.jobs_api import read_json
from jetgrid.gateway.llm import pick_pool, resolve_model
from jetgrid.gateway.openai_api import bad_request, job_options
from jetgrid.projections.jobs import JobView

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway

__all__ = ["routes"]

CHUNK = 128  # jobs submitted, or looked up, at a time
# A record this old and not yet marked submitted belongs to a create that stopped half-way.
RESUME_AFTER_S = 60
WINDOW_S = 24 * 3600
_NOT_OPTIONS = frozenset(
    {"model", "messages", "prompt", "input", "stream", "stream_options", "tools", "user"}
)


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="allow")
    input_file_id: str = Field(min_length=1, max_length=128)
    endpoint: Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
    completion_window: Literal["24h"] = "24h"
    metadata: dict[str, str] | None = None


def _gw(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def line_job(
    gw: Gateway, request: Request | None, record: BatchRecord, n: int, line: Line
) -> JobSubmitted:
    """The low-priority job that runs line `n` of the batch (checked against the scope of the
    caller's key when there is a `request`; a resumed create was checked when it began)."""
    body = line.body
    name = str(body["model"])
    live = gw.fleet.live_models()
    model = resolve_model(name, live) or name
    pool = pick_pool(gw, model, live.get(model, set()))
    if request is not None:
        auth.check_scope(request, pool=pool, model=model)
    kind = ENDPOINTS[record.endpoint]
    prompt: str | None = None
    inp: dict[str, Any] | None = None
    if kind == "chat":
        inp = {"messages": body["messages"]}
        if body.get("tools"):
            inp["tools"] = body["tools"]
    elif kind == "generate":
        prompt = str(body["prompt"])
    else:
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if not texts or not all(isinstance(t, str) and t for t in texts):
            raise HTTPError(
                400,
                f"Line {n + 1} of the input file has an 'input' that is not non-empty text.",
                field="input_file_id",
                type="invalid_request_error",
            )
        inp = {"input": texts}
    return JobSubmitted(
        job_id=record.job_id(n),
        model=model,
        pool=pool,
        kind=kind,  # type: ignore[arg-type]
        prompt=prompt,
        input=inp,
        options=job_options(body, _NOT_OPTIONS),
        priority="low",
        submitter=record.key_name,
        batch_id=record.id,
        custom_id=line.custom_id,
    )


async def create_batch(request: Request) -> Response:
    gw = _gw(request)
    try:
        req = CreateBatch.model_validate(await read_json(request))
    except ValidationError as exc:
        raise bad_request(exc) from None
    info = await stored_file(request, req.input_file_id)
    if info.purpose != "batch":
        raise HTTPError(
            400,
            f"File {info.id!r} has purpose {info.purpose!r}; upload the input with purpose batch.",
            field="input_file_id",
            type="invalid_request_error",
        )
    lines = parse_lines(await _content(gw, info), req.endpoint, gw.settings.batch_max_lines)
    webhook = (req.metadata or {}).get("webhook_url")
    if webhook is not None:
        hooks.check_webhook(gw.settings, request, webhook, field="metadata.webhook_url")
    record = BatchRecord(
        id=f"batch_{secrets.token_hex(16)}",
        owner=owner_of(request),
        key_name=auth.submitter(request),
        endpoint=req.endpoint,
        input_file_id=info.id,
        completion_window=req.completion_window,
        total=len(lines),
        created_at=int(datetime.now(UTC).timestamp()),
        webhook=webhook,
        metadata=req.metadata,
    )
    jobs = [line_job(gw, request, record, n, line) for n, line in enumerate(lines)]
    try:
        await submit_lines(gw, record, jobs)
    except JetgridError as exc:
        raise unavailable(f"store batch {record.id}", exc) from exc
    return JSONResponse(shown(record, tally([None] * record.total, cancel_asked=False)))


async def submit_lines(gw: Gateway, record: BatchRecord, jobs: list[JobSubmitted]) -> BatchRecord:
    """Store the record, then every line's job (each under its id as ``Nats-Msg-Id``, so a
    repeat within the duplicate window stores nothing twice), then mark the record submitted."""
    store = BatchStore(gw.bus, gw.settings)
    await store.put(record)
    for i in range(0, len(jobs), CHUNK):
        await asyncio.gather(*(gw.bus.store(j, gw.speaker) for j in jobs[i : i + CHUNK]))
    done = record.model_copy(update={"submitted": True})
    await store.put(done)
    return done


async def resume(gw: Gateway, record: BatchRecord) -> BatchRecord:
    """Finish a create that stopped before every line's job was stored (its gateway died):
    once the record is RESUME_AFTER_S old, submit every line again; the duplicate window
    drops the ones already stored."""
    age = datetime.now(UTC).timestamp() - record.created_at
    if record.submitted or age < RESUME_AFTER_S:
        return record
    lines = parse_lines(await _content(gw, await _input(gw, record)), record.endpoint,
                        max(record.total, 1))  # fmt: skip
    jobs = [line_job(gw, None, record, n, line) for n, line in enumerate(lines)]
    return await submit_lines(gw, record, jobs)


async def _input(gw: Gateway, record: BatchRecord) -> FileInfo:
    info = await FileStore(gw.bus, gw.settings).info(record.input_file_id)
    if info is None:
        raise HTTPError(
            409,
            f"Batch {record.id}'s input file {record.input_file_id!r} is gone, so its unsent "
            "lines cannot be sent; create the batch again.",
            field="batch_id",
        )
    return info


async def _content(gw: Gateway, info: FileInfo) -> bytes:
    try:
        data = await FileStore(gw.bus, gw.settings).content(info.id)
    except JetgridError as exc:
        raise unavailable(f"read file {info.id!r}", exc) from exc
    return data or b""


def shown(
    record: BatchRecord,
    t: Tally,
    *,
    finished_at: int | None = None,
    output_file_id: str | None = None,
    error_file_id: str | None = None,
) -> dict[str, Any]:
    """The batch as OpenAI's API shows it."""
    done_at = finished_at if t.ended else None
    return {
        "id": record.id,
        "object": "batch",
        "endpoint": record.endpoint,
        "errors": None,
        "input_file_id": record.input_file_id,
        "completion_window": record.completion_window,
        "status": t.status,
        "output_file_id": output_file_id,
        "error_file_id": error_file_id,
        "created_at": record.created_at,
        "in_progress_at": record.created_at,
        "expires_at": record.created_at + WINDOW_S,
        "finalizing_at": done_at,
        "completed_at": done_at if t.status == "completed" else None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": record.cancelled_at,
        "cancelled_at": done_at if t.status == "cancelled" else None,
        "request_counts": t.counts(),
        "metadata": record.metadata,
    }


async def views_of(gw: Gateway, record: BatchRecord) -> list[JobView | None]:
    """Each line's job as the board reads it (cached, or read back from the log)."""
    out: list[JobView | None] = []
    for i in range(0, record.total, CHUNK):
        ids = [record.job_id(n) for n in range(i, min(record.total, i + CHUNK))]
        out += await asyncio.gather(*(gw.board.find(j) for j in ids))
    return out


async def state(gw: Gateway, record: BatchRecord) -> dict[str, Any]:
    """The batch's state from its jobs; once it ended, its output and error files exist."""
    try:
        record = await resume(gw, record)
        views = await views_of(gw, record)
    except HTTPError:
        raise
    except JetgridError as exc:
        raise unavailable(f"read batch {record.id}'s jobs", exc) from exc
    t = tally(
        [v.status if v else None for v in views], cancel_asked=record.cancelled_at is not None
    )
    if not t.ended:
        return shown(record, t)
    ended = [v for v in views if v is not None]
    finished = max((int(v.finished_at.timestamp()) for v in ended if v.finished_at), default=None)
    hexid = record.id.removeprefix("batch_")
    out_id = f"file-{hexid}-output" if t.completed else None
    err_id = f"file-{hexid}-errors" if t.failed + t.cancelled else None
    try:
        files = FileStore(gw.bus, gw.settings)
        # A result file deleted by its owner stays deleted: it is not written again.
        if (out_id and await files.info(out_id, deleted=True) is None) or (
            err_id and await files.info(err_id, deleted=True) is None
        ):
            await _write_results(gw, record, ended, out_id, err_id, finished or 0)
    except HTTPError:
        raise
    except JetgridError as exc:
        raise unavailable(f"write batch {record.id}'s results", exc) from exc
    return shown(record, t, finished_at=finished, output_file_id=out_id, error_file_id=err_id)


async def _write_results(
    gw: Gateway,
    record: BatchRecord,
    views: list[JobView],
    out_id: str | None,
    err_id: str | None,
    when: int,
) -> None:
    """Build and store the output and error files (the same bytes whoever builds them)."""
    info = await FileStore(gw.bus, gw.settings).info(record.input_file_id)
    data = await _content(gw, info) if info is not None else b""
    lines = parse_lines(data, record.endpoint, max(record.total, 1)) if data else []
    outputs: list[bytes] = []
    errors: list[bytes] = []
    for n, view in enumerate(views):
        line = lines[n] if n < len(lines) else Line(str(n), {})
        is_error, text = result_line(record.endpoint, line, view)
        (errors if is_error else outputs).append(text)
    files = FileStore(gw.bus, gw.settings)
    for fid, rows, kind in ((out_id, outputs, "output"), (err_id, errors, "errors")):
        if fid is None:
            continue
        body = b"".join(r + b"\n" for r in rows)
        name = f"{record.id}_{kind}.jsonl"
        meta = FileInfo(
            id=fid,
            owner=record.owner,
            purpose="batch_output",
            filename=name,
            bytes=len(body),
            created_at=when,
        )
        await files.put(meta, body)


async def find_batch(request: Request) -> BatchRecord:
    """The caller's batch named in the path, or 404."""
    gw = _gw(request)
    batch_id: str = request.path_params["batch_id"]
    try:
        record = await BatchStore(gw.bus, gw.settings).get(batch_id)
    except JetgridError as exc:
        raise unavailable(f"read batch {batch_id!r}", exc) from exc
    if record is None or record.owner != owner_of(request):
        raise HTTPError(
            404, f"No batch with id {batch_id!r}.", field="batch_id", type="invalid_request_error"
        )
    return record


async def retrieve_batch(request: Request) -> Response:
    record = await find_batch(request)
    return JSONResponse(await state(_gw(request), record))


async def cancel_batch(request: Request) -> Response:
    gw = _gw(request)
    record = await find_batch(request)
    try:
        views = await views_of(gw, record)
    except JetgridError as exc:
        raise unavailable(f"read batch {record.id}'s jobs", exc) from exc
    statuses: list[str | None] = [v.status if v else None for v in views]
    if record.cancelled_at is None and tally(statuses, cancel_asked=False).ended:
        raise HTTPError(
            409,
            f"Batch {record.id} already completed; there is nothing to cancel.",
            field="batch_id",
            type="invalid_request_error",
        )
    try:
        record = await BatchStore(gw.bus, gw.settings).cancel(record)
        asks = [
            JobCancelRequested(
                job_id=record.job_id(n),
                reason=f"batch {record.id} cancelled",
                requested_by=auth.submitter(request),
            )
            for n, v in enumerate(views)
            if v is None or not v.terminal
        ]
        for i in range(0, len(asks), CHUNK):
            await asyncio.gather(*(gw.bus.store(a, gw.speaker) for a in asks[i : i + CHUNK]))
    except JetgridError as exc:
        raise unavailable(f"cancel batch {record.id}", exc) from exc
    return JSONResponse(await state(gw, record))


async def list_batches(request: Request) -> Response:
    """The caller's batches, newest first; ``after`` (a batch id) and ``limit`` (1-100) page."""
    gw = _gw(request)
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise HTTPError(
            400,
            f"Query parameter 'limit' must be 1-100, got {raw!r}.",
            field="limit",
            type="invalid_request_error",
        )
    store = BatchStore(gw.bus, gw.settings)
    try:
        ids = await store.owned(owner_of(request))
        found = await asyncio.gather(*(store.get(i) for i in ids))
    except JetgridError as exc:
        raise unavailable("list batches", exc) from exc
    records = sorted((r for r in found if r), key=lambda r: (-r.created_at, r.id))
    after = request.query_params.get("after")
    if after:
        at = next((i for i, r in enumerate(records) if r.id == after), None)
        records = records[at + 1 :] if at is not None else []
    page = records[: int(raw)]
    data = [await state(gw, r) for r in page]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(records) > len(page),
        }
    )


routes = [
    Route("/v1/batches", create_batch, methods=["POST"]),
    Route("/v1/batches", list_batches, methods=["GET"]),
    Route("/v1/batches/{batch_id}", retrieve_batch, methods=["GET"]),
    Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
]
