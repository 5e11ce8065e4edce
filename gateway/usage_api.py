"""GET /v1/usage: GPU-seconds, energy and tokens over a period, scoped to the caller's key.

Query: ``from`` (RFC 3339, required), ``to`` (default now; exclusive), ``by`` (``key``,
``model`` or ``worker``; default ``key``). The runs are read from the log as `jetgrid usage`
reads them (projections.usage_read), so the cost follows the period, which may span at most
``usage_max_period_s``. With API keys, a key sees only the runs of the jobs it submitted (their
`submitter` is its name); without keys, every run. ``cost`` is added when the gateway has a
``prices_file`` (projections.prices).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.events import format_time
from jetgrid.gateway import auth
from jetgrid.gateway.errors import HTTPError
from jetgrid.projections.prices import load_prices, report
from jetgrid.projections.usage import BY, totals
from jetgrid.projections.usage_read import read_usage

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway


def _time(request: Request, name: str, default: datetime | None = None) -> datetime:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise HTTPError(422, f"Query parameter '{name}' is required (an RFC 3339 time).",
                            field=name)  # fmt: skip
        return default
    try:
        t = datetime.fromisoformat(raw)
    except ValueError:
        t = None
    if t is None or t.tzinfo is None:
        raise HTTPError(
            422,
            f"Query parameter '{name}' has value {raw!r}; give an RFC 3339 time with a "
            "timezone, e.g. 2026-12-05T12:00:00Z.",
            field=name,
        )
    return t


async def get_usage(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    start = _time(request, "from")
    end = _time(request, "to", gw.clock())
    by = request.query_params.get("by", "key")
    if by not in BY:
        raise HTTPError(422, f"Query parameter 'by' has value {by!r}; use key, model or worker.",
                        field="by")  # fmt: skip
    span = (end - start).total_seconds()
    limit = gw.settings.usage_max_period_s
    if not 0 < span <= limit:
        raise HTTPError(
            422,
            f"The period from {format_time(start)} to {format_time(end)} must be positive and "
            f"at most {limit:g} s long; ask for a shorter one.",
            field="to",
        )
    runs = await read_usage(gw.bus, gw.settings, start, end)
    key: auth.ApiKey | None = request.scope.get(auth.SCOPE_KEY)
    if key is not None:
        runs = [r for r in runs if r.key == key.name]
    path = gw.settings.prices_file
    prices = load_prices(path) if path is not None else None
    return JSONResponse(
        {
            "from": format_time(start),
            "to": format_time(end),
            "by": by,
            "usage": report(totals(runs, by), by, prices),
        }
    )


routes = [Route("/v1/usage", get_usage, methods=["GET"])]
