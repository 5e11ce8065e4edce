"""Workers and tiers views: GET /v1/workers, /v1/workers/{id}, /v1/tiers.

Backed by the projector's read models, read by URL (Settings.database_url) through
projections.store.Store.reader, because they carry what only the projector has: tiers (judged
at its log ticks and published to KV) and job counts per worker (its jobs table). Each document
is projections.views.worker_out (with ``share``: why the worker takes little or no work, its
tier and the uptime behind it, judged with this gateway's ``fallback_wait_s``), availability
by the one rule (projections.workers.availability)
at the wall clock. When the database cannot be read (no projector deployed, or none has written
yet) the store raises ReadModelUnavailable and these routes answer 503 naming the URL and the
fix; the dashboard then falls back to /dashboard/workers, the same WorkerOut from the gateway's
own fleet fold (gateway.fleet) without tiers, and /metrics counts workers from that fold. On
PostgreSQL any number of gateways share one database; on SQLite (the embedded default, one
machine) the projector writes in WAL mode, so readers never block it.
"""

from __future__ import annotations

from typing import Any, get_args

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.events import ConfigError
from jetgrid.gateway.errors import HTTPError
from jetgrid.projections.errors import ReadModelError
from jetgrid.projections.store import Store
from jetgrid.projections.views import tiers_view, workers_out
from jetgrid.projections.workers import Availability

_AVAILABILITY: tuple[str, ...] = get_args(Availability)


def _store(request: Request) -> Store:
    """One Store per app, opened on first use."""
    store = getattr(request.app.state, "read_models", None)
    if store is None:
        store = Store.reader(request.app.state.gateway.settings.database_url)
        request.app.state.read_models = store
    return store


async def _read(request: Request, fn: Any, *args: Any) -> Any:
    """`fn(store, *args)`; 503 naming the database and the fix when it cannot be read."""
    try:
        return await fn(_store(request), *args)
    except (ReadModelError, ConfigError) as exc:
        raise HTTPError(503, str(exc)) from None


def _fallback_wait(request: Request) -> float:
    """The fleet's fallback wait (coordinator.fallback), as this gateway is configured."""
    return float(request.app.state.gateway.settings.fallback_wait_s)


async def projected_workers(request: Request) -> list[dict[str, Any]] | None:
    """The projector's WorkerOut documents, or None when its database cannot be read."""
    try:
        return list(await _read(request, workers_out, None, _fallback_wait(request)))
    except HTTPError:
        return None


async def list_workers(request: Request) -> Response:
    q = request.query_params
    availability = q.get("availability")
    if availability is not None and availability not in _AVAILABILITY:
        raise HTTPError(
            400,
            f"Query parameter 'availability' has value {availability!r}; expected one of "
            f"{', '.join(_AVAILABILITY)}.",
            field="availability",
        )
    workers = await _read(request, workers_out, None, _fallback_wait(request))
    for key in ("pool", "model"):
        want = q.get(key)
        if want is not None:
            workers = [w for w in workers if want in w[f"{key}s"]]
    if availability is not None:
        workers = [w for w in workers if w["availability"] == availability]
    if q.get("tier") is not None:
        workers = [w for w in workers if w["tier"] == q["tier"]]
    return JSONResponse({"workers": workers})


async def get_worker(request: Request) -> Response:
    worker_id = request.path_params["worker_id"]
    found = await _read(request, workers_out, worker_id, _fallback_wait(request))
    if not found:
        raise HTTPError(404, f"No worker {worker_id!r} in the read models.", field="worker_id")
    return JSONResponse(found[0])


async def get_tiers(request: Request) -> Response:
    return JSONResponse(await _read(request, tiers_view))


routes = [
    Route("/v1/workers", list_workers, methods=["GET"]),
    Route("/v1/workers/{worker_id}", get_worker, methods=["GET"]),
    Route("/v1/tiers", get_tiers, methods=["GET"]),
]
