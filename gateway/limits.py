"""What one API key, or the whole gateway, may hold open at once: streams and waits.

A *stream* is an open job event stream (``GET /v1/jobs/{id}/events``) or a streaming OpenAI or
Ollama response; a *wait* is a request held open for an outcome (``?wait=`` on ``/v1/jobs``, a
non-streaming LLM request). Each is counted per API key (per client address on an open
gateway) and per gateway (`Settings.max_streams_per_key`, `max_streams`, `max_waits_per_key`,
`max_waits`). Past a limit the request is answered 429 with ``Retry-After`` in the API's error
shape, before anything is submitted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from jetgrid.coordinator.settings import Settings
from jetgrid.gateway.auth import SCOPE_KEY, ApiKey
from jetgrid.gateway.errors import HTTPError
from jetgrid.gateway.ratelimit import Slots

RETRY_AFTER_S = 5
Kind = Literal["stream", "wait"]
Handler = Callable[[Request], Awaitable[Response]]
_WHAT = {"stream": "open streams", "wait": "open waits"}


def owner(request: Request) -> tuple[str, str]:
    """(the owner a lease is counted against, how to name it in an error)."""
    key: ApiKey | None = request.scope.get(SCOPE_KEY)
    if key is not None:
        return f"key:{key.hash}", f"API key '{key.name}'"
    host = request.client.host if request.client else "unknown"
    return f"addr:{host}", f"Client {host}"


@dataclass(eq=False)
class Lease:
    """One held slot; `release` gives it back (idempotent)."""

    slots: Slots
    owner: str
    held: bool = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slots.release(self.owner)


class Limits:
    """The gateway's stream and wait slots."""

    def __init__(self, settings: Settings) -> None:
        self.slots: dict[Kind, Slots] = {
            "stream": Slots(settings.max_streams_per_key, settings.max_streams),
            "wait": Slots(settings.max_waits_per_key, settings.max_waits),
        }
        self._setting = {
            "stream": ("max_streams_per_key", "max_streams"),
            "wait": ("max_waits_per_key", "max_waits"),
        }

    def lease(self, request: Request, kind: Kind) -> Lease:
        """Take a slot of `kind` for the caller, or raise 429 naming the limit it is over."""
        who, name = owner(request)
        slots = self.slots[kind]
        refused = slots.acquire(who)
        if refused is None:
            return Lease(slots, who)
        per_owner, total = self._setting[kind]
        if refused == "owner":
            message = (
                f"{name} already holds {slots.per_owner} {_WHAT[kind]}, its limit "
                f"({per_owner}); close one or retry in {RETRY_AFTER_S} s."
            )
        else:
            message = (
                f"This gateway already holds {slots.total} {_WHAT[kind]}, its limit ({total}); "
                f"retry in {RETRY_AFTER_S} s."
            )
        raise HTTPError(429, message, headers={"Retry-After": str(RETRY_AFTER_S)})


def holds_wait(handler: Handler) -> Handler:
    """Wrap a route that may wait (``?wait=S``, S > 0): the wait takes one of the caller's wait
    slots for as long as the request runs (429 past the limit, before the handler runs)."""

    async def limited(request: Request) -> Response:
        raw = request.query_params.get("wait")
        if raw in (None, "") or raw.strip("0.") == "":  # absent, empty or zero: no wait
            return await handler(request)
        lease = request.app.state.gateway.limits.lease(request, "wait")
        try:
            return await handler(request)
        finally:
            lease.release()

    limited.__name__ = handler.__name__
    limited.__doc__ = handler.__doc__
    return limited
