"""OpenAI's Files API, for batches: upload (``purpose=batch``), retrieve, content, list, delete.

``POST /v1/files`` takes multipart/form-data with `purpose` and `file` (what the `openai`
client's ``files.create`` sends), at most `files_max_bytes` (the gateway lets this one path
take bodies that large); ``GET /v1/files/{id}`` and ``GET /v1/files/{id}/content`` give the
file back. ``GET /v1/files`` lists the caller's files (`purpose` filters; `order` by creation
time, ``desc`` by default; `limit`, 1-10000; `after`, a file id, pages), read from every file's
metadata (FileStore.listed). ``DELETE /v1/files/{id}`` deletes one of the caller's files; a
batch's deleted result file is not written again.

Files live in the files object store (gateway.batchstore.FileStore), so every gateway serves
them and a restart loses none, for `retention_files` (30 days by default). A file belongs to
the API key that uploaded it (on a gateway without keys, to everyone): any other key is told
404, as if it did not exist. Errors are in OpenAI's shape.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.events import JetgridError
from jetgrid.gateway import auth
from jetgrid.gateway.batchstore import FileInfo, FileStore, owner_token
from jetgrid.gateway.errors import HTTPError

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway

__all__ = ["MULTIPART_SLACK", "owner_of", "routes", "stored_file"]

MULTIPART_SLACK = 64 * 1024  # form fields and boundaries around the file itself
PURPOSES = ("batch",)
LIST_MAX = 10_000  # files one listing answers at most (OpenAI's limit)


def invalid(message: str, field: str) -> HTTPError:
    """400 in OpenAI's shape (the client raises BadRequestError)."""
    return HTTPError(400, message, field=field, type="invalid_request_error", code=None)


def owner_of(request: Request) -> str:
    """The owner token of the caller: its API key's, or "open" on a gateway without keys."""
    key: auth.ApiKey | None = request.scope.get(auth.SCOPE_KEY)
    return owner_token(key.hash if key is not None else "")


def parse_form(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (file name, bytes)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise invalid(
            f"POST /v1/files takes multipart/form-data with 'purpose' and 'file', got "
            f"{content_type or 'no content type'!r}.",
            "body",
        )
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    msg = BytesParser(policy=HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise invalid("The multipart body has no parts; send 'purpose' and 'file'.", "body")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


def _files(request: Request) -> FileStore:
    gw: Gateway = request.app.state.gateway
    return FileStore(gw.bus, gw.settings)


def unavailable(what: str, exc: JetgridError) -> HTTPError:
    return HTTPError(
        503,
        f"Could not {what} on NATS: {exc} (are the Batch API's buckets provisioned? run "
        "`jetgrid provision`).",
        type="server_error",
    )


async def create_file(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    fields = parse_form(request.headers.get("content-type", ""), await request.body())
    purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace").strip()
    if purpose not in PURPOSES:
        raise invalid(
            f"field 'purpose' must be one of {', '.join(PURPOSES)}, got {purpose!r}.", "purpose"
        )
    if "file" not in fields:
        raise invalid("field 'file' is missing; send the file as a multipart part.", "file")
    filename, data = fields["file"]
    limit = gw.settings.files_max_bytes
    if len(data) > limit:
        raise HTTPError(
            413,
            f"File is {len(data)} bytes; this gateway takes at most {limit} "
            "(setting files_max_bytes).",
            field="file",
        )
    if not data:
        raise invalid("field 'file' is empty; upload a JSONL file with one request a line.", "file")
    info = FileInfo(
        id=f"file-{secrets.token_hex(16)}",
        owner=owner_of(request),
        purpose=purpose,
        filename=(filename or "upload.jsonl")[:256],
        bytes=len(data),
        created_at=int(datetime.now(UTC).timestamp()),
    )
    try:
        await _files(request).put(info, data)
    except JetgridError as exc:
        raise unavailable("store the file", exc) from exc
    return JSONResponse(info.public())


async def stored_file(request: Request, file_id: str) -> FileInfo:
    """The caller's file `file_id`, or 404 (another key's file is not found either)."""
    try:
        info = await _files(request).info(file_id)
    except JetgridError as exc:
        raise unavailable(f"read file {file_id!r}", exc) from exc
    if info is None or info.owner != owner_of(request):
        raise HTTPError(
            404, f"No file with id {file_id!r}.", field="file_id", type="invalid_request_error"
        )
    return info


async def retrieve_file(request: Request) -> Response:
    info = await stored_file(request, request.path_params["file_id"])
    return JSONResponse(info.public())


async def file_content(request: Request) -> Response:
    info = await stored_file(request, request.path_params["file_id"])
    try:
        data = await _files(request).content(info.id)
    except JetgridError as exc:
        raise unavailable(f"read file {info.id!r}", exc) from exc
    if data is None:
        raise HTTPError(404, f"No file with id {info.id!r}.", field="file_id")
    return Response(data, media_type="application/octet-stream")


def _query_int(request: Request, name: str, default: int, top: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= top:
        raise invalid(f"Query parameter {name!r} must be 1-{top}, got {raw!r}.", name)
    return int(raw)


async def list_files(request: Request) -> Response:
    """The caller's files, newest first unless ``order=asc``; `purpose` filters, `after` pages."""
    limit = _query_int(request, "limit", LIST_MAX, LIST_MAX)
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid(f"Query parameter 'order' must be asc or desc, got {order!r}.", "order")
    purpose, after = request.query_params.get("purpose"), request.query_params.get("after")
    try:
        every = await _files(request).listed()
    except JetgridError as exc:
        raise unavailable("list the files", exc) from exc
    owner = owner_of(request)
    mine = [f for f in every if f.owner == owner and purpose in (None, f.purpose)]
    mine.sort(key=lambda f: (f.created_at, f.id), reverse=order == "desc")
    if after is not None:
        at = next((i for i, f in enumerate(mine) if f.id == after), None)
        if at is None:
            raise invalid(f"Query parameter 'after' names no file of yours: {after!r}.", "after")
        mine = mine[at + 1 :]
    page = mine[:limit]
    return JSONResponse(
        {
            "object": "list",
            "data": [f.public() for f in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(mine) > limit,
        }
    )


async def delete_file(request: Request) -> Response:
    info = await stored_file(request, request.path_params["file_id"])
    try:
        await _files(request).delete(info.id)
    except JetgridError as exc:
        raise unavailable(f"delete file {info.id!r}", exc) from exc
    return JSONResponse({"id": info.id, "object": "file", "deleted": True})


routes = [
    Route("/v1/files", create_file, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
    Route("/v1/files/{file_id}", retrieve_file, methods=["GET"]),
    Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
]
