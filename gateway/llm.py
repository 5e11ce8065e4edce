"""What the Ollama- and OpenAI-compatible APIs share: model resolution, submission, streaming.

A request becomes one JobSubmitted (kind generate, chat or embed). While it runs, the token
chunks of the worker holding it (`<prefix>.tokens.<job_id>.<worker>`) come through the
gateway's shared feed (gateway.live, which drops any other worker's) and are relayed as they
come, each once and in order (a chunk the live subscription missed is read back from the TOKENS
stream: gateway.chunks); the terminal event closes the stream. A streaming request takes one of
the caller's stream slots, any other one a wait slot (gateway.limits), for as long as it runs.
When the job completes, whatever part of the final output the chunks did not cover is sent as
one last chunk: the client always ends up with the whole output.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from jetgrid.coordinator import tracecontext
from jetgrid.coordinator.routing import full_model_name
from jetgrid.coordinator.share import queue_lane, queue_tenant
from jetgrid.events import JetgridError, JobKind, JobSubmitted
from jetgrid.gateway import auth
from jetgrid.gateway.chunks import TokenCursor, TokenRelay
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.limits import Lease
from jetgrid.gateway.live import Listener, holder
from jetgrid.gateway.queue_api import check_load
from jetgrid.projections.jobs import JobView

if TYPE_CHECKING:
    from jetgrid.gateway.app import Gateway

log = logging.getLogger("jetgrid.gateway.llm")
SESSION_HEADER = "x-jetgrid-session"  # a session key for cache affinity (coordinator.share)

JOB_TIMEOUT_S = 600.0


def resolve_model(name: str, live: dict[str, set[str]]) -> str | None:
    """The served model name `name` refers to (``m`` and ``m:latest`` are the same model)."""
    if name in live:
        return name
    want = full_model_name(name)
    return next((m for m in sorted(live) if full_model_name(m) == want), None)


def pick_pool(gw: Gateway, model: str, pools: set[str]) -> str:
    """The routed pool if a live worker serves the model there, else any pool that does."""
    routed = gw.pools.route(model)
    if routed in pools or not pools:
        return routed
    return sorted(pools)[0]


def output_text(output: Any) -> str:
    """The generated text of a completed job's output, whatever the backend's shape."""
    if isinstance(output, str):
        return output
    if isinstance(output, dict):
        msg = output.get("message")
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            return content
        for key in ("response", "text", "content"):
            text = output.get(key)
            if isinstance(text, str):
                return text
    return json.dumps(output)


def token_counts(view: JobView) -> tuple[int, int]:
    """(prompt tokens, completion tokens) from the job's usage, 0 when unknown."""
    usage = view.usage or {}

    def num(*keys: str) -> int:
        for k in keys:
            v = usage.get(k)
            if isinstance(v, int | float):
                return int(v)
        return 0

    return num("prompt_tokens", "prompt_eval_count"), num("completion_tokens", "eval_count")


class LLMRun:
    """One job whose token chunks and outcome the caller iterates over: `job` to submit (with
    `start`), or the id of a job already submitted (to `follow`)."""

    def __init__(
        self, gw: Gateway, job: JobSubmitted | str, *, tokens: bool = True, slot: bool = True
    ) -> None:
        self.gw = gw
        self.job = job if isinstance(job, JobSubmitted) else None
        self.job_id = job.job_id if isinstance(job, JobSubmitted) else job
        self.tokens = tokens  # relay chunks (streaming responses) or only wait for the outcome
        self.slot = slot  # take the caller's slot; False when the caller holds one for a group
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.sent = ""
        self.relay = TokenRelay(gw.bus, gw.settings, self.job_id, TokenCursor())
        self._listener: Listener | None = None
        self._lease: Lease | None = None
        self._waiter: asyncio.Future[JobView] | None = None

    def follow(self, request: Request) -> None:
        """Take the caller's stream (or wait) slot (unless `slot` is False) and follow the
        job's tokens and outcome. Raises 429 when the caller is at its limit."""
        gw, job_id = self.gw, self.job_id
        if self.slot:
            self._lease = gw.limits.lease(request, "stream" if self.tokens else "wait")
        if self.tokens:
            self._listener = gw.live.listen(job_id, events=False, queue=self.queue)
        self._waiter = gw.board.waiter(job_id)
        self._waiter.add_done_callback(self._on_done)

    async def start(self, request: Request) -> None:
        """`follow` the job, then publish it (so no chunk is missed). Raises 429 when the
        caller is at its limit, before submitting."""
        gw, job = self.gw, self.job
        if job is None:
            raise TypeError("LLMRun.start needs the job to submit; follow a submitted one.")
        job = self.job = tenancy(gw, request, job)
        trace = tracecontext.parse(request.headers.get("traceparent")) or tracecontext.new_trace()
        job = self.job = job.model_copy(update={"trace_id": trace.trace_id})
        self.follow(request)
        try:
            await gw.bus.store(job, gw.speaker, traceparent=trace.header())
        except JetgridError as exc:
            await self.close()
            log.error("submit of %s failed: %s", job.job_id, exc)
            raise HTTPError(503, f"Could not store the job on NATS: {exc}") from exc

    def _on_done(self, fut: asyncio.Future[JobView]) -> None:
        if not fut.cancelled():
            self.queue.put_nowait(("done", fut.result()))

    async def stream(self, timeout_s: float = JOB_TIMEOUT_S) -> AsyncIterator[tuple[str, Any]]:
        """("token", text) as chunks arrive (one per chunk), then ("done", JobView); the
        remainder of the output that chunks missed comes as a last ("token", text) before
        "done". A run that follows a job already running (`follow`, not `start`) first gets
        the holder's chunks stored so far."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            now = holder(self.gw.board.get(self.job_id)) if self.tokens else None
            if now is not None:
                for text in await self.relay.catch_up(*now):
                    self.sent += text
                    yield "token", text
            while True:
                try:
                    kind, value = await asyncio.wait_for(
                        self.queue.get(), timeout=max(0.0, deadline - loop.time())
                    )
                except TimeoutError:
                    yield "timeout", None
                    return
                if kind == "token":
                    for text in await self.relay.live(value):
                        self.sent += text
                        yield "token", text
                    continue
                if kind == "gone":  # dropped as too slow: the outcome fills in the rest
                    continue
                view: JobView = value
                done = output_text(view.output) if view.status == "completed" else None
                if self.tokens:
                    rest = await self.relay.finish(view.worker_id, view.attempts, done)
                else:
                    rest = [done] if done else []
                for text in rest:
                    self.sent += text
                    yield "token", text
                yield "done", view
                return
        finally:
            await self.close()

    async def result(self, timeout_s: float = JOB_TIMEOUT_S) -> JobView | None:
        """The job's terminal view (None on timeout), ignoring chunks."""
        async for kind, value in self.stream(timeout_s):
            if kind == "done":
                view: JobView = value
                return view
        return None

    async def close(self) -> None:
        """Stop following the job and give the slot back (idempotent)."""
        if self._waiter is not None and self.gw.board is not None:
            self.gw.board.forget_waiter(self.job_id, self._waiter)
            self._waiter = None
        if self._listener is not None:
            self.gw.live.close(self._listener)
            self._listener = None
        if self._lease is not None:
            self._lease.release()
            self._lease = None


def tenancy(gw: Gateway, request: Request, job: JobSubmitted) -> JobSubmitted:
    """`job` with the caller as its submitter, and its tenant, queue and lane
    (coordinator.share); a job that names its submitter already is left as it is."""
    if job.submitter is not None:
        return job
    submitter = auth.submitter(request)
    pool = gw.pools[job.pool]
    tenant = queue_tenant(pool, submitter)
    session = request.headers.get(SESSION_HEADER) or None
    if session is not None and len(session) > 256:
        msg = f"Header {SESSION_HEADER!r} must be at most 256 characters."
        raise HTTPError(422, msg, field=SESSION_HEADER)
    lane = queue_lane(pool, tenant, session=session, kind=job.kind, input=job.input)
    update = {"submitter": submitter, "tenant": tenant, "session": session, "lane": lane}
    return JobSubmitted.model_validate({**job.model_dump(), **update})


def new_job(
    gw: Gateway,
    *,
    model: str,
    pool: str,
    kind: JobKind,
    prompt: str | None = None,
    input: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    submitter: str | None = None,
    webhook: str | None = None,
) -> JobSubmitted:
    """A new job for an LLM route; 429 first when its pool sheds (gateway.queue_api)."""
    check_load(gw, pool, model)
    return JobSubmitted(
        job_id=uuid.uuid4().hex,
        model=model,
        pool=pool,
        kind=kind,
        prompt=prompt,
        input=input,
        options=options or {},
        submitter=submitter,
        tenant=queue_tenant(gw.pools[pool], submitter),
        webhook=webhook,
    )
