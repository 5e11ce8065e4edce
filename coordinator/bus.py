"""The one adapter between jetgrid and NATS: a connection, and everything jetgrid says on it.

`Bus.connect(settings, name=...)` opens the connection (servers, credentials, TLS, the role's
inbox prefix; reconnects forever once connected). Every event, submission, cancel request and
invalid-message record is published through `Bus.store` (waits for the stream's ack) or
`Bus.send` (stored all the same, in order on this connection; returns the ack's future), with the
subject and ``Nats-Msg-Id`` of events.addressing. Code that receives messages (pull consumers,
ordered consumers, subscriptions) uses `Bus.nc` and `Bus.js` directly; every other JetStream
call goes through a `Bus` method or `Bus.call`.

Errors: whatever nats-py raises inside the bus leaves it as one of coordinator.errors
(`translate`). nats-py never raises on a permissions violation: the server's ``-ERR`` reaches the
connection's error callback and the call that caused it would wait out its timeout. The bus keeps
the latest such refusal (`ConnectionErrors`) and ends the call waiting on NATS at once with
`PermissionDenied` naming it (`Bus.call`; with several calls in flight, the first to wake takes
it, as the first to time out would).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from jetgrid.coordinator.direct import batch_get
from jetgrid.coordinator.errors import (
    NatsError,
    NatsTimeout,
    NatsUnavailable,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
)
from jetgrid.coordinator.settings import Settings
from jetgrid.events import (
    TERMINAL_NAMES,
    Envelope,
    Event,
    InvalidMessage,
    JetgridError,
    decode,
    encode,
)
from jetgrid.events.addressing import Speaker, address

__all__ = [
    "Bus",
    "ConnectionErrors",
    "Continuity",
    "JobFollower",
    "Stored",
    "StoredMessage",
    "translate",
]

log = logging.getLogger("jetgrid.nats")
T = TypeVar("T")

INITIAL_CONNECT_ATTEMPTS = 3
CLOSE_TIMEOUT_S = 3.0
BATCH_GET = 256  # messages per batched direct get


@dataclass
class ConnectionErrors:
    """What the error callback saw; `last_permission`: the latest refusal not yet reported."""

    last_permission: str | None = None
    seen: list[str] = field(default_factory=list)
    # The tasks of the calls waiting on NATS (Bus.call), oldest first, and those a refusal ended.
    waiting: dict[asyncio.Task[Any], None] = field(default_factory=dict)
    refused: set[asyncio.Task[Any]] = field(default_factory=set)

    def record(self, text: str) -> bool:
        """Keep `text`; for a permissions violation, end the oldest waiting call (it reports the
        refusal). Returns whether a call was waiting."""
        self.seen = [*self.seen[-49:], text]
        if "permissions violation" not in text.lower():
            return False
        self.last_permission = text
        if not self.waiting:
            return False
        task = next(iter(self.waiting))
        del self.waiting[task]
        self.refused.add(task)
        task.cancel()
        return True

    def take_permission(self) -> str | None:
        text, self.last_permission = self.last_permission, None
        return text


@dataclass
class Continuity:
    """Since when (wall clock, epoch seconds) the connection has been up without a break; inf
    while it is down. A core-NATS subscription made before `since` has missed nothing since."""

    since: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Stored:
    """A stream's acknowledgement: where the message is, and whether it was a duplicate."""

    stream: str
    seq: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message read back from a stream by sequence or by subject."""

    subject: str
    seq: int
    data: bytes
    time: datetime | None = None
    headers: dict[str, str] = field(default_factory=dict)


def translate(exc: BaseException, action: str, errors: ConnectionErrors | None = None) -> Exception:
    """The jetgrid error for a nats-py error raised while trying to `action` (a phrase that
    names the subject, stream or consumer: "publish to jetgrid.jobs.fast.echo")."""
    if isinstance(exc, JetgridError):
        return exc
    if isinstance(exc, TimeoutError | nats.errors.TimeoutError):
        if errors is not None and (refused := errors.take_permission()):
            return PermissionDenied(f"NATS refused to {action}: {refused}")
        return NatsTimeout(f"NATS did not answer in time when asked to {action}.")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PayloadTooLarge(f"Could not {action}: {exc}; the server's max_payload is smaller.")
    if isinstance(exc, nats.errors.NoRespondersError | nats.js.errors.NoStreamResponseError):
        return NotFound(
            f"Could not {action}: no stream takes that subject; provision the streams with "
            "`jetgrid provision`."
        )
    if isinstance(exc, nats.js.errors.NotFoundError | nats.js.errors.BucketNotFoundError):
        return NotFound(f"Could not {action}: {_describe(exc)}.")
    if isinstance(exc, nats.js.errors.APIError):
        return NatsError(f"NATS refused to {action}: {_describe(exc)}.")
    if isinstance(exc, nats.errors.Error | OSError | ConnectionError):
        return NatsUnavailable(f"Could not {action}: NATS is not reachable ({_describe(exc)}).")
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


def _describe(exc: BaseException) -> str:
    description = getattr(exc, "description", None)
    code = getattr(exc, "err_code", None)
    if description:
        return f"{description} (error {code})" if code else str(description)
    return str(exc) or type(exc).__name__


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    ctx = ssl.create_default_context(
        cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None
    )
    if settings.nats_tls_cert:
        ctx.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key or "") or None)
    return ctx


class Bus:
    """A NATS connection with jetgrid's publishing rules and error translation."""

    def __init__(
        self,
        nc: NATS,
        settings: Settings,
        *,
        errors: ConnectionErrors | None = None,
        continuity: Continuity | None = None,
    ) -> None:
        self.nc = nc
        self.settings = settings
        self.subjects = settings.subjects
        self.streams = settings.streams
        self.errors = errors or ConnectionErrors()
        self.continuity = continuity or Continuity(math.inf)
        self.js: JetStreamContext = nc.jetstream(timeout=settings.nats_js_timeout_s)
        # `store` calls it with the subject, bytes and envelope it is about to publish.
        self.before_store: Callable[[str, bytes, Envelope], object] = lambda *_: None

    @classmethod
    async def connect(cls, settings: Settings, *, name: str, **extra: Any) -> Bus:
        """Connect, retrying a few times; NatsUnavailable if no server answers at first."""
        errors = ConnectionErrors()
        continuity = Continuity()

        async def on_error(exc: Exception) -> None:
            text = str(exc) or type(exc).__name__
            if errors.record(text):
                log.debug("NATS refused a call in flight: %s", text)  # the call raises it
            elif "permissions violation" in text.lower():
                log.error("NATS refused an operation: %s", text)
            else:
                log.debug("nats error: %s", text)

        async def on_disconnect() -> None:
            continuity.since = math.inf
            log.info("disconnected from NATS; reconnecting")

        async def on_reconnect() -> None:
            continuity.since = time.time()
            log.info("reconnected to NATS")

        opts: dict[str, Any] = dict(
            servers=settings.servers,
            name=name,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            connect_timeout=settings.nats_connect_timeout_s,
            allow_reconnect=True,
            # nats-py applies this to the first connect too, where -1 would retry forever:
            # connect with a few tries, then reconnect forever once connected (set below).
            max_reconnect_attempts=INITIAL_CONNECT_ATTEMPTS,
            reconnect_time_wait=0.5,
            inbox_prefix=settings.inbox_prefix,
        )
        if settings.nats_user:
            opts["user"] = settings.nats_user
            if settings.nats_password:
                opts["password"] = settings.nats_password.get_secret_value()
        if settings.nats_token:
            opts["token"] = settings.nats_token.get_secret_value()
        if settings.nats_creds:
            opts["user_credentials"] = str(settings.nats_creds)
        if (ctx := tls_context(settings)) is not None:
            opts["tls"] = ctx
        opts.update(extra)
        try:
            # nats-py can retry a failed TLS handshake without end: bound the first connect.
            deadline = settings.nats_connect_timeout_s * (INITIAL_CONNECT_ATTEMPTS + 1)
            nc = await asyncio.wait_for(nats.connect(**opts), deadline)
        except Exception as exc:
            reason = str(exc) or (errors.seen[-1] if errors.seen else type(exc).__name__)
            raise NatsUnavailable(
                f"Could not connect to NATS at {settings.nats_url}: {reason}. "
                "Is a server running there (try `jetgrid up`), and are the credentials right?"
            ) from exc
        nc.options["max_reconnect_attempts"] = -1
        return cls(nc, settings, errors=errors, continuity=continuity)

    # -- the connection --------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def call(self, op: Awaitable[T], action: str) -> T:
        """Await a nats-py call that waits on the server; its errors leave as jetgrid's (see
        `translate`), and a permissions violation meanwhile ends it at once with PermissionDenied
        instead of its timeout (ConnectionErrors.record cancels the oldest waiting call)."""
        task, errors = asyncio.current_task(), self.errors
        if task is not None:  # always, inside a running coroutine
            errors.waiting[task] = None
        try:
            return await op
        except asyncio.CancelledError:
            if task in errors.refused:
                errors.refused.discard(task)
                if task.uncancel() == 0:  # cancelled by the refusal alone
                    text = errors.take_permission() or "permissions violation"
                    raise PermissionDenied(f"NATS refused to {action}: {text}") from None
            raise
        except Exception as exc:
            if isinstance(exc, JetgridError):
                raise
            raise translate(exc, action, errors) from exc
        finally:
            errors.waiting.pop(task, None)  # type: ignore[arg-type]

    async def _now(self, op: Awaitable[T], action: str) -> T:
        """Await a nats-py call that does not wait on the server (a core publish), translating
        its errors; a refusal of it arrives later, for the log or the next call."""
        try:
            return await op
        except Exception as exc:
            raise translate(exc, action, self.errors) from exc

    async def flush(self, within_s: int = 2) -> None:
        """Wait until the server has processed everything published so far."""
        await self.call(self.nc.flush(timeout=within_s), "flush the connection")

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Flush what was published, then drain the connection, bounded: a subscription whose
        queue nobody reads any more would otherwise hold the process for nats-py's whole drain
        timeout (30 s)."""
        if self.nc.is_closed:
            return
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=2)
        try:
            await asyncio.wait_for(self.nc.drain(), timeout=timeout_s)
        except Exception as exc:  # TimeoutError, or the connection already gone
            log.info("connection did not drain (%r); closing it", exc)
            with contextlib.suppress(Exception):
                await self.nc.close()

    # -- saying things ---------------------------------------------------------------------
    async def store(
        self, event: Event, speaker: Speaker, *, time: datetime | None = None, **headers: str
    ) -> Stored:
        """Publish `event` as `speaker` (`headers` too) and wait until its stream stored it."""
        addr = address(event, self.subjects, speaker)
        env = Envelope(addr.msg_id, speaker.source, time or datetime.now(UTC), event)
        data = encode(event, source=speaker.source, id=addr.msg_id, time=env.time)
        self.before_store(addr.subject, data, env)
        ack = await self.call(
            self.js.publish(addr.subject, data, headers={**headers, "Nats-Msg-Id": addr.msg_id}),
            f"publish to {addr.subject}",
        )
        return Stored(ack.stream, ack.seq, bool(ack.duplicate))

    async def record_invalid(
        self,
        data: bytes,
        speaker: Speaker,
        *,
        stream: str,
        subject: str,
        seq: int | None,
        reason: str,
        headers: Mapping[str, Any] | None = None,
    ) -> Stored:
        """Record a message that cannot be used on ``<prefix>.invalid.<stream>``.

        Its id is ``invalid:<stream>:<seq>``, so every consumer that meets the same message
        may record it: the stream keeps the first record.
        """
        record = InvalidMessage.of(
            data,
            stream=stream,
            subject=subject,
            seq=seq,
            reason=reason,
            detected_by=speaker.source,
            headers={k: v for k, v in (headers or {}).items() if isinstance(v, str)},
        )
        return await self.store(record, speaker)

    async def send(
        self, event: Event, speaker: Speaker, *, time: datetime | None = None
    ) -> asyncio.Future[Any]:
        """Publish `event` as `speaker` without waiting: stored all the same, after what this
        connection published before it. The future gets the stream's ack, or never: cancel it."""
        addr = address(event, self.subjects, speaker)
        data = encode(event, source=speaker.source, id=addr.msg_id, time=time)
        op = self.js.publish_async(addr.subject, data, headers={"Nats-Msg-Id": addr.msg_id})
        ack = await self._now(op, f"publish to {addr.subject}")
        ack.add_done_callback(lambda f: f.cancelled() or f.exception())  # nothing "unretrieved"
        return ack

    async def chunk(self, subject: str, data: bytes) -> None:
        """Publish a token chunk without waiting for an ack (the TOKENS stream stores it)."""
        await self._now(self.nc.publish(subject, data), f"publish to {subject}")

    async def put(self, bucket: str, key: str, value: bytes) -> int:
        """Put `value` under `key` in a key-value bucket; returns the revision."""
        action = f"put {key!r} in bucket {bucket!r}"
        kv = await self.call(self.js.key_value(bucket), action)
        return int(await self.call(kv.put(key, value), action))

    def follow_job(self, job_id: str) -> JobFollower:
        """Subscribe to a job's lifecycle events (``async with``), to wait for its outcome: enter
        it before submitting or cancelling, so the outcome cannot be missed."""
        return JobFollower(self, job_id)

    # -- reading -----------------------------------------------------------------------------
    async def last_seq(self, stream: str) -> int:
        """The sequence of the last message in `stream` (0 when empty)."""
        info = await self.call(self.js.stream_info(stream), f"read stream {stream}")
        return int(info.state.last_seq)

    async def consumer_info(self, stream: str, consumer: str) -> ConsumerInfo:
        action = f"read consumer {stream}/{consumer}"
        return await self.call(self.js.consumer_info(stream, consumer), action)

    async def consumers_info(self, stream: str) -> list[ConsumerInfo]:
        action = f"list the consumers of {stream}"
        return list(await self.call(self.js.consumers_info(stream), action))

    async def message(
        self, stream: str, seq: int, *, subject: str | None = None, next: bool = False
    ) -> StoredMessage | None:
        """The message at `seq` (with `next`: the first at or after it on `subject`); None if
        there is none."""
        action = f"read {stream} seq {seq}"
        try:
            raw = await self.call(
                self.js.get_msg(stream, seq=seq, subject=subject, next=next, direct=True),
                action,
            )
        except NotFound:
            return None
        return _stored_message(raw)

    async def messages(
        self,
        stream: str,
        *,
        seq: int = 1,
        subject: str | None = None,
        limit: int = BATCH_GET,
        up_to_seq: int | None = None,
        last_of: str | None = None,
    ) -> list[StoredMessage]:
        """At most `limit` messages from `seq` on, only those on `subject` (wildcards allowed),
        none after `up_to_seq`, oldest first; with `last_of` (a wildcard subject): the newest
        message of each subject it matches instead. By batched direct gets (coordinator.direct)."""
        out: list[StoredMessage] = []
        wanted = dict(next_by_subj=subject, up_to_seq=up_to_seq)
        req: dict[str, Any] = {k: v for k, v in wanted.items() if v is not None}
        if last_of:
            req["multi_last"] = [last_of]
        while len(out) < limit:
            ask = {**req, "batch": min(BATCH_GET, limit - len(out)), "seq": max(1, seq)}
            raws, more = await self.call(
                batch_get(self.nc, self.js._prefix, stream, ask, self.settings.nats_js_timeout_s),
                f"read {stream} from seq {seq}",
            )
            got = [_stored_message(raw) for raw in raws]
            if up_to_seq is not None and got and got[-1].seq > up_to_seq:  # only multi_last
                got, more = [m for m in got if m.seq <= up_to_seq], False  # honours up_to_seq
            out.extend(got)
            if not got or not more:
                break
            seq = got[-1].seq + 1
        return out

    async def last_message(self, stream: str, subject: str) -> StoredMessage | None:
        """The newest message on `subject` in `stream`, or None."""
        try:
            raw = await self.call(
                self.js.get_last_msg(stream, subject, direct=True),
                f"read the last message on {subject}",
            )
        except NotFound:
            return None
        return _stored_message(raw)


class JobFollower:
    """A core-NATS subscription to one job's lifecycle events; see `Bus.follow_job`."""

    def __init__(self, bus: Bus, job_id: str) -> None:
        self.bus = bus
        self.job_id = job_id
        self._sub: Any = None

    async def __aenter__(self) -> JobFollower:
        subject = self.bus.subjects.job_events(self.job_id)
        self._sub = await self.bus.call(self.bus.nc.subscribe(subject), f"subscribe to {subject}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()

    async def outcome(self, within_s: float | None) -> Envelope | None:
        """The job's terminal event (one of events.TERMINAL_NAMES) as it is
        published, or None if none comes within `within_s` (None: wait for ever). Messages on
        the job's subjects that are not valid events are skipped."""
        loop = asyncio.get_running_loop()
        deadline = math.inf if within_s is None else loop.time() + within_s
        while (left := deadline - loop.time()) > 0:
            try:
                msg = await self._sub.next_msg(timeout=None if math.isinf(left) else left)
            except (TimeoutError, nats.errors.TimeoutError):
                return None
            try:
                _, name = self.bus.subjects.parse_job_event(msg.subject)
                if name in TERMINAL_NAMES:
                    return decode(msg.data).at(None, msg.subject)
            except JetgridError as exc:
                log.info("ignored a message on %s: %s", msg.subject, exc)
        return None


def _stored_message(raw: Any) -> StoredMessage:
    headers = {k: v for k, v in (raw.headers or {}).items() if isinstance(v, str)}
    when = raw.time if isinstance(getattr(raw, "time", None), datetime) else None
    return StoredMessage(raw.subject or "", int(raw.seq or 0), raw.data or b"", when, headers)
