"""GET /v1/stalls: recent stalls per worker (coordinator.stalls), for the dashboard.

`StallLog` taps the job board's fold (gateway.board): every `retrying` event with ``stall_s``
of a job this gateway follows is a stall, kept with the job's pool and model (the last
`KEEP`). ``GET /v1/stalls?since_s=3600`` answers ``{"since_s", "workers": [{"worker_id",
"count", "latest": [{"job_id", "pool", "model", "time", "stall_s"}]}]}``, most stalls first;
a key scoped to some pools or models counts and lists only their jobs.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetgrid.coordinator.stalls import StallSeen, recent_stalls
from jetgrid.events import Envelope, JobRetrying, format_time
from jetgrid.gateway import auth
from jetgrid.gateway.errors import HTTPError

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway
    from jetgrid.gateway.board import JobBoard

KEEP = 1000
MAX_SINCE_S = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class _Stall:
    seen: StallSeen
    pool: str | None
    model: str | None


class StallLog:
    """The latest stalls of the jobs a gateway follows."""

    def __init__(self, board: JobBoard, keep: int = KEEP) -> None:
        self.board = board
        self.stalls: deque[_Stall] = deque(maxlen=keep)

    def tap(self, job_id: str, seq: int, subject: str, env: Envelope) -> None:
        ev = env.event
        if isinstance(ev, JobRetrying) and ev.stall_s is not None:
            view = self.board.get(job_id)
            seen = StallSeen(ev.worker_id, job_id, env.time, ev.stall_s)
            self.stalls.append(
                _Stall(seen, view.pool if view else None, view.model if view else None)
            )

    def since(self, request: Request, since: datetime) -> list[dict[str, object]]:
        where = {s.seen: s for s in self.stalls}
        visible = [s.seen for s in self.stalls if auth.may_see(request, pool=s.pool, model=s.model)]
        return [
            {
                "worker_id": w.worker_id,
                "count": w.count,
                "latest": [
                    {
                        "job_id": s.job_id,
                        "pool": where[s].pool,
                        "model": where[s].model,
                        "time": format_time(s.time),
                        "stall_s": round(s.stall_s, 3),
                    }
                    for s in w.latest
                ],
            }
            for w in recent_stalls(visible, since)
        ]


async def get_stalls(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    raw = request.query_params.get("since_s", "3600")
    try:
        since_s = float(raw)
    except ValueError:
        since_s = -1.0
    if not 0 < since_s <= MAX_SINCE_S:
        raise HTTPError(
            422,
            f"Query parameter 'since_s' has value {raw!r}; give seconds between 0 and "
            f"{MAX_SINCE_S:g}.",
            field="since_s",
        )
    rows = gw.stalls.since(request, gw.clock() - timedelta(seconds=since_s))
    return JSONResponse({"since_s": since_s, "workers": rows})


routes = [Route("/v1/stalls", get_stalls, methods=["GET"])]
