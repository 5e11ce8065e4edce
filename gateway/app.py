"""The gateway: jetgrid's HTTP API, as a Starlette app factory.

`create_app(settings)` opens its NATS connection and starts following the log in its lifespan;
`gateway.server.serve` runs it under uvicorn. Tests drive it in-process or under uvicorn.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coordinator.connect import connect
from coordinator.settings import Settings
from gateway import jobs_api, workers_api
from gateway.board import JobBoard
from gateway.errors import HTTPError

log = logging.getLogger("jetgrid.gateway")


class Gateway:
    """Lifespan state: the NATS connection, JetStream context and the job board."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.board: JobBoard | None = None
        self.pools = settings.pool_configs()
        self.source = "jetgrid/gateway"

    async def start(self) -> None:
        self.nc = await connect(self.settings, name="jetgrid-gateway")
        self.js = self.nc.jetstream()
        self.board = JobBoard(self.js, self.settings)
        await self.board.start()

    async def stop(self) -> None:
        if self.board:
            await self.board.stop()
        if self.nc:
            await self.nc.drain()


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    checks = {
        "nats": bool(gw.nc and gw.nc.is_connected),
        "log_followed": bool(gw.board and gw.board.caught_up.is_set()),
    }
    ok = all(checks.values())
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return exc.response()


def create_app(settings: Settings) -> Starlette:
    """The gateway app; NATS is connected in the lifespan."""
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    routes = [
        *jobs_api.routes,
        *workers_api.routes,
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPError: _http_error})
    app.state.gateway = gateway
    return app
