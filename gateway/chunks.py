"""Durable token chunks: read a job attempt's chunks back from TOKENS, and the cursor that
relays each chunk of an attempt exactly once.

A worker publishes a running job's output on ``<prefix>.tokens.<job_id>.<worker>`` as
``{"job_id", "attempt", "i", "text"}`` (worker.tokens); the TOKENS stream keeps them (a day by
default), so any gateway can read an attempt's chunks back by subject (batched direct gets, no
consumer) and continue a stream after the last one its client saw.

**Cursor ids.** A client's position is ``<seq>`` after a lifecycle event (its JOB_EVENTS
sequence) and ``<seq>:<attempt>:<offset>`` after a chunk: `seq` is the last lifecycle event
sent before it, `offset` the number of characters of that attempt's output the client has
(`chunk_id`, `parse_cursor`). Offsets, not chunk numbers, so a resume is exact whichever
gateway served the earlier part and however it split the text.

**Exactness.** Chunks are published without awaiting acks; the worker waits for the ack of the
job's last one before storing the result (worker.tokens), so normally all are stored before the
terminal event; when TOKENS did not answer, some may be missing. `TokenCursor` takes chunks of
one attempt strictly in order of `i` (a live chunk after a gap waits for the gap to be read back
from TOKENS; a repeat is dropped); when the job completes, `tail` gives whatever part of the
output the relayed chunks did not cover. Chunks of an attempt other than the job's holder never
pass (gateway.live filters them).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jetgrid.events import JetgridError

if TYPE_CHECKING:
    from jetgrid.coordinator.bus import Bus
    from jetgrid.coordinator.settings import Settings

log = logging.getLogger("jetgrid.gateway.chunks")

MAX_CHUNKS = 100_000  # chunks read back for one attempt at most


@dataclass(frozen=True, slots=True)
class Chunk:
    """One token chunk: chunk `i` (from 0) of `attempt`, run by `worker`."""

    worker: str
    attempt: int
    i: int
    text: str


def parse_chunk(data: bytes, job_id: str, worker: str) -> Chunk | None:
    """The chunk in a message on ``tokens.<job_id>.<worker>``, or None for anything else."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict) or body.get("job_id") != job_id:
        return None
    attempt, i, text = body.get("attempt"), body.get("i"), body.get("text")
    if type(attempt) is not int or type(i) is not int or i < 0 or not isinstance(text, str):
        return None
    return Chunk(worker, attempt, i, text)


def chunk_id(seq: int, attempt: int, offset: int) -> str:
    """The SSE id of a chunk that ends at character `offset` of `attempt`'s output."""
    return f"{seq}:{attempt}:{offset}"


def parse_cursor(raw: str) -> tuple[int, tuple[int, int] | None] | None:
    """(lifecycle seq, (attempt, offset) or None) of an id from `chunk_id` or a bare
    sequence; None when `raw` is neither."""
    parts = raw.split(":")
    if len(parts) not in (1, 3) or not all(p.isdigit() and len(p) <= 18 for p in parts):
        return None
    nums = [int(p) for p in parts]
    return nums[0], (nums[1], nums[2]) if len(nums) == 3 else None


@dataclass
class TokenCursor:
    """Where one client is in the token output of the job's current attempt.

    `feed` takes chunks in any order and with repeats and returns the text to send now (an
    attempt's chunks strictly in order of `i`, each once); `skip` characters of the attempt the
    client already has are not sent again. `text` is the attempt's output relayed so far,
    skipped part included; `offset` its length.
    """

    worker: str | None = None
    attempt: int = 0
    skip: int = 0
    next_i: int = 0
    parts: list[str] = field(default_factory=list)
    offset: int = 0

    @classmethod
    def resume(cls, at: tuple[int, int] | None) -> TokenCursor:
        """A cursor for a client that has `offset` characters of `attempt` (None: nothing)."""
        if at is None:
            return cls()
        return cls(attempt=at[0], skip=at[1])

    def follows(self, worker: str, attempt: int) -> bool:
        return self.worker == worker and self.attempt == attempt

    def switch(self, worker: str, attempt: int) -> None:
        """Follow (worker, attempt) from its first chunk; a resumed attempt keeps its skip."""
        if self.follows(worker, attempt):
            return
        if self.worker is not None or self.attempt != attempt:
            self.skip = 0
        self.worker, self.attempt, self.next_i, self.parts, self.offset = worker, attempt, 0, [], 0

    def feed(self, chunk: Chunk) -> str | None:
        """The text of `chunk` to send now ("" when the client has it all), or None when it is
        not the next chunk of the followed attempt (a repeat, another attempt, or after a gap:
        see `gap`)."""
        if not self.follows(chunk.worker, chunk.attempt) or chunk.i != self.next_i:
            return None
        self.next_i += 1
        self.parts.append(chunk.text)
        start = self.offset
        self.offset += len(chunk.text)
        return chunk.text[max(0, self.skip - start) :]

    def gap(self, chunk: Chunk) -> bool:
        """Whether `chunk` comes after chunks of the followed attempt not yet relayed."""
        return self.follows(chunk.worker, chunk.attempt) and chunk.i > self.next_i

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def tail(self, output: str) -> str:
        """The part of a completed attempt's `output` not yet sent ("" if the relayed chunks
        are not a prefix of it: then they were the output's own text, as far as they go)."""
        sent = self.text
        if len(output) <= self.offset or not output.startswith(sent):
            return ""
        rest = output[max(self.offset, self.skip) :]
        self.parts.append(output[self.offset :])
        self.offset = len(output)
        return rest

    @property
    def position(self) -> int:
        """Characters of the followed attempt the client has (sent now or before it resumed)."""
        return max(self.offset, self.skip) if self.worker is not None else self.skip


async def stored_chunks(
    bus: Bus, settings: Settings, job_id: str, worker: str, attempt: int, after_i: int = -1
) -> list[Chunk]:
    """The chunks of `attempt` of `job_id` run by `worker` that TOKENS holds, with `i` over
    `after_i`, in order (empty when TOKENS cannot be read: the caller falls back to the output)."""
    subject = settings.subjects.tokens(job_id, worker)
    try:
        msgs = await bus.messages(settings.streams.tokens, subject=subject, limit=MAX_CHUNKS)
    except JetgridError as exc:
        log.info("could not read the token chunks of job %s: %s", job_id, exc)
        return []
    found = (parse_chunk(m.data, job_id, worker) for m in msgs)
    got = {c.i: c for c in found if c is not None and c.attempt == attempt and c.i > after_i}
    return [got[i] for i in sorted(got)]


class TokenRelay:
    """One client's relay of a job's chunks: live chunks through its `cursor`, gaps and
    catch-up read back from TOKENS, the output's tail at the end."""

    def __init__(self, bus: Bus, settings: Settings, job_id: str, cursor: TokenCursor) -> None:
        self.bus = bus
        self.settings = settings
        self.job_id = job_id
        self.cursor = cursor

    async def _read(self, worker: str, attempt: int) -> list[str]:
        cur = self.cursor
        found = await stored_chunks(
            self.bus, self.settings, self.job_id, worker, attempt, cur.next_i - 1
        )
        return [t for c in found if (t := cur.feed(c))]

    async def live(self, chunk: Chunk) -> list[str]:
        """The texts to send for a live chunk of the job's holder (any gap before it first),
        one per chunk."""
        cur = self.cursor
        cur.switch(chunk.worker, chunk.attempt)
        texts = await self._read(chunk.worker, chunk.attempt) if cur.gap(chunk) else []
        text = cur.feed(chunk)
        return [*texts, text] if text else texts

    async def catch_up(self, worker: str, attempt: int) -> list[str]:
        """The stored chunks of (worker, attempt) the client does not have yet."""
        self.cursor.switch(worker, attempt)
        return await self._read(worker, attempt)

    async def finish(
        self, worker: str | None, attempt: int, output: str | None, *, streamed: bool = False
    ) -> list[str]:
        """The rest of the final attempt: its stored chunks not yet sent, then the part of
        `output` (a completed job's text) they do not cover; with `streamed`, that part only
        if the attempt streamed anything (a job that never did is not turned into chunks)."""
        if worker is None:
            return []
        cur = self.cursor
        if output is not None and cur.follows(worker, attempt) and output.startswith(cur.text):
            if streamed and cur.next_i == 0 and cur.skip == 0:
                return []
            tail = cur.tail(output)  # the output has the rest: no need to read TOKENS
            return [tail] if tail else []
        texts = await self.catch_up(worker, attempt)
        if output is None or (streamed and cur.next_i == 0 and cur.skip == 0):
            return texts
        tail = cur.tail(output)
        return [*texts, tail] if tail else texts
