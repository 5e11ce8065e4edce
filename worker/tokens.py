"""Token streaming: a running job's output, chunk by chunk, kept for a day in TOKENS.

Subject ``<prefix>.tokens.<job_id>.<worker_id>`` (a worker may publish only under its own id);
each message is ``{"job_id", "attempt", "i", "text"}`` with `i` counting the attempt's messages
from 0. Readers take chunks only from the worker and attempt that the job's latest
`claimed`/`started` event names. Chunks are published without a reply subject, so no ack is
awaited on the hot path; the TOKENS stream stores them all the same, so a client can resume a
stream on any gateway (gateway.chunks). The job's last `flush` (before its result is stored)
waits for TOKENS to ack its chunk (an empty one if nothing is left), so every chunk of the attempt
is stored before its terminal event: one ack per job, not per chunk. If TOKENS does not ack
within `ACK_WITHIN_S` (not provisioned, NATS slow) the job goes on, and readers fill in the rest
from the `completed` output.

Chunks are coalesced: the first goes out at once, later ones are buffered and flushed at most
every `flush_s` (30 ms), so a backend producing hundreds of tokens per second costs tens of
messages, not hundreds, and a reader still sees text arrive smoothly. A buffer still pending when
the job ends is flushed by its timer; if the job's terminal event overtakes it, readers fill the
gap from the `completed` output.
"""

from __future__ import annotations

import asyncio
import json
import logging

from jetgrid.coordinator.bus import Bus
from jetgrid.events import JetgridError

log = logging.getLogger("jetgrid.worker.tokens")

FLUSH_S = 0.03
ACK_WITHIN_S = 1.0


class TokenPublisher:
    """Publishes one job's output chunks in order, coalesced to one message per `flush_s`."""

    def __init__(
        self, bus: Bus, subject: str, job_id: str, attempt: int, flush_s: float = FLUSH_S
    ) -> None:
        self.bus = bus
        self.subject = subject
        self.job_id = job_id
        self.attempt = attempt
        self.flush_s = flush_s
        self.i = 0
        self._buf: list[str] = []
        self._last = float("-inf")
        self._timer: asyncio.TimerHandle | None = None

    async def __call__(self, text: str) -> None:
        self._buf.append(text)
        loop = asyncio.get_running_loop()
        if loop.time() - self._last >= self.flush_s:
            await self._send()
        elif self._timer is None:
            delay = self._last + self.flush_s - loop.time()
            self._timer = loop.call_later(max(0.0, delay), self._flush_later)

    def _flush_later(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self._send())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def flush(self) -> None:
        """The job's output is complete: publish what is buffered and wait until TOKENS has
        stored every chunk (a job that streamed nothing publishes nothing)."""
        if self.i == 0 and not self._buf:
            return
        try:
            await self._send(ack_within_s=ACK_WITHIN_S, empty=True)
        except JetgridError as exc:
            log.info("token chunks of job %s may not all be stored: %s", self.job_id, exc)

    async def _send(self, *, ack_within_s: float | None = None, empty: bool = False) -> None:
        """Publish whatever is buffered as one chunk (with `empty`, even nothing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buf and not empty:
            return
        text, self._buf = "".join(self._buf), []
        self._last = asyncio.get_running_loop().time()
        body = json.dumps(
            {"job_id": self.job_id, "attempt": self.attempt, "i": self.i, "text": text}
        )
        self.i += 1
        if ack_within_s is None:
            await self.bus.chunk(self.subject, body.encode())
        else:  # stored in order: its ack means every earlier chunk of this connection is stored
            publish = self.bus.js.publish(self.subject, body.encode(), timeout=ack_within_s)
            await self.bus.call(publish, f"publish to {self.subject}")
