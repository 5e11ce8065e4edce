"""GET /: the live dashboard, plain HTML and JavaScript from gateway/static (no build step).

The page itself holds no data and needs no key; it polls /v1/workers (or, where the
projector's views are not readable, /dashboard/workers: the same WorkerOut from this gateway's
live fleet, gateway.fleet, without tiers), /v1/pools, /v1/queue (the queue per pool, model and
tenant, with each tenant's share of the running jobs), /v1/stalls (recent stalls per worker) and
/v1/jobs every second, sending the API key given as ``/#key=<key>`` (kept in localStorage).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway

STATIC = Path(__file__).parent / "static"


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def fleet_workers(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    return JSONResponse({"workers": gw.fleet.workers()})


routes = [
    Route("/", index, methods=["GET"]),
    Route("/dashboard/workers", fleet_workers, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
]
