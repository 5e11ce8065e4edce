"""The child process of a replay's reader (projections.reader): ``python -m
jetgrid.projections.pump <fd>``, its spec pickled on stdin. It subscribes as the spec says,
writes every message to the pipe `fd` as one frame (the format is in projections.reader's
docstring), each with the codec's byte scan already run, and ends with the end frame.

What it holds is bounded: its Cursor stops the consumer while more than the spec's
``pipe_high`` bytes wait for the pipe, and what waits, waits in its own queue of chunks, which
go to the pipe's transport only as the pipe drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import sys
from collections import deque
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

from nats.aio.msg import Msg

from jetgrid.coordinator import errors
from jetgrid.coordinator.position import stored_at
from jetgrid.events.bounds import cleared
from jetgrid.projections.reader import CLEARED, END, HEAD, Cursor, frame

__all__ = ["main"]

_FLUSH_BYTES = 1 << 16
_FLUSH_S = 0.02


def _headers_json(headers: Mapping[str, str]) -> bytes:
    """A message's headers as a JSON object, each string quoted by the json module's own
    encoder: a few times cheaper than json.dumps of a one-header dict, once per message."""
    fields = ",".join(f"{_quote(str(k))}:{_quote(str(v))}" for k, v in headers.items())
    return f"{{{fields}}}".encode()


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
        transport.write(frame(0, 0, end[0].encode(), end[1].encode(), b""))
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
                held=self.held, high=high, low=high // 4,
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
            return END.decode(), ""
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
            flags = CLEARED if cleared(data) else 0
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
    """The child: ``python -m jetgrid.projections.pump <fd>``, its spec pickled on stdin."""
    spec = pickle.loads(sys.stdin.buffer.read())
    asyncio.run(_pump(spec, int(argv[1])))


if __name__ == "__main__":
    main(sys.argv)
