"""GET /v1/jobs/{id}/events: a job's lifecycle as Server-Sent Events, replayed then live.

Every lifecycle event is sent as ``event: <name>`` (claimed, started, completed, ...) with
``id: <its JOB_EVENTS stream sequence>`` and the CloudEvents envelope's `data` plus `time` and
`seq` as JSON. Reconnecting with ``Last-Event-ID: N`` resumes after sequence N. While the job
runs, its token chunks are relayed as ``event: token`` (no id: they are ephemeral, the
`completed` event carries the whole output). The stream ends after the terminal event. A comment
line every 15 s keeps proxies from closing an idle stream.

Streams hold no NATS subscription or consumer of their own: history is read by direct get and
live events and chunks come from the gateway's shared feed (gateway.live), which relays only the
chunks of the worker holding the job. Each open stream takes one of the caller's stream slots
(gateway.limits): past the limit the answer is 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jetgrid.events import TERMINAL_NAMES
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.jobs_api import find_job
from jetgrid.gateway.live import LiveResponse, frame

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway

KEEPALIVE_S = 15.0


def last_event_id(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw is None or raw == "":
        return 0
    if not raw.isdigit():
        raise HTTPError(
            422,
            f"Header 'Last-Event-ID' must be an event id from this stream, got {raw!r}.",
            field="Last-Event-ID",
        )
    return int(raw)


async def job_events(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    view = await find_job(request)
    after = last_event_id(request)
    if view.terminal and view.terminal_seq is not None and after >= view.terminal_seq:
        return Response(b"retry: 1000\n\n", media_type="text/event-stream")  # nothing left
    lease = gw.limits.lease(request, "stream")
    listener = gw.live.listen(view.job_id, after=after)

    def cleanup() -> None:
        gw.live.close(listener)
        lease.release()

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 1000\n\n"
            for seq in listener.history:
                got = await gw.live.frame_at(seq)
                if got is None:
                    continue
                name, data = got
                yield data
                if name in TERMINAL_NAMES:
                    return
            while True:
                try:
                    kind, item = await asyncio.wait_for(listener.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if kind == "token":
                    yield frame({"text": item}, event="token")
                elif kind == "event":
                    _, name, data = item
                    yield data
                    if name in TERMINAL_NAMES:
                        return
                else:  # "gone": dropped as too slow; the client resumes with Last-Event-ID
                    return
        finally:
            cleanup()

    return LiveResponse(
        stream(),
        cleanup,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


routes = [Route("/v1/jobs/{job_id}/events", job_events, methods=["GET"])]
