"""A stream read in a child process, so that a long replay decodes and folds on one core while
nats-py receives on another.

`read_apart` feeds one stream into a `Batches` (a Folder) exactly as
`projections.replay.read_stream` does: the same ordered consumer, the same stop rules (the
target sequence, or the first message stored after `until_time`), the same Items in the same
order and batches of at most `batch_max`. The difference is where the consumer runs: a child
Python process (``python -m jetgrid.projections.pump``) connects with the same settings,
subscribes, and writes each message to a pipe as one frame:

    <seq: u64> <stored time, ns since the epoch: i64> <subject length: u32> <data length: u32>
    <headers length: u32> <flags: u8> <subject> <data> <headers as a JSON object, or nothing>

Flag 1 says the codec's byte scan cleared the data (events.bounds.cleared): the child
scans every message, and the parent, whose decoding and folding are a replay's bound, hands the
fold the data as events.bounds.Cleared bytes, which the codec does not scan again.

A frame with sequence 0 is the end: its subject is ``end`` or the name of the error the child
met (coordinator.errors), its data that error's one-sentence text. Receiving was about a
quarter of an in-process replay's CPU; with it in the child, the replay's own CPU per event
fell by about 30% (bench/README.md). The child costs about 0.25 s to start, so `replay` uses
it only for streams with many messages to read (projections.replay.APART_MIN).

What either side holds is bounded, whatever the stream's length: the parent stops reading the
pipe while it holds two batches, and the child's `Cursor` stops its consumer while more than
`PIPE_HIGH` bytes wait for the pipe (as `read_stream`'s stops while it holds two batches the
fold has not taken).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pickle
import struct
import sys
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import datetime
from typing import IO, Any, Protocol

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from jetgrid.coordinator import errors
from jetgrid.coordinator.position import position_ns, stored_at
from jetgrid.coordinator.settings import Settings
from jetgrid.events.bounds import Cleared
from jetgrid.projections.items import Item

__all__ = ["CLEARED", "END", "HEAD", "Batches", "Cursor", "frame", "read_apart", "subscribe_from"]

HEAD = struct.Struct("<QqIIIB")
CLEARED = 1  # flag: the codec's byte scan cleared the data (events.bounds.cleared)
END = b"end"
PIPE_SIZE = 1 << 20  # what the pipe itself holds, where the system allows (_widen)
PIPE_HIGH = 32 << 20  # bytes waiting for the pipe past which the child stops its consumer


class Batches(Protocol):
    """What a replay feeds: a Folder, the audit's gatherer, or the archiver's collector."""

    def apply(self, items: list[Item]) -> Awaitable[Any]: ...


async def subscribe_from(
    js: JetStreamContext, stream: str, subject: str, start: int, cb: Callable[[Msg], Any]
) -> Any:
    """An ordered consumer on `stream` (`subject`) from sequence `start`, delivering to `cb`."""
    return await js.subscribe(
        subject,
        stream=stream,
        cb=cb,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        config=ConsumerConfig(opt_start_seq=start),
        pending_msgs_limit=-1,
        pending_bytes_limit=-1,
    )


class Cursor:
    """A stream read in order from a sequence by an ordered consumer that stops while its
    reader holds too much: past `high` (as `held()` counts) it unsubscribes, and at `low` or
    less (`drained`, called as the reader hands on what it holds) it subscribes again from the
    sequence after the last message it delivered. `cb(msg, seq, stored_ns)` sees each message
    once, in sequence order, across any number of stops.

    Holding the callback would not do: nats-py answers the server's flow control as messages
    arrive, not as they are handled, so the server would go on sending into nats-py's queue.
    """

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        subject: str,
        start: int,
        cb: Callable[[Msg, int, int], Awaitable[None]],
        *,
        held: Callable[[], int],
        high: int,
        low: int,
    ) -> None:
        self.js, self.stream, self.subject, self.cb = js, stream, subject, cb
        self.held, self.high, self.low = held, high, low
        self.next = start  # the sequence to subscribe from
        self.stops = 0
        self._sub: Any = None
        self._stopping: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Subscribe from the start sequence."""
        self._sub = await subscribe_from(self.js, self.stream, self.subject, self.next, self._on)

    async def drained(self) -> None:
        """The reader handed some on: subscribe again if stopped and it holds `low` or less."""
        if self._sub is None and self.held() <= self.low:
            if self._stopping is not None:
                await self._stopping
                self._stopping = None
            await self.open()

    async def close(self) -> None:
        """Unsubscribe for good (also while stopped)."""
        if self._stopping is not None:
            await self._stopping
            self._stopping = None
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on(self, msg: Msg) -> None:
        seq, ns = position_ns(msg)
        if seq < self.next:
            return  # already delivered by the consumer before a stop
        self.next = seq + 1
        await self.cb(msg, seq, ns)
        if self._sub is not None and self.held() > self.high:
            # In a task of its own: unsubscribing cancels the task running this callback.
            sub, self._sub = self._sub, None
            self.stops += 1
            self._stopping = asyncio.create_task(self._unsubscribe(sub))

    @staticmethod
    async def _unsubscribe(sub: Any) -> None:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def frame(seq: int, ns: int, subject: bytes, data: bytes, headers: bytes) -> bytes:
    """One frame with no flags (the end frame; the child frames messages in place)."""
    return HEAD.pack(seq, ns, len(subject), len(data), len(headers), 0) + subject + data + headers


# -- the parent ---------------------------------------------------------------------------------
class _Headers(Mapping[str, str]):
    """A message's headers as the child sent them (a JSON object), parsed on first use: the
    fold reads them only for a message it cannot use, but every event a jetgrid process stores
    carries a ``Nats-Msg-Id``, and parsing each one cost a replay about a tenth of its CPU."""

    __slots__ = ("_parsed", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._parsed: dict[str, str] | None = None

    def _map(self) -> dict[str, str]:
        if self._parsed is None:
            self._parsed = json.loads(self._raw)
        return self._parsed

    def __getitem__(self, name: str) -> str:
        return self._map()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())

    def __repr__(self) -> str:
        return repr(self._map())


class _Frames(asyncio.Protocol):
    """Turns the pipe's bytes into Items; pauses the pipe while it holds `limit` of them."""

    def __init__(self, logical: str, limit: int) -> None:
        self.logical = logical
        self.limit = limit
        self.items: deque[Item] = deque()
        self.rest = b""
        self.end: tuple[str, str] | None = None  # (error name or "end", text)
        self.closed = False
        self.paused = False
        self.wake = asyncio.Event()
        self.transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.rest:
            data = self.rest + data
        pos, n, size, logical, items = 0, len(data), HEAD.size, self.logical, self.items
        view = memoryview(data)
        while n - pos >= size:
            seq, ns, ls, ld, lh, flags = HEAD.unpack_from(data, pos)
            a = pos + size
            b = a + ls
            c = b + ld
            end = c + lh
            if end > n:
                break
            if seq == 0:
                self.end = (data[a:b].decode(), data[b:c].decode())
            else:
                items.append(
                    Item(
                        logical, seq, data[a:b].decode(),
                        Cleared(view[b:c]) if flags & CLEARED else data[b:c],
                        stored_at(ns),
                        _Headers(data[c:end]) if lh else None,
                    )
                )  # fmt: skip
            pos = end
        self.rest = data[pos:]
        if len(items) >= self.limit and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self.wake.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.wake.set()

    def take(self, most: int) -> list[Item]:
        items = self.items
        out = [items.popleft() for _ in range(min(len(items), most))]
        if self.paused and len(items) < self.limit and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return out


async def read_apart(
    settings: Settings,
    folder: Batches,
    logical: str,
    stream: str,
    subject: str,
    target: int,
    until_time: datetime | None,
    batch_max: int,
    progress: Callable[[str, int, int], None] | None,
    *,
    start: int = 1,
    pipe_high: int = PIPE_HIGH,
) -> int:
    """`projections.replay.read_stream`, with the consumer in a child process (module
    docstring) that stops it while `pipe_high` bytes wait for the pipe. Raises the child's
    error (a coordinator.errors.NatsError) if it meets one."""
    if target < start:
        if progress:
            progress(logical, target, target)
        return 0
    spec = {
        "settings": settings,
        "stream": stream,
        "subject": subject,
        "start": start,
        "target": target,
        "until_time": until_time,
        "pipe_high": pipe_high,
    }
    stderr = tempfile.TemporaryFile()  # read only if the child stops without its end frame
    rfd, wfd = os.pipe()
    _widen(wfd)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jetgrid.projections.pump", str(wfd),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr, pass_fds=(wfd,),
        )  # fmt: skip
    finally:
        os.close(wfd)
    loop = asyncio.get_running_loop()
    frames = _Frames(logical, 2 * batch_max)
    try:
        transport, _ = await loop.connect_read_pipe(lambda: frames, os.fdopen(rfd, "rb", 0))
    except BaseException:
        os.close(rfd)
        proc.kill()
        raise
    fed = 0
    try:
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps(spec))
        proc.stdin.close()
        while True:
            if not frames.items and frames.end is None and not frames.closed:
                frames.wake.clear()
                await frames.wake.wait()
            if frames.items:
                items = frames.take(batch_max)
                await folder.apply(items)
                fed += len(items)
                if progress:
                    progress(logical, items[-1].seq, target)
            elif frames.end is not None or frames.closed:
                break
        await proc.wait()
        _raise_for(frames.end, proc.returncode, _last_line(stderr), stream)
    finally:
        transport.close()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        stderr.close()
    if progress:
        progress(logical, target, target)
    return fed


def _widen(fd: int) -> None:
    """Ask for a pipe of PIPE_SIZE bytes (Linux's default is 64 KiB), so that the child writes
    and this process reads in fewer, larger steps. Elsewhere, or past the system's limit
    (/proc/sys/fs/pipe-max-size), the pipe stays as it is."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def _last_line(file: IO[bytes]) -> str:
    file.seek(0)
    text = file.read().decode(errors="replace").strip()
    return text.splitlines()[-1] if text else ""


def _raise_for(end: tuple[str, str] | None, code: int | None, stderr: str, stream: str) -> None:
    if end is not None and end[0] == END.decode():
        return
    if end is not None:
        cls = getattr(errors, end[0], None)
        if not (isinstance(cls, type) and issubclass(cls, errors.NatsError)):
            cls = errors.NatsError
        raise cls(end[1])
    why = stderr or f"it exited with status {code}"
    raise errors.NatsError(f"The reader of stream {stream} stopped before the end: {why}.")
