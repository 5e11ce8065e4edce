"""A stream read in a child process, so that a long replay decodes and folds on one core while
nats-py receives on another.

`read_apart` feeds one stream into a `Batches` (a Folder) exactly as
`projections.replay.read_stream` does: the same ordered consumer, the same stop rules (the
target sequence, or the first message stored after `until_time`), the same Items in the same
order and batches of at most `batch_max`. The difference is where the consumer runs: a child
Python process (``python -m jetgrid.projections.reader``) connects with the same settings,
subscribes, and writes each message to a pipe as one frame:

    <seq: u64> <stored time, ns since the epoch: i64> <subject length: u32> <data length: u32>
    <headers length: u32> <flags: u8> <subject> <data> <headers as a JSON object, or nothing>

Flag 1 says the codec's byte scan cleared the data (events.codec.within_bounds): the child
scans every message, and the parent, whose decoding and folding are a replay's bound, hands the
fold the data as events.codec.Cleared bytes, which the codec does not scan again.

A frame with sequence 0 is the end: its subject is ``end`` or the name of the error the child
met (coordinator.errors), its data that error's one-sentence text. Receiving was about a
quarter of an in-process replay's CPU; with it in the child, the replay's own CPU per event
fell by about 30% (bench/README.md). The child costs about 0.3 s to start, so `replay` uses it
only for streams with many messages to read (projections.replay.APART_MIN).

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
from json.encoder import encode_basestring_ascii as _quote
from typing import IO, Any, Protocol

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from jetgrid.coordinator import errors
from jetgrid.coordinator.position import position_ns, stored_at
from jetgrid.coordinator.settings import Settings
from jetgrid.events.codec import Cleared, within_bounds
from jetgrid.projections.items import Item

__all__ = ["HEAD", "Batches", "Cursor", "read_apart", "subscribe_from"]

HEAD = struct.Struct("<QqIIIB")
_CLEARED = 1  # flag: the data is within the codec's bounds
_END = b"end"
_FLUSH_BYTES = 1 << 16
_FLUSH_S = 0.02
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


def _headers_json(headers: Mapping[str, str]) -> bytes:
    """A message's headers as a JSON object, each string quoted by the json module's own
    encoder: a few times cheaper than json.dumps of a one-header dict, once per message."""
    fields = ",".join(f"{_quote(str(k))}:{_quote(str(v))}" for k, v in headers.items())
    return f"{{{fields}}}".encode()


def _frame(seq: int, ns: int, subject: bytes, data: bytes, headers: bytes, flags: int = 0) -> bytes:
    head = HEAD.pack(seq, ns, len(subject), len(data), len(headers), flags)
    return head + subject + data + headers


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
                        Cleared(view[b:c]) if flags & _CLEARED else data[b:c],
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
            sys.executable, "-m", __name__, str(wfd),
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
    if end is not None and end[0] == _END.decode():
        return
    if end is not None:
        cls = getattr(errors, end[0], None)
        if not (isinstance(cls, type) and issubclass(cls, errors.NatsError)):
            cls = errors.NatsError
        raise cls(end[1])
    why = stderr or f"it exited with status {code}"
    raise errors.NatsError(f"The reader of stream {stream} stopped before the end: {why}.")


# -- the child ----------------------------------------------------------------------------------
async def _pump(spec: dict[str, Any], fd: int) -> None:
    """Subscribe as `spec` says and write every message to `fd` as a frame, then the end frame:
    ``end`` once the target or the time limit is reached, else the error met, as one sentence."""
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    out = _Out(closed)
    transport, _ = await loop.connect_write_pipe(lambda: out, os.fdopen(fd, "wb", 0))
    pump = out.pump = _Pump(spec, transport, out)
    end = ("NatsError", f"The reader of stream {pump.stream} was stopped.")
    try:
        end = await pump.run()
    finally:
        pump.flush(everything=True)
        transport.write(_frame(0, 0, end[0].encode(), end[1].encode(), b""))
        transport.close()
        await closed


class _Out(asyncio.Protocol):
    """The pipe's end in the child: hands the pump's chunks on as the pipe drains."""

    def __init__(self, closed: asyncio.Future[None]) -> None:
        self.closed = closed
        self.pump: _Pump | None = None
        self.paused = False

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.pump is not None:
            self.pump.push()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Pump:
    """The child's consumer: frames every message into `pending`, whole chunks of which wait in
    `chunks` and go to the pipe's transport only while it is not paused. The transport's buffer
    stays small: it drops what the pipe took from the front of one bytearray, a copy of all
    that is left, so a buffer of megabytes would cost that copy per write."""

    def __init__(self, spec: dict[str, Any], transport: asyncio.WriteTransport, out: _Out) -> None:
        self.spec = spec
        self.transport = transport
        self.out = out
        self.pending = bytearray()
        self.chunks: deque[bytes] = deque()
        self.queued = 0  # bytes in `chunks`
        self.done = asyncio.Event()
        self.failed: Exception | None = None
        self.stream = str(spec.get("stream"))

    def held(self) -> int:
        """Bytes framed and not yet taken by the pipe."""
        return self.transport.get_write_buffer_size() + self.queued + len(self.pending)

    def flush(self, *, everything: bool = False) -> None:
        """Queue what is framed and write queued chunks while the transport takes them (all of
        them with `everything`, at the end)."""
        if self.pending:
            chunk = bytes(self.pending)
            self.pending.clear()
            self.chunks.append(chunk)
            self.queued += len(chunk)
        self.push(everything=everything)

    def push(self, *, everything: bool = False) -> None:
        while self.chunks and (everything or not self.out.paused):
            chunk = self.chunks.popleft()
            self.queued -= len(chunk)
            self.transport.write(chunk)

    async def run(self) -> tuple[str, str]:
        """Read to the end; returns the end frame's (name, text)."""
        from jetgrid.coordinator.bus import Bus, translate

        bus = None
        try:
            spec = self.spec
            self.target, self.until = spec["target"], spec["until_time"]
            bus = await Bus.connect(spec["settings"], name="jetgrid-replay-reader")
            high = spec["pipe_high"]
            cursor = Cursor(
                bus.js, self.stream, spec["subject"], spec["start"], self.cb,
                held=self.held,
                high=high, low=high // 4,
            )  # fmt: skip
            try:
                await cursor.open()
                while not self.done.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_FLUSH_S):
                            await self.done.wait()
                    self.flush()
                    if not self.done.is_set():
                        await cursor.drained()
            except Exception as exc:
                raise translate(exc, f"read stream {self.stream}") from None
            finally:
                await cursor.close()
            if self.failed is not None:
                raise self.failed
            return _END.decode(), ""
        except errors.NatsError as exc:
            return type(exc).__name__, str(exc)
        except Exception as exc:  # the parent raises it as one sentence
            return "NatsError", f"The reader of stream {self.stream} failed: {exc!r}."
        finally:
            if bus is not None:
                with contextlib.suppress(Exception):
                    await bus.close()

    async def cb(self, msg: Msg, seq: int, ns: int) -> None:
        if self.done.is_set():
            return
        try:
            # the time as the parent will build it, compared as read_stream compares it
            if seq > self.target or (self.until is not None and stored_at(ns) > self.until):
                self.done.set()
                return
            headers = _headers_json(msg.headers) if msg.headers else b""
            subject = msg.subject.encode()
            data = msg.data
            pending = self.pending
            flags = _CLEARED if within_bounds(data) else 0
            pending.extend(HEAD.pack(seq, ns, len(subject), len(data), len(headers), flags))
            pending.extend(subject)
            pending.extend(data)
            pending.extend(headers)
            if len(pending) >= _FLUSH_BYTES:
                self.flush()
            if seq >= self.target:
                self.done.set()
        except Exception as exc:  # nats-py would swallow it and the read would never end
            self.failed = exc
            self.done.set()


def main(argv: list[str]) -> None:
    """The child: ``python -m jetgrid.projections.reader <fd>``, its spec pickled on stdin."""
    spec = pickle.loads(sys.stdin.buffer.read())
    asyncio.run(_pump(spec, int(argv[1])))


if __name__ == "__main__":
    main(sys.argv)
