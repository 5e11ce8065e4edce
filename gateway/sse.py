"""GET /v1/jobs/{id}/events: a job's lifecycle as Server-Sent Events, replayed then live.

Every lifecycle event is sent as ``event: <name>`` (claimed, started, completed, ...) with
``id: <its JOB_EVENTS stream sequence>`` and the CloudEvents envelope's `data` plus `time` and
`seq` as JSON. Reconnecting with ``Last-Event-ID: N`` resumes after sequence N. While the job
runs, its token chunks are relayed as ``event: token`` (no id: they are ephemeral, the
`completed` event carries the whole output). The stream ends after the terminal event. A comment
line every 15 s keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from nats.js.api import ConsumerConfig, DeliverPolicy
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from jetgrid.events import TERMINAL_NAMES, InvalidEvent, decode, format_time, load_json
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.jobs_api import find_job

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway

KEEPALIVE_S = 15.0


def frame(data: Any, *, event: str | None = None, id: int | None = None) -> bytes:
    """One SSE event; `data` is JSON-encoded unless it is already a string."""
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event:
        lines.append(f"event: {event}")
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


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
    subjects, job_id = gw.settings.subjects, view.job_id
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def on_event(msg: Any) -> None:
        queue.put_nowait(("event", msg))

    async def on_token(msg: Any) -> None:
        queue.put_nowait(("token", msg.data))

    token_sub = await gw.bus.nc.subscribe(subjects.tokens(job_id), cb=on_token)
    config = (
        ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1)
        if after
        else ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    )
    event_sub = await gw.bus.js.subscribe(
        subjects.job_events(job_id),
        stream=gw.settings.streams.job_events,
        cb=on_event,
        ordered_consumer=True,
        config=config,
    )

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 1000\n\n"
            while True:
                try:
                    kind, item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if kind == "token":
                    with contextlib.suppress(InvalidEvent, KeyError, TypeError):
                        yield frame({"text": load_json(item)["text"]}, event="token")
                    continue
                seq = item.metadata.sequence.stream
                try:
                    env = decode(item.data)
                except InvalidEvent:
                    continue
                _, name = subjects.parse_job_event(item.subject)
                data = env.event.model_dump(mode="json", exclude={"type", "version"})
                data.update(time=format_time(env.time), seq=seq)
                yield frame(data, event=name, id=seq)
                if name in TERMINAL_NAMES:
                    return
        finally:
            for sub in (event_sub, token_sub):
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


routes = [Route("/v1/jobs/{job_id}/events", job_events, methods=["GET"])]
