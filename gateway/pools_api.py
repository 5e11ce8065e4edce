"""GET /v1/pools: each pool's models and queues, with warm and cold workers and a suggested size.

The rows are projections.pools.pool_status (the same function `jetgrid pools` prints) over the
pool consumers' backlogs read from JetStream now (coordinator.backlog.read_backlogs: a pool and
model's high, normal and low consumers add up to one row) and the gateway's live fleet, judged
at the wall clock. The shape is projections.pools.pools_json: per pool its `models`, total
`backlog` and `consumers`, one per (pool, model): `consumer` (the normal-priority consumer's
name), `backlog` (num_pending: submitted, not yet delivered), `ack_pending` and `running`
(delivered, not acked: running or about to be redelivered), `waiting_pulls` (pull requests
parked on it: idle worker slots), `workers` (live workers accepting its jobs: warm + cold),
`oldest_wait_s`, `warm_workers`, `cold_workers`, `suggested_workers` and `unserved` (jobs
waiting that no live worker serves, among them those queued with ``?queue_unserved=true`` for a
model no consumer takes yet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.coordinator.backlog import read_backlogs, read_stored_submissions
from jetgrid.events import JetgridError
from jetgrid.gateway.errors import HTTPError
from jetgrid.projections.pools import PoolModelStatus, pool_status, pools_json

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway


async def pool_rows(gw: Gateway) -> list[PoolModelStatus]:
    """projections.pools.pool_status over JetStream's backlogs and the live fleet, now."""
    try:
        backlogs = await read_backlogs(gw.bus, gw.settings)
        stored = await read_stored_submissions(gw.bus, gw.settings)
    except JetgridError as exc:
        raise HTTPError(503, f"Could not read the pool consumers from JetStream: {exc}") from exc
    return pool_status(gw.pools, backlogs, gw.fleet.views.values(), gw.fleet.clock(), stored)


async def list_pools(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    return JSONResponse(pools_json(gw.pools, await pool_rows(gw)))


routes = [Route("/v1/pools", list_pools, methods=["GET"])]
