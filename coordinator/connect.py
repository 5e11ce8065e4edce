"""Open a NATS connection from Settings: servers, credentials, TLS, inbox prefix, error reporting.

A permission violation never raises in nats-py: the server's ``-ERR`` arrives at ``error_cb`` and
the call that caused it times out. The connection made here keeps the last such error, so callers
(see `denied_or`) can turn a bare timeout into PermissionDenied naming the subject.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NATS

from jetgrid.coordinator.errors import NatsUnavailable, PermissionDenied
from jetgrid.coordinator.settings import Settings

log = logging.getLogger("jetgrid.nats")
T = TypeVar("T")

INITIAL_CONNECT_ATTEMPTS = 3


@dataclass
class ConnectionErrors:
    """What error_cb saw; `last_permission` is the latest permissions-violation text."""

    last_permission: str | None = None
    seen: list[str] = field(default_factory=list)

    def record(self, text: str) -> None:
        self.seen = [*self.seen[-49:], text]
        if "permissions violation" in text.lower():
            self.last_permission = text


@dataclass
class Continuity:
    """Since when (wall clock, epoch seconds) the connection has been up without a break; inf
    while it is down. A core-NATS subscription made before `since` has missed nothing since."""

    since: float = field(default_factory=time.time)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    ctx = ssl.create_default_context(
        cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None
    )
    if settings.nats_tls_cert:
        ctx.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key or "") or None)
    return ctx


async def connect(settings: Settings, *, name: str, **extra: Any) -> NATS:
    """Connect with reconnects forever; raise NatsUnavailable if no server answers at first."""
    errors = ConnectionErrors()
    continuity = Continuity()

    async def on_error(exc: Exception) -> None:
        text = str(exc) or type(exc).__name__
        errors.record(text)
        if "permissions violation" in text.lower():
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
        # nats-py applies this to the first connect too, where -1 would retry forever: connect
        # with a few tries, then reconnect forever once connected (set below).
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
    ctx = tls_context(settings)
    if ctx is not None:
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
    nc._jetgrid_errors = errors  # type: ignore[attr-defined]
    nc._jetgrid_continuity = continuity  # type: ignore[attr-defined]
    return nc


def connection_continuity(nc: NATS) -> Continuity:
    """The connection's unbroken-since time (connections not made by `connect`: unknown, inf)."""
    got = getattr(nc, "_jetgrid_continuity", None)
    return got if isinstance(got, Continuity) else Continuity(math.inf)


def connection_errors(nc: NATS) -> ConnectionErrors:
    return getattr(nc, "_jetgrid_errors", None) or ConnectionErrors()


def denied_or(nc: NATS, exc: BaseException, action: str) -> BaseException:
    """Turn a timeout that a permissions violation caused into PermissionDenied."""
    errs = connection_errors(nc)
    if errs.last_permission:
        text, errs.last_permission = errs.last_permission, None
        return PermissionDenied(f"NATS refused to {action}: {text}")
    return exc


async def checked(nc: NATS, call: Awaitable[T], action: str) -> T:
    """Await `call`; if it fails because the server refused it, raise PermissionDenied instead.

    `action` names what was attempted, subject included ("publish to jetgrid.jobs.fast.echo").
    """
    try:
        return await call
    except Exception as exc:
        err = denied_or(nc, exc, action)
        if err is exc:
            raise
        raise err from exc
