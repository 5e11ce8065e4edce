"""GET /v1/pools: each pool's models and queues, from JetStream consumer info.

For each (pool, model) durable consumer: `backlog` is its num_pending (submitted, not yet
delivered), `ack_pending` the jobs delivered and not acked (running or about to be redelivered),
`waiting_pulls` the pull requests parked on it (idle worker slots), and `workers` the live
workers the gateway's fleet view has for that pool and model.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.events import InvalidSubject
from jetgrid.gateway.errors import HTTPError

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway


async def consumer_rows(gw: Gateway) -> list[dict[str, Any]]:
    """One row per (pool, model) consumer on the JOBS stream."""
    try:
        infos = await gw.bus.consumers_info(gw.settings.streams.jobs)
    except Exception as exc:
        raise HTTPError(503, f"Could not read consumer info from JetStream: {exc!r}.") from exc
    live = gw.fleet.state.live(datetime.now(UTC)) if gw.fleet else []
    rows = []
    for info in infos:
        filt = info.config.filter_subject or ""
        try:
            pool, model = gw.settings.subjects.parse_submit(filt)
        except InvalidSubject:
            continue  # not a pool consumer (a tool's own consumer, say)
        rows.append(
            {
                "pool": pool,
                "model": model,
                "consumer": info.name,
                "backlog": info.num_pending or 0,
                "ack_pending": info.num_ack_pending or 0,
                "waiting_pulls": info.num_waiting or 0,
                "workers": sum(1 for w in live if pool in w.pools and model in w.models),
            }
        )
    rows.sort(key=lambda r: (r["pool"], r["model"]))
    return rows


async def list_pools(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    rows = await consumer_rows(gw)
    names = list(gw.pools.names) + sorted({r["pool"] for r in rows} - set(gw.pools.names))
    pools = []
    for name in names:
        mine = [r for r in rows if r["pool"] == name]
        pools.append(
            {
                "name": name,
                "models": [r["model"] for r in mine],
                "backlog": sum(r["backlog"] for r in mine),
                "consumers": mine,
            }
        )
    return JSONResponse({"pools": pools})


routes = [Route("/v1/pools", list_pools, methods=["GET"])]
