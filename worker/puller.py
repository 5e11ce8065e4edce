"""Pull requests for one durable consumer, delivered into one callback subscription.

nats-py's ``fetch()`` makes a task and a timer per message and can hold a batch for its whole
timeout; this keeps raw ``CONSUMER.MSG.NEXT`` requests outstanding instead, each with its own
reply subject, and counts what each may still deliver. The worker asks for exactly as many
messages as it has free slots (and tier budget), so it never holds more than it can run.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger("jetgrid.worker.pull")

OnMessage = Callable[[Msg], Awaitable[None]]


@dataclass
class _Request:
    remaining: int
    expires_at: float
    no_wait: bool = False
    delivered: int = 0
    done: asyncio.Future[int] | None = None


class Puller:
    """Outstanding pull requests against `stream`/`consumer`; messages go to `on_message`."""

    def __init__(
        self,
        nc: NATS,
        stream: str,
        consumer: str,
        on_message: Callable[[Msg], None],
        *,
        on_end: Callable[[], None] | None = None,
        api_prefix: str = "$JS.API",
        expires_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nc = nc
        self.stream = stream
        self.consumer = consumer
        self.on_message = on_message
        self.on_end = on_end
        self.expires_s = expires_s
        self.clock = clock
        self._next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._ids = itertools.count(1)
        self._requests: dict[str, _Request] = {}
        self._sub: Subscription | None = None
        self.last_status: str | None = None
        self.delivered = 0  # messages received, ever (coordinator.fallback tells own takes apart)
        # Until when (clock) a sweep skips this consumer: a no-wait request found it drained.
        self.drained_until = -math.inf

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # connection already closed: nothing left to unsubscribe
                pass
            self._sub = None
        for req in self._requests.values():
            if req.done is not None and not req.done.done():
                req.done.set_result(req.delivered)
        self._requests.clear()

    async def withdraw(self) -> None:
        """Withdraw every open pull request (the worker's tier factor dropped to 0).

        A pull request cannot be cancelled, but the server delivers only to a reply subject
        someone still listens on: move to a fresh inbox and drain the old one (what was already
        on its way is still handled), so the old requests die unfilled.
        """
        if self._sub is None:
            return
        old = self._sub
        self._inbox = self.nc.new_inbox()
        self._requests.clear()
        self._sub = await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)
        try:
            await old.drain()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
            await self.nc.flush()
        except Exception:  # connection closing: the requests die with it
            pass

    @property
    def outstanding(self) -> int:
        """Messages the server may still deliver on requests that have not ended."""
        if not self._requests:
            return 0
        now = self.clock()
        for rid in [r for r, req in self._requests.items() if req.expires_at <= now]:
            self._end(rid)  # its 408 got lost (e.g. a reconnect): stop counting it
        return sum(r.remaining for r in self._requests.values())

    @property
    def long_polling(self) -> bool:
        """A long poll is open: new messages reach it as they arrive."""
        self.outstanding  # noqa: B018  (drops requests past their deadline)
        return any(not r.no_wait for r in self._requests.values())

    async def request(self, n: int, *, no_wait: bool = False) -> str | None:
        """Ask for up to `n` more messages: a long poll of `expires_s`, or, with `no_wait`, only
        what the consumer holds now (the server ends the request at once with a 404)."""
        if n <= 0 or self._sub is None:
            return None
        rid = str(next(self._ids))
        # The server side expires first; the local deadline is a fallback a little later.
        req = _Request(n, self.clock() + self.expires_s + 1.0, no_wait=no_wait)
        self._requests[rid] = req
        body: dict[str, object] = {"batch": n}
        if no_wait:  # with `expires` as well, the server would hold an empty request open
            body["no_wait"] = True
            req.done = asyncio.get_running_loop().create_future()
        else:
            body["expires"] = int(self.expires_s * 1e9)
        try:
            await self.nc.publish(
                self._next_subject, json.dumps(body).encode(), reply=f"{self._inbox}.{rid}"
            )
        except Exception:
            self._end(rid)
            raise
        return rid

    async def take_now(self, n: int) -> int:
        """A no-wait request for up to `n` messages; returns how many it delivered."""
        rid = await self.request(n, no_wait=True)
        req = None if rid is None else self._requests.get(rid)
        if rid is None or req is None or req.done is None:
            return 0
        # asyncio.wait, not wait_for: no task and no shield per request (one per job taken)
        await asyncio.wait((req.done,), timeout=self.expires_s + 1.0)
        if req.done.done():
            return req.done.result()
        self._end(rid)  # the answer got lost (a reconnect): count what came
        return req.delivered

    def _end(self, rid: str) -> None:
        req = self._requests.pop(rid, None)
        if req is not None and req.done is not None and not req.done.done():
            req.done.set_result(req.delivered)

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status and not msg.data and not msg.reply:
            # Status messages come on the request's own reply subject.
            self.last_status = status
            if status == "100":  # idle heartbeat
                return
            # 404 no messages, 408 request expired, 409 leadership change / consumer deleted /
            # exceeded limits: the request is over either way.
            self._end(msg.subject.rsplit(".", 1)[-1])
            if self.on_end is not None:
                self.on_end()
            if status not in ("404", "408"):
                log.info(
                    "pull request on %s/%s ended: %s %s",
                    self.stream,
                    self.consumer,
                    status,
                    msg.headers.get("Description", "") if msg.headers else "",
                )
            return
        self.delivered += 1
        # A delivered message keeps its original subject, so it cannot name its request. The
        # server fills waiting requests first come, first served: charge the oldest open one.
        for rid, req in self._requests.items():
            req.remaining -= 1
            req.delivered += 1
            if req.remaining <= 0:
                self._end(rid)
            break
        self.on_message(msg)
