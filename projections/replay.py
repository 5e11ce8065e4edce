"""Replay: rebuild read models from sequence 1, or gather any fold's input, from the streams.

`replay` builds a fresh store with the projector's own fold (projections.folder.Folder),
folding the streams one after another (the fold does not depend on how they interleave: see
projections.fold), each up to the smallest of its last sequence when the replay starts, a
per-stream cap and a time. `read_stream` feeds one stream, in batches, into anything with the
`Folder.apply` method (the audit's gatherer too), through an ordered consumer. `feed` does the
same for a stream whose oldest messages may live in an archive (projections.archive): the
archived messages first, then the stream from the sequence after them, so the overlap is read
once; a gap between the two is an ArchiveError.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.position import stored_at
from jetgrid.coordinator.settings import Settings
from jetgrid.events import WORKERS, decode
from jetgrid.events.errors import InvalidEvent
from jetgrid.events.workers import WorkerRollup
from jetgrid.projections.archive import ArchiveDir
from jetgrid.projections.errors import ArchiveError
from jetgrid.projections.fold import Fold, FoldConfig, fold_config
from jetgrid.projections.folder import Folder, stream_filters
from jetgrid.projections.items import Item
from jetgrid.projections.prelude import before_cut, fold_rollups
from jetgrid.projections.reader import Batches, Cursor, read_apart
from jetgrid.projections.store import Store

__all__ = [
    "Batches",
    "ReplayResult",
    "all_rollups",
    "collector_paused",
    "feed",
    "first_time",
    "purged_rollups",
    "read_stream",
    "replay",
]


APART_MIN = 50_000
"""Streams with at least this many messages to read are received in a child process
(projections.reader): below it, the child's start (about a quarter of a second) costs more
than it saves."""


@dataclass
class ReplayResult:
    positions: dict[str, int]
    messages: int
    seconds: float
    digest: str
    invalid: int = 0  # messages the fold could not use: skipped and counted, never recorded

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else math.inf


async def replay(
    settings: Settings,
    store: Store,
    bus: Bus,
    config: FoldConfig | None = None,
    *,
    until_seq: Mapping[str, int] | None = None,
    until_time: datetime | None = None,
    batch_max: int = 20_000,
    progress: Callable[[str, int, int], None] | None = None,
    archive: ArchiveDir | None = None,
    apart_min: int = APART_MIN,
) -> ReplayResult:
    """Rebuild the read models into `store` (which must be empty) from sequence 1 (from the
    `archive`, then the streams, when an archive is given).

    When the first WORKERS message at hand (the archive's first, else the stream's) is not
    sequence 1, the rollups of the hours before it, stored by `until_time`, are folded first
    (projections.prelude): so a replay to a time inside purged hours gives the state at the end
    of the last hour whose rollup was stored by then.
    Streams are read one after another (WORKERS, JOBS, JOB_EVENTS), except that one with at
    least `apart_min` messages to read (and no archive) is read by a child process
    (projections.reader) started first and folded after the others, each up to the smallest
    of:
    its last sequence when the replay starts, ``until_seq[stream]`` (a per-stream sequence), and
    the last message whose stream timestamp is at or before `until_time`. `progress(stream,
    done, total)` is called after each batch. The store is written once per `batch_max`
    messages folded and at the end (where the commits fall does not change the rows). The
    streams are folded with the cyclic garbage collector paused (`collector_paused`).
    """
    config = config or fold_config(settings)
    await store.open(config)
    loaded = await store.load()
    if any(loaded.positions.values()) or loaded.workers:
        raise InvalidEvent(
            f"Replay needs a fresh database, but {store.display_url!r} already holds read models."
        )
    folder = Folder(settings, store, Fold(settings.subjects, config))
    if fold_rollups(folder.fold, await purged_rollups(bus, settings, until_time, archive=archive)):
        await folder.apply([])
    deferred = _Deferred(folder, batch_max)
    targets: dict[str, int] = {}
    for logical, (stream, _) in stream_filters(settings).items():
        last = await bus.last_seq(stream)
        cap = (until_seq or {}).get(logical)
        targets[logical] = last if cap is None else min(last, cap)
    with collector_paused():
        t0 = time.perf_counter()
        filters = stream_filters(settings)
        # A stream a child process reads is started first and folded last: its child connects and
        # fills its pipe (about half a second) while this process folds the streams it reads
        # itself. The read models do not depend on the order (projections.fold).
        later = [s for s in filters if archive is None and targets[s] >= apart_min]
        here: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # they are folded
        ahead: list[asyncio.Task[int]] = []
        for logical in later:
            gate = _Gated(deferred, ahead[-1] if ahead else here)
            stream, subject = filters[logical]
            ahead.append(asyncio.create_task(feed(
                bus, gate, logical, stream, subject, targets[logical], until_time, batch_max,
                progress, archive, apart_min=apart_min,
            )))  # fmt: skip
        total = 0
        try:
            for logical, (stream, subject) in filters.items():
                if logical not in later:
                    total += await feed(
                        bus, deferred, logical, stream, subject, targets[logical], until_time,
                        batch_max, progress, archive, apart_min=apart_min,
                    )  # fmt: skip
            here.set_result(None)
            for task in ahead:
                total += await task
        finally:
            here.cancel()
            for task in ahead:
                task.cancel()
            await asyncio.gather(*ahead, return_exceptions=True)
        await deferred.commit()
    seconds = time.perf_counter() - t0
    digest = await store.digest()
    invalid = folder.fold.counts["invalid"]
    return ReplayResult(dict(folder.fold.positions), total, seconds, digest, invalid)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused for the block; reference counting still frees
    whatever holds no cycle. A replay makes millions of short-lived objects and almost no
    cycles (about 1,800 for bench/replay.py's 69,000 messages), and the collections they set
    off walked the whole heap: about 7 % of a replay's CPU. What the block leaves in cycles is
    collected once the collector runs again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


async def feed(
    bus: Bus,
    folder: Batches,
    logical: str,
    stream: str,
    subject: str,
    target: int,
    until_time: datetime | None,
    batch_max: int,
    progress: Callable[[str, int, int], None] | None,
    archive: ArchiveDir | None,
    *,
    apart_min: int = APART_MIN,
) -> int:
    """Feed `stream` up to `target` into `folder`: from `archive` first when given, then the
    stream from the sequence after the archive's. Returns how many messages were fed. When at
    least `apart_min` messages are left to read from the stream, a child process receives them
    (projections.reader)."""
    done = n = 0
    if archive is not None:
        for batch in archive.batches(logical, target, until_time, batch_max):
            await folder.apply(batch)
            done, n = batch[-1].seq, n + len(batch)
            if progress:
                progress(logical, done, target)
        if done < target and done < archive.last(logical):
            return n  # the time limit fell inside the archive: the stream holds only later ones
        info = await bus.call(bus.js.stream_info(stream), f"read stream {stream}")
        first = int(info.state.first_seq)
        if done < target and int(info.state.messages) and first > done + 1:
            raise ArchiveError(
                f"{stream} now starts at sequence {first} but the archive ends at {done}: "
                f"sequences {done + 1}..{first - 1} are in neither; replay from an archive "
                "that holds them."
            )
    if target - done >= apart_min:
        fed = await read_apart(
            bus.settings, folder, logical, stream, subject, target, until_time, batch_max,
            progress, start=done + 1,
        )  # fmt: skip
    else:
        fed = await read_stream(
            bus.js, folder, logical, stream, subject, target, until_time, batch_max, progress,
            start=done + 1,
        )  # fmt: skip
    return n + fed


async def read_stream(
    js: JetStreamContext,
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
) -> int:
    """Feed `stream` from sequence `start` to `target` (or `until_time`) into `folder`, in
    batches of at most `batch_max`; returns how many messages were fed. While it holds two
    batches the fold has not taken, its consumer is stopped (reader.Cursor)."""
    if target < start:
        if progress:
            progress(logical, target, target)
        return 0
    buffer: deque[Item] = deque()
    wake = asyncio.Event()
    state = {"end": False}

    async def cb(msg: Msg, seq: int, ns: int) -> None:
        if state["end"]:
            return
        stamp = stored_at(ns)
        if until_time is not None and stamp > until_time:
            state["end"] = True
        elif seq <= target:
            buffer.append(Item(logical, seq, msg.subject, msg.data, stamp, msg.headers))
            if seq >= target:
                state["end"] = True
        else:
            state["end"] = True
        if state["end"] or len(buffer) >= batch_max:
            wake.set()

    cursor = Cursor(
        js, stream, subject, start, cb, held=buffer.__len__, high=2 * batch_max, low=batch_max
    )
    await cursor.open()
    done = 0
    fed = 0
    try:
        while True:
            if not buffer and not state["end"]:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 1.0)
            if buffer:
                items = [buffer.popleft() for _ in range(min(len(buffer), batch_max))]
                if not state["end"]:
                    await cursor.drained()
                await folder.apply(items)
                fed += len(items)
                done = items[-1].seq
                if progress:
                    progress(logical, done, target)
            elif state["end"]:
                break
    finally:
        await cursor.close()
    if progress:
        progress(logical, target, target)
    return fed


class _Deferred:
    """Feeds a Folder, committing once per `batch_max` messages folded (and on `commit`)
    instead of once per batch that arrived: a replay writes each worker's row once per
    `batch_max` messages, not once per small batch. Folding does not depend on where the
    commits fall (projections.fold), so the read models are the same."""

    def __init__(self, folder: Folder, batch_max: int) -> None:
        self.folder = folder
        self.batch_max = batch_max
        self.pending = 0

    async def apply(self, items: list[Item]) -> None:
        await self.folder.fold_items(items)
        self.pending += len(items)
        if self.pending >= self.batch_max:
            await self.commit()

    async def commit(self) -> None:
        self.pending = 0
        await self.folder.commit()


class _Gated:
    """Feeds `folder` once `after` is done: a stream read ahead waits for its turn to fold."""

    def __init__(self, folder: Batches, after: asyncio.Future[Any]) -> None:
        self.folder = folder
        self.after = after

    async def apply(self, items: list[Item]) -> None:
        if not self.after.done():
            await asyncio.wait([self.after])
        await self.folder.apply(items)


class _Rollups:
    """Collects the WorkerRollup events of a batch (the Batches interface); skips the rest."""

    def __init__(self) -> None:
        self.events: list[WorkerRollup] = []

    async def apply(self, items: list[Item]) -> None:
        for it in items:
            try:
                ev = decode(it.data).event
            except InvalidEvent:
                continue
            if isinstance(ev, WorkerRollup) and it.subject.endswith(f".{ev.worker_id}"):
                self.events.append(ev)


async def first_time(
    bus: Bus, stream: str, archive: ArchiveDir | None = None, logical: str = WORKERS
) -> tuple[bool, datetime | None]:
    """Whether the first message at hand of `stream` (the `archive`'s first of `logical` when it
    holds any, else the stream's) is not sequence 1, and its time (its event time, or its
    stream time if earlier or if it is not an event; None when there is none)."""
    first_item = None if archive is None else archive.first_item(logical)
    if first_item is not None:
        if first_item.seq <= 1:
            return False, None
        return True, _time_of(first_item.data, first_item.time)
    info = await bus.call(bus.js.stream_info(stream), f"read stream {stream}")
    first, count = int(info.state.first_seq), int(info.state.messages)
    if int(info.state.last_seq) == 0 or (count and first <= 1):
        return False, None
    if not count:
        return True, None
    msg = await bus.call(bus.js.get_msg(stream, seq=first), f"read stream {stream}")
    return True, _time_of(msg.data or b"", msg.time)


def _time_of(data: bytes, stored: datetime | None) -> datetime | None:
    """A message's event time, or its stream time if earlier or if it is not an event."""
    try:
        t = decode(data).time  # the fold's clock is event time
    except InvalidEvent:
        return stored
    return t if stored is None else min(t, stored)


async def all_rollups(
    bus: Bus, settings: Settings, until: datetime | None = None
) -> list[WorkerRollup]:
    """Every rollup the ROLLUPS stream holds (stored by `until`, if given), in stream order."""
    rollups = _Rollups()
    name = settings.streams.rollups
    last = await bus.last_seq(name)
    await read_stream(bus.js, rollups, "ROLLUPS", name, ">", last, until, 20_000, None)
    return rollups.events


async def purged_rollups(
    bus: Bus,
    settings: Settings,
    until: datetime | None = None,
    rollups: list[WorkerRollup] | None = None,
    archive: ArchiveDir | None = None,
) -> list[WorkerRollup]:
    """The rollups of the hours before the first WORKERS message at hand (`first_time`: the
    archive's, else the stream's; projections.prelude.before_cut); none when that is sequence 1.
    With `until`, only rollups stored by then (as a replay to that time reads every stream).
    `rollups`: those already read (`all_rollups`, with the same `until`)."""
    purged, cut = await first_time(bus, settings.streams(WORKERS), archive)
    if not purged:
        return []
    events = await all_rollups(bus, settings, until) if rollups is None else rollups
    return before_cut(events, cut)
