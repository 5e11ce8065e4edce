"""The gateway: jetgrid's HTTP API, as a Starlette app factory.

`create_app(settings)` opens its NATS connection and starts following the log in its lifespan;
`gateway.server.serve` runs it under uvicorn. Tests drive it in-process or under uvicorn.

The app is assembled here from one module per API family: jobs_api and sse (/v1 jobs and their
event stream), pools_api, openapi, ollama_api, openai_api and openai_more (drop-in APIs,
sharing llm), files and batches (OpenAI's Batch API), metrics, dashboard (+ static/), with
auth.Guard as the one middleware (size limit, larger for file uploads; API keys, rate limits).
Lifespan state: the job board (JOBS + JOB_EVENTS fold), the live feed that fans it and the token
chunks out to streaming clients, and the fleet (WORKERS); limits counts open streams and waits.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JetgridError, StreamNames
from jetgrid.events import now as wall_clock
from jetgrid.events.addressing import Speaker
from jetgrid.gateway import (
    auth,
    batches,
    dashboard,
    files,
    hooks,
    jobs_api,
    metrics,
    ollama_api,
    openai_api,
    openai_more,
    openapi,
    pools_api,
    queue_api,
    responses,
    sse,
    stalls_api,
    usage_api,
    workers_api,
)
from jetgrid.gateway.board import JobBoard
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.fleet import Fleet
from jetgrid.gateway.limits import Limits
from jetgrid.gateway.live import LiveFeed
from jetgrid.gateway.queue_api import Expiry
from jetgrid.gateway.stalls_api import StallLog
from jetgrid.projections.queue import QueueIndex

log = logging.getLogger("jetgrid.gateway")


class Gateway:
    """Lifespan state: the bus, the job board, the live feed and the fleet (set by `start`,
    before any request is served), the metrics, the limits and the pool configuration."""

    bus: Bus
    board: JobBoard
    live: LiveFeed
    fleet: Fleet
    expiry: Expiry
    stalls: StallLog

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = metrics.Metrics()
        self.pools = settings.pool_configs()
        self.speaker = Speaker.service("gateway")
        self.limits = Limits(settings)
        self.clock = wall_clock  # the queue figures' and the expiry sweep's now
        self.queue = QueueIndex(since=self.clock().timestamp())
        self.started = False

    async def start(self) -> None:
        """Connect and start following the log. `jetgrid gateway` calls it before serving, so
        that a server it cannot reach or streams it cannot read are one line, not uvicorn's
        traceback; otherwise the app's lifespan calls it."""
        self.bus = await Bus.connect(self.settings, name="jetgrid-gateway")
        try:
            await self._follow()
        except BaseException:
            await self.bus.close()
            raise
        self.started = True

    async def _follow(self) -> None:
        self.board = JobBoard(self.bus, self.settings)
        self.bus.before_store = self.board.own.expect
        self.board.observers.append(self.metrics.observe)
        self.board.observers.append(self.queue.observe)
        self.stalls = StallLog(self.board)  # recent stalls, from the fold (GET /v1/stalls)
        self.board.taps.append(self.stalls.tap)
        self.live = LiveFeed(self.bus, self.board, self.settings)  # taps the fold from its start
        await self.live.start()
        await self.board.start()
        self.fleet = Fleet(self.bus, self.settings)
        await self.fleet.start()
        self.expiry = Expiry(self.bus, self.speaker, self.queue, lambda: self.clock())
        self.expiry.start()

    async def stop(self) -> None:
        if not self.started:
            return
        await self.expiry.stop()
        await self.fleet.stop()
        await self.live.stop()
        await self.board.stop()
        await self.bus.close()
        self.started = False


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    checks = {
        "nats": gw.bus.is_connected,
        "streams": await _streams_present(gw),
        "log_followed": gw.board.caught_up.is_set(),
    }
    ok = all(checks.values())
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


async def _streams_present(gw: Gateway) -> bool:
    if not gw.bus.is_connected:
        return False
    names: StreamNames = gw.settings.streams
    try:
        for name in (names.jobs, names.job_events, names.workers):
            await gw.bus.last_seq(name)
    except JetgridError:
        return False
    return True


async def _routing_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405, in the caller's API's error shape, naming what was wrong."""
    assert isinstance(exc, StarletteHTTPException)
    method, path = request.method, request.url.path
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        message = f"Method {method} is not allowed on {path}; allowed: {allow or 'none'}."
        err = HTTPError(405, message, field="method", type="method_not_allowed")
        err.headers = dict(exc.headers or {})
    elif exc.status_code == 404:
        err = HTTPError(404, f"No route {method} {path} on this gateway.", field="path")
    else:
        err = HTTPError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
    return err.response(path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return exc.response(request.url.path)


def create_app(settings: Settings) -> Starlette:
    """The gateway app; NATS is connected in the lifespan."""
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not gateway.started:
            await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    routes = [
        # Probes first: Starlette tries the routes in order, and these are polled the most.
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *jobs_api.routes,
        *workers_api.routes,
        *sse.routes,
        *pools_api.routes,
        *queue_api.routes,
        *openai_api.routes,
        *openai_more.routes,
        *responses.routes,
        *ollama_api.routes,
        *openapi.routes,
        *metrics.routes,
        *dashboard.routes,
        *files.routes,
        *batches.routes,
        *hooks.routes,
        *usage_api.routes,
        *stalls_api.routes,
    ]
    # A keys file that cannot be used raises auth.KeysFileError here: never start open.
    keys = auth.KeyRing(auth.keys_path(settings), settings.api_keys)
    if keys.keys():
        log.info(
            "gateway: %d API key(s) configured; every route but health needs one", len(keys.keys())
        )
    else:
        log.warning(
            "gateway: no API keys configured; the HTTP API on %s:%s is open to anyone who can "
            "reach it (add one with `jetgrid keys add NAME`; it takes effect within seconds)",
            settings.gateway_host,
            settings.gateway_port,
        )
    guard = Middleware(
        auth.Guard,
        keys=keys,
        max_body=settings.max_request_bytes,
        rate=settings.rate_limit_per_s,
        burst=settings.rate_limit_burst,
        uploads={"/v1/files": settings.files_max_bytes + files.MULTIPART_SLACK},
    )
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[guard],
        exception_handlers={HTTPError: _http_error, StarletteHTTPException: _routing_error},
    )
    app.state.gateway = gateway
    return app
