"""Live job streams: the gateway's one token subscription and its log fold, fanned out.

Every client that follows a job (``GET /v1/jobs/{id}/events``, streaming OpenAI and Ollama
responses) registers a `Listener` here instead of subscribing to NATS itself, so the number of
JetStream consumers and NATS subscriptions does not grow with clients:

- lifecycle events come from the job board's fold (its ordered consumer on JOB_EVENTS, one per
  gateway); each event is rendered to its SSE frame once and queued to every listener of the job;
- a listener's history (events before it connected, after its ``Last-Event-ID``) is read by
  direct get of the sequences the board recorded for the job (folded live, or read back from
  the log by `JobBoard.find`), never through a consumer; the board keeps a followed job cached;
- token chunks come from one core-NATS subscription to ``<prefix>.tokens.*.*`` (the TOKENS stream
  keeps them too, for catch-up and resume: gateway.chunks) and are queued as ("token", Chunk).
  A chunk counts only if the worker in its subject and the attempt in its body are the ones the
  job's latest `claimed`/`started` event names; chunks that arrive before the fold has seen that
  event wait (at most `MAX_PENDING` per job) and those of any other worker are dropped.

A listener whose client reads slower than the job produces (more than `MAX_QUEUED` items
waiting) is dropped with a final ``("gone", None)`` item; an SSE client reconnects with
``Last-Event-ID`` and the `completed` event carries the whole output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.events import Envelope, InvalidEvent, JetgridError, decode, format_time
from jetgrid.gateway.board import JobBoard
from jetgrid.gateway.chunks import Chunk, parse_chunk
from jetgrid.projections.jobs import JobView

log = logging.getLogger("jetgrid.gateway.live")

MAX_QUEUED = 2048  # items waiting for one slow client before it is dropped
MAX_PENDING = 256  # chunks held per job until the fold names the job's holder
CACHE_FRAMES = 8192  # rendered SSE frames of recent events, by JOB_EVENTS sequence

Item = tuple[str, Any]


def frame(data: Any, *, event: str | None = None, id: int | str | None = None) -> bytes:
    """One SSE event; `data` is JSON-encoded unless it is already a string."""
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event:
        lines.append(f"event: {event}")
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def event_frame(seq: int, name: str, env: Envelope) -> bytes:
    """The SSE frame of one lifecycle event: its data plus `time` and `seq`, id = seq."""
    data = env.event.model_dump(mode="json", exclude={"type", "version"})
    data.update(time=format_time(env.time), seq=seq)
    return frame(data, event=name, id=seq)


def holder(view: JobView | None) -> tuple[str, int] | None:
    """(worker id, attempt) of the attempt now running the job, or None when none is."""
    if view is None or view.status not in ("claimed", "running") or not view.worker_id:
        return None
    return view.worker_id, view.attempts


@dataclass(eq=False)
class Listener:
    """One client following one job: items ("event", (seq, name, frame)), ("token", Chunk) and
    ("gone", None) arrive on `queue`; `history` holds the event sequences before it joined."""

    job_id: str
    queue: asyncio.Queue[Item]
    events: bool
    tokens: bool
    after: int = 0
    history: list[int] = field(default_factory=list)
    gone: bool = False


class LiveFeed:
    """Fans the board's lifecycle events and the gateway's token subscription out to listeners."""

    def __init__(self, bus: Bus, board: JobBoard, settings: Settings) -> None:
        self.bus = bus
        self.board = board
        self.settings = settings
        self.listeners: dict[str, list[Listener]] = defaultdict(list)
        self._pending: dict[str, list[Chunk]] = {}
        self._frames: OrderedDict[int, tuple[str, bytes]] = OrderedDict()
        self._sub: Any = None
        board.taps.append(self._on_event)

    async def start(self) -> None:
        subject = self.settings.subjects.token_streams()
        self._sub = await self.bus.call(
            self.bus.nc.subscribe(subject, cb=self._on_token), f"subscribe to {subject}"
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        for listeners in list(self.listeners.values()):
            for lst in listeners:
                self._drop(lst)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.listeners.values())

    # -- listeners ------------------------------------------------------------------------
    def listen(
        self,
        job_id: str,
        *,
        after: int = 0,
        events: bool = True,
        tokens: bool = True,
        queue: asyncio.Queue[Item] | None = None,
    ) -> Listener:
        """Follow a job from sequence `after`: `history` is what was folded before now, live
        items are those after it (no gap, no repeat: nothing awaits in between)."""
        lst = Listener(job_id, queue or asyncio.Queue(), events, tokens, after)
        if events:
            lst.history = [s for s in self.board.seqs(job_id) if s > after]
            if lst.history:
                lst.after = lst.history[-1]
        self.listeners[job_id].append(lst)
        self.board.hold(job_id)
        return lst

    def close(self, lst: Listener) -> None:
        """Stop delivering to `lst` (idempotent)."""
        listeners = self.listeners.get(lst.job_id)
        if listeners and lst in listeners:
            listeners.remove(lst)
            self.board.release(lst.job_id)
            if not listeners:
                del self.listeners[lst.job_id]
                self._pending.pop(lst.job_id, None)

    def _drop(self, lst: Listener) -> None:
        self.close(lst)
        lst.gone = True
        lst.queue.put_nowait(("gone", None))

    def _put(self, lst: Listener, item: Item) -> None:
        if lst.queue.qsize() >= MAX_QUEUED:
            log.info("dropped a client of job %s that read too slowly", lst.job_id)
            self._drop(lst)
        else:
            lst.queue.put_nowait(item)

    async def frame_at(self, seq: int) -> tuple[str, bytes] | None:
        """(event name, SSE frame) of the JOB_EVENTS message at `seq`, by direct get (cached);
        None if it is gone or not a job event."""
        cached = self._frames.get(seq)
        if cached is not None:
            return cached
        try:
            msg = await self.bus.message(self.settings.streams.job_events, seq)
        except JetgridError as exc:
            log.info("could not read job event %s: %s", seq, exc)
            return None
        if msg is None:
            return None
        try:
            env = decode(msg.data)
            _, name = self.settings.subjects.parse_job_event(msg.subject)
        except (InvalidEvent, JetgridError):
            return None
        return self._remember(seq, name, event_frame(seq, name, env))

    def _remember(self, seq: int, name: str, data: bytes) -> tuple[str, bytes]:
        self._frames[seq] = (name, data)
        while len(self._frames) > CACHE_FRAMES:
            self._frames.popitem(last=False)
        return name, data

    # -- the fold's events ------------------------------------------------------------------
    def _on_event(self, job_id: str, seq: int, subject: str, env: Envelope) -> None:
        """A tap of the job board: called for every job event it folds, after folding it."""
        listeners = self.listeners.get(job_id)
        if not listeners:
            return
        try:
            _, name = self.settings.subjects.parse_job_event(subject)
        except JetgridError:
            return
        rendered: bytes | None = None
        for lst in list(listeners):
            if lst.events and seq > lst.after:
                if rendered is None:
                    rendered = self._remember(seq, name, event_frame(seq, name, env))[1]
                self._put(lst, ("event", (seq, name, rendered)))
        pending = self._pending.get(job_id)
        if pending is not None:
            view = self.board.get(job_id)
            now = holder(view)
            if now is not None:
                del self._pending[job_id]
                for chunk in pending:
                    if (chunk.worker, chunk.attempt) == now:
                        self._deliver_token(job_id, chunk)
            elif view is not None and view.terminal:
                del self._pending[job_id]

    # -- token chunks ---------------------------------------------------------------------
    async def _on_token(self, msg: Any) -> None:
        try:
            job_id, worker = self.settings.subjects.parse_tokens(msg.subject)
        except JetgridError:
            return
        if job_id not in self.listeners:
            return
        chunk = parse_chunk(msg.data, job_id, worker)
        if chunk is None:
            return
        view = self.board.get(job_id)
        now = holder(view)
        if now is None:
            if view is not None and view.terminal:
                return
            pending = self._pending.setdefault(job_id, [])
            if len(pending) < MAX_PENDING:
                pending.append(chunk)
            return
        if (worker, chunk.attempt) != now:
            log.info(
                "ignored a token chunk of job %s from %s (attempt %s)",
                job_id,
                worker,
                chunk.attempt,
            )
            return
        self._deliver_token(job_id, chunk)

    def _deliver_token(self, job_id: str, chunk: Chunk) -> None:
        for lst in list(self.listeners.get(job_id, ())):
            if lst.tokens:
                self._put(lst, ("token", chunk))


class LiveResponse(StreamingResponse):
    """A streaming response that runs `cleanup` when it ends, however it ends (even when the
    client leaves before the body's first byte, when the body's own `finally` never runs)."""

    def __init__(self, content: Any, cleanup: Callable[[], Any], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            done = self.cleanup()
            if asyncio.iscoroutine(done):
                await done
