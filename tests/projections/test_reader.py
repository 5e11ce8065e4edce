"""A stream read in a child process (projections.reader) gives exactly what an in-process read
gives: the same Items in the same order, so the same read models; and a child that cannot
read says why in one sentence."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from datetime import timedelta

import pytest

from jetgrid.coordinator.errors import NatsError, NatsUnavailable
from jetgrid.events import JOB_EVENTS, JOBS, WORKERS
from jetgrid.events.bounds import Cleared, cleared
from jetgrid.projections.folder import stream_filters
from jetgrid.projections.items import Item
from jetgrid.projections.pump import _headers_json, _Out, _Pump, _pump
from jetgrid.projections.reader import PIPE_HIGH, Cursor, _Frames, _raise_for, read_apart
from jetgrid.projections.replay import read_stream, replay

pytestmark = pytest.mark.integration


class Collect:
    def __init__(self) -> None:
        self.batches: list[list[Item]] = []

    async def apply(self, items: list[Item]) -> None:
        self.batches.append(items)

    @property
    def items(self) -> list[Item]:
        return [it for b in self.batches for it in b]


async def _history(log, nc) -> None:
    for w in range(3):
        await log.register(f"w{w}")
        await log.pings(f"w{w}", 1, 60, miss={7, 8, 30 + w})
    for j in range(6):
        await log.job(f"j{j}", f"w{j % 3}", 5 + j, "failed" if j % 4 == 0 else "completed")
    js = nc.jetstream()
    subjects = log.settings.subjects
    # not events: kept, counted as invalid, with their headers
    await js.publish(subjects.worker_event("w1", "heartbeat"), b"\xff{not json")
    await js.publish(
        subjects.worker_event("w2", "heartbeat"), b"[]", headers={"Nats-Msg-Id": "x", "k": "v"}
    )
    await log.pings("w0", 61, 70)


async def test_the_child_delivers_the_same_items_as_an_in_process_read(log, nc, bus) -> None:
    await _history(log, nc)
    for logical, (stream, subject) in stream_filters(log.settings).items():
        last = await bus.last_seq(stream)
        for start, target, batch in ((1, last, 50), (5, last - 3, 7), (last, last, 1)):
            here, apart = Collect(), Collect()
            args = (logical, stream, subject, target, None, batch, None)
            n = await read_stream(bus.js, here, *args, start=start)
            m = await read_apart(log.settings, apart, *args, start=start)
            assert n == m == max(0, target - start + 1) == len(apart.items)
            assert apart.items == here.items
            assert all(len(b) <= batch for b in apart.batches)
    workers = Collect()
    stream = log.settings.streams(WORKERS)
    await read_apart(
        log.settings, workers, WORKERS, stream, ">", await bus.last_seq(stream), None, 100, None
    )
    assert any(it.headers == {"Nats-Msg-Id": "x", "k": "v"} for it in workers.items)


async def test_the_child_clears_exactly_the_messages_the_codec_scan_would(log, nc, bus) -> None:
    """The child runs the codec's byte scan for the parent: a message it clears arrives as
    Cleared bytes (not scanned again), any other as plain bytes (scanned, walked, refused, or
    read by the checked path: one that holds a NaN or Infinity token)."""
    await log.register("w0")
    await log.pings("w0", 1, 3)
    subject = log.settings.subjects.worker_event("w0", "heartbeat")
    deep = b"[" * 40 + b"]" * 40  # nests past MAX_DEPTH
    odd = (deep, b'{"n": 12345678901234567890123}', b'{"s": "NaN"}', b"\xff{not json", b"[]")
    for body in odd:
        await nc.jetstream().publish(subject, body)
    stream = log.settings.streams(WORKERS)
    apart = Collect()
    await read_apart(
        log.settings, apart, WORKERS, stream, ">", await bus.last_seq(stream), None, 100, None
    )
    assert apart.items
    for it in apart.items:
        assert (type(it.data) is Cleared) == cleared(bytes(it.data)), it.data
    # too deep, too big an integer and a NaN token are left to the parent; not JSON is within
    # the bounds (the parse refuses it), as is a JSON document that is no event
    kinds = [bytes, bytes, bytes, Cleared, Cleared]
    assert [type(it.data) for it in apart.items[-5:]] == kinds
    assert all(type(it.data) is Cleared for it in apart.items[:-5])  # events jetgrid wrote


async def test_the_child_stops_at_the_same_time_limit(log, nc, bus) -> None:
    await _history(log, nc)
    stream = log.settings.streams(WORKERS)
    last = await bus.last_seq(stream)
    everything = Collect()
    await read_stream(bus.js, everything, WORKERS, stream, ">", last, None, 1000, None)
    cut = everything.items[len(everything.items) // 2].time
    for until in (cut, cut - timedelta(microseconds=1), cut + timedelta(microseconds=1)):
        here, apart = Collect(), Collect()
        await read_stream(bus.js, here, WORKERS, stream, ">", last, until, 1000, None)
        await read_apart(log.settings, apart, WORKERS, stream, ">", last, until, 1000, None)
        assert apart.items == here.items
        assert here.items and all(it.time <= until for it in here.items)


async def test_a_replay_read_apart_builds_the_same_read_models(log, nc, bus, make_store) -> None:
    await _history(log, nc)
    here = await replay(log.settings, make_store(), bus)
    # every stream read by a child (started first, folded in turn); then WORKERS alone (its
    # child started first, folded after the two job streams read here)
    for apart_min in (1, 100):
        apart = await replay(log.settings, make_store(), bus, apart_min=apart_min, batch_max=40)
        assert (apart.digest, apart.positions, apart.messages, apart.invalid) == (
            here.digest, here.positions, here.messages, here.invalid,
        )  # fmt: skip
    assert here.positions[WORKERS] >= 100 > max(here.positions[JOBS], here.positions[JOB_EVENTS])
    assert here.invalid == 2
    caps = {WORKERS: 90, JOBS: 3, JOB_EVENTS: 5}
    a = await replay(log.settings, make_store(), bus, until_seq=caps)
    b = await replay(log.settings, make_store(), bus, until_seq=caps, apart_min=1)
    assert a.digest == b.digest and a.positions == b.positions == caps


async def test_a_cursor_stops_while_its_reader_holds_too_much_and_misses_nothing(log, bus) -> None:
    await log.register("w0")
    await log.pings("w0", 1, 2000)
    stream = log.settings.streams(WORKERS)
    last = await bus.last_seq(stream)
    held: list[int] = []
    most = 0

    async def cb(msg, seq: int, ns: int) -> None:
        nonlocal most
        held.append(seq)
        most = max(most, len(held))

    cursor = Cursor(bus.js, stream, ">", 1, cb, held=held.__len__, high=50, low=10)
    seen: list[int] = []
    await cursor.open()
    try:
        async with asyncio.timeout(60):
            while len(seen) < last:  # a slow reader: five messages per loop step
                if held:
                    seen += held[:5]
                    del held[:5]
                    await cursor.drained()
                await asyncio.sleep(0)
    finally:
        await cursor.close()
    assert seen == list(range(1, last + 1))  # each once, in order, across the stops
    assert cursor.stops >= 5
    assert most < last // 2  # what nats-py had queued past `high`, not the stream


async def test_a_child_that_stops_its_consumer_again_and_again_misses_nothing(log, nc, bus) -> None:
    await log.register("w0")
    await log.pings("w0", 1, 1500)
    stream = log.settings.streams(WORKERS)
    last = await bus.last_seq(stream)
    here, apart = Collect(), Collect()
    await read_stream(bus.js, here, WORKERS, stream, ">", last, None, 5, None)
    # the child stops whenever a byte waits for the pipe; the parent takes 5 messages a batch
    await read_apart(log.settings, apart, WORKERS, stream, ">", last, None, 5, None, pipe_high=1)
    assert [it.seq for it in apart.items] == list(range(1, last + 1))
    assert apart.items == here.items


async def test_a_child_that_cannot_reach_nats_says_so_in_one_sentence(log, bus) -> None:
    await log.register("w0")
    unreachable = log.settings.model_copy(
        update={"nats_url": "nats://127.0.0.1:1", "nats_connect_timeout_s": 0.2}
    )
    stream = log.settings.streams(WORKERS)
    with pytest.raises(NatsUnavailable) as got:
        await read_apart(unreachable, Collect(), WORKERS, stream, ">", 1, None, 10, None)
    text = str(got.value)
    assert "\n" not in text and "Traceback" not in text and "NATS" in text


async def test_a_child_refused_by_the_server_says_which_stream(log, bus) -> None:
    await log.register("w0")
    with pytest.raises(NatsError) as got:
        await read_apart(log.settings, Collect(), WORKERS, "NO_SUCH_STREAM", ">", 1, None, 10, None)
    assert "NO_SUCH_STREAM" in str(got.value) and "\n" not in str(got.value)


def _children() -> list[int]:
    """This process's reader children (not another test process's, under xdist)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    mine = b"jetgrid.projections.pump" in f.read()
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                if mine and parent == os.getpid():
                    pids.append(int(entry))
    return pids


async def test_a_child_killed_midway_is_an_error_not_a_short_read(log, nc, bus) -> None:
    await log.register("w0")
    await log.pings("w0", 1, 3000)  # more than a pipe holds: the end frame is still to come
    stream = log.settings.streams(WORKERS)
    last = await bus.last_seq(stream)

    class KillOnFirst(Collect):
        async def apply(self, items: list[Item]) -> None:
            if not self.batches:
                for pid in _children():
                    os.kill(pid, signal.SIGKILL)
            await super().apply(items)

    with pytest.raises(NatsError, match=f"reader of stream {stream} stopped before the end"):
        await read_apart(log.settings, KillOnFirst(), WORKERS, stream, ">", last, None, 1, None)


def test_how_a_childs_end_is_reported() -> None:
    _raise_for((b"end".decode(), ""), 0, "", "S")  # a clean end raises nothing
    with pytest.raises(NatsUnavailable, match=r"^NATS is down$"):
        _raise_for(("NatsUnavailable", "NATS is down"), 0, "", "S")
    with pytest.raises(NatsError, match=r"^odd$") as got:
        _raise_for(("ValueError", "odd"), 0, "", "S")  # never a class outside NatsError's
    assert type(got.value) is NatsError
    with pytest.raises(NatsError, match="stopped before the end: boom"):
        _raise_for(None, 1, "boom", "S")
    with pytest.raises(NatsError, match="exited with status -9"):
        _raise_for(None, -9, "", "S")


async def test_a_child_that_fails_unexpectedly_sends_an_error_not_a_clean_end(log, bus) -> None:
    await log.register("w0")
    stream = log.settings.streams(WORKERS)
    whole = {
        "settings": log.settings, "stream": stream, "subject": ">", "start": 1,
        "pipe_high": PIPE_HIGH,
    }  # fmt: skip
    for spec, why in (
        ({**whole, "target": 1}, "KeyError"),  # no until_time: fails before subscribing
        ({**whole, "target": None, "until_time": None}, "TypeError"),  # fails in the callback
    ):
        rfd, wfd = os.pipe()
        await _pump(spec, wfd)  # the child's body, run here
        with os.fdopen(rfd, "rb") as f:
            sent = f.read()
        frames = _Frames(WORKERS, 10)
        frames.data_received(sent)
        assert not frames.items and frames.end is not None
        name, text = frames.end
        assert name == "NatsError" and f"reader of stream {stream} failed: {why}" in text


def test_headers_go_to_the_parent_as_the_json_object_of_the_dict() -> None:
    for headers in (
        {"Nats-Msg-Id": "p1-5"},
        {"Nats-Msg-Id": 'a "quoted" \\ back\\slash', "k": "v"},
        {"x": "caf\u00e9 \u2603 \U0001f600", "tab": "\t", "nul": "\u0000"},
        {},
    ):
        assert json.loads(_headers_json(headers)) == headers


async def test_the_child_hands_the_pipe_a_chunk_at_a_time_while_it_is_not_read() -> None:
    """What waits for a slow parent waits in the pump's queue of chunks, not in the pipe
    transport's buffer (which copies all it holds on every write), and comes out whole and in
    order once the parent reads."""
    loop = asyncio.get_running_loop()
    rfd, wfd = os.pipe()
    out = _Out(loop.create_future())
    transport, _ = await loop.connect_write_pipe(lambda: out, os.fdopen(wfd, "wb", 0))
    pump = out.pump = _Pump({"stream": "S"}, transport, out)
    chunk = 1 << 16
    sent = bytearray()
    most = 0
    for i in range(64):  # 4 MiB, more than any pipe holds unread
        block = bytes([i]) * chunk
        pump.pending.extend(block)
        sent.extend(block)
        pump.flush()
        most = max(most, transport.get_write_buffer_size())
    assert out.paused and pump.chunks  # the pipe is full: the rest waits in the pump
    assert most <= 2 * chunk  # the transport never held more than about one chunk
    got = bytearray()
    reader = os.fdopen(rfd, "rb", 0)
    os.set_blocking(rfd, False)
    while len(got) < len(sent):
        with contextlib.suppress(BlockingIOError):
            got.extend(reader.read(1 << 20) or b"")
        await asyncio.sleep(0)  # the transport writes as the pipe drains, and resumes the pump
    assert got == sent
    assert pump.held() == 0
    transport.close()
    reader.close()
