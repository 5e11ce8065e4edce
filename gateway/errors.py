"""HTTP errors: one JSON shape, a status, and a message that names the field at fault.

{"error": {"type": "invalid_request", "message": "field 'model': Field required",
           "field": "model", "code": "invalid_request"}}

The nested shape is also what the `openai` client reads (`error.message`, `type`, `code`); the
Ollama-compatible routes (/api/...) answer `{"error": "<message>"}`, the shape the `ollama`
client reads. `shaped(path, ...)` picks by path, so auth and limits answer in each client's shape.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from jetgrid.events import JetgridError


class HTTPError(JetgridError):
    """An error the API reports to its caller as-is."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        type: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.type = type or _TYPES.get(status, "error")
        self.code = code or self.type
        self.headers = headers or {}

    def body(self, path: str = "") -> dict[str, Any]:
        if is_ollama(path):
            return {"error": self.message}
        err: dict[str, Any] = {"type": self.type, "message": self.message, "code": self.code}
        if self.field:
            err["field"] = self.field
        return {"error": err}

    def response(self, path: str = "") -> JSONResponse:
        return JSONResponse(self.body(path), status_code=self.status, headers=self.headers)


def is_ollama(path: str) -> bool:
    """Routes of the Ollama-compatible API, whose clients read a flat error string."""
    return path.startswith("/api/")


_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}


def from_validation(exc: ValidationError, where: str = "") -> HTTPError:
    """422 naming every field at fault (the first one also as `field`)."""
    parts, first = [], None
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        if not loc and "'" in err["msg"]:  # model-level rule that quotes its fields
            loc = err["msg"].split("'")[1]
        loc = loc or "body"
        first = first or loc
        parts.append(f"field '{where}{loc}': {err['msg']}")
    return HTTPError(422, "; ".join(parts), field=first)
