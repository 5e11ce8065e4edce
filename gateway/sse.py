"""GET /v1/jobs/{id}/events: a job's lifecycle as Server-Sent Events, replayed then live.

Every lifecycle event is sent as ``event: <name>`` (claimed, started, completed, ...) with
``id: <its JOB_EVENTS stream sequence>`` and the CloudEvents envelope's `data` plus `time` and
`seq` as JSON. While the job runs, the output of the attempt holding it is sent as
``event: token`` with data ``{"text"}`` and ``id: <seq>:<attempt>:<offset>`` (the last
lifecycle event's sequence, the attempt, and the characters of that attempt's output the client
then has: gateway.chunks). Reconnecting to any gateway with either kind of id as
``Last-Event-ID`` resumes right after it: later lifecycle events, then the attempt's text from
that offset, read back from the TOKENS stream, no character lost or repeated. A retried job's
new attempt follows its ``started``/``claimed`` event and starts at offset 0. Before the
terminal event, the output of a completed job that streamed, as far as chunks did not cover it,
is sent as one last token (a job that never streamed sends none). The
stream ends after the terminal event. A comment line every 15 s keeps proxies from closing an
idle stream.

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
from jetgrid.gateway.chunks import TokenCursor, TokenRelay, chunk_id, parse_cursor
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.jobs_api import find_job
from jetgrid.gateway.live import LiveResponse, frame, holder
from jetgrid.gateway.llm import output_text

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway

KEEPALIVE_S = 15.0


def last_event_id(request: Request) -> tuple[int, tuple[int, int] | None]:
    """(lifecycle seq, (attempt, offset) or None) of the request's Last-Event-ID (0: none)."""
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw is None or raw == "":
        return 0, None
    cursor = parse_cursor(raw)
    if cursor is None:
        raise HTTPError(
            422,
            f"Header 'Last-Event-ID' must be an event id from this stream, got {raw!r}.",
            field="Last-Event-ID",
        )
    return cursor


async def job_events(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    view = await find_job(request)
    after, at = last_event_id(request)
    if view.terminal and view.terminal_seq is not None and after >= view.terminal_seq:
        return Response(b"retry: 1000\n\n", media_type="text/event-stream")  # nothing left
    lease = gw.limits.lease(request, "stream")
    job_id = view.job_id
    listener = gw.live.listen(job_id, after=after)
    relay = TokenRelay(gw.bus, gw.settings, job_id, TokenCursor.resume(at))
    last = after  # the last lifecycle event the client has: the first part of chunk ids

    def cleanup() -> None:
        gw.live.close(listener)
        lease.release()

    def tokens(texts: list[str]) -> bytes:
        text = "".join(texts)
        if not text:
            return b""
        cursor = relay.cursor
        return frame(
            {"text": text}, event="token", id=chunk_id(last, cursor.attempt, cursor.position)
        )

    async def finish() -> bytes:
        now = gw.board.get(job_id) or view
        output = output_text(now.output) if now.status == "completed" else None
        return tokens(await relay.finish(now.worker_id, now.attempts, output, streamed=True))

    async def stream() -> AsyncIterator[bytes]:
        nonlocal last
        try:
            yield b"retry: 1000\n\n"
            for seq in listener.history:
                got = await gw.live.frame_at(seq)
                if got is None:
                    continue
                name, data = got
                if name in TERMINAL_NAMES:
                    yield await finish() + data
                    return
                yield data
                last = seq
            now = holder(gw.board.get(job_id))
            if now is not None:
                yield tokens(await relay.catch_up(*now))
            while True:
                try:
                    kind, item = await asyncio.wait_for(listener.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if kind == "token":
                    yield tokens(await relay.live(item))
                elif kind == "event":
                    seq, name, data = item
                    if name in TERMINAL_NAMES:
                        yield await finish() + data
                        return
                    yield data
                    last = seq
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
