"""The projector: follows WORKERS, JOBS and JOB_EVENTS from their checkpoints into the store.

One ordered consumer per stream, starting at the stream's checkpoint + 1, feeds a buffer through
callbacks (no per-message tasks); one loop takes what has arrived (up to `batch_max` messages),
folds it with the pure reducers (projections.fold), and writes the changed views together with
the new positions in one transaction. So a projector killed at any point resumes at the last
committed positions: nothing is applied twice, nothing skipped.

After each commit it publishes every worker whose tier or factor changed (or that it sees for
the first time) to the tiers KV bucket (Settings.tiers_bucket, key = worker id; value in the
README). Invalid WORKERS and JOB_EVENTS messages are recorded on ``<prefix>.invalid.<stream>``
(Nats-Msg-Id ``invalid:<stream>:<seq>``, so a restart does not record them twice) before the
batch commits.

`replay` rebuilds a fresh store from sequence 1 with the same fold, reading the streams one
after another (the fold does not depend on how they interleave: see projections.fold).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from jetgrid.coordinator.aio import cancel_and_wait
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.errors import NotFound
from jetgrid.coordinator.settings import Settings
from jetgrid.coordinator.tiers import load_policy
from jetgrid.events import JOB_EVENTS, JOBS, WORKERS, InvalidMessage
from jetgrid.events.addressing import Speaker
from jetgrid.events.codec import decode_submission
from jetgrid.events.errors import ConfigError, InvalidEvent
from jetgrid.projections.fold import STREAMS, Changes, Fold, FoldConfig, kv_value
from jetgrid.projections.store import Store
from jetgrid.projections.uptime import UptimeWindows

__all__ = ["Item", "Projector", "ReplayResult", "fold_config", "open_projector", "replay"]

log = logging.getLogger("jetgrid.projector")

BATCH_MAX = 2_000
HIGH_WATER = 50_000
KEEP_JOBS = 50_000
SPEAKER = Speaker.service("projector")


def fold_config(settings: Settings, tick_s: float = 1.0) -> FoldConfig:
    """The fold's config from settings (tier policy, uptime windows)."""
    return FoldConfig(
        policy=load_policy(settings.tier_policy_file, settings.tier_policy),
        windows=UptimeWindows.parse(settings.uptime_windows, settings.tier_window),
        tick_s=tick_s,
    )


@dataclass(frozen=True, slots=True)
class Item:
    """One message as read from a stream."""

    stream: str  # logical name
    seq: int
    subject: str
    data: bytes
    time: datetime  # the stream's timestamp
    headers: Mapping[str, str] | None = None


def _filters(settings: Settings) -> dict[str, tuple[str, str]]:
    """logical stream -> (stream name, subject filter): every message of the stream, whichever
    of its subject forms it came on (JOBS has a priority form, JOB_EVENTS a worker form)."""
    return {s: (settings.streams(s), ">") for s in STREAMS}


class Folder:
    """Applies batches of Items to a Fold and writes them to a Store (no NATS here)."""

    def __init__(self, settings: Settings, store: Store, fold: Fold) -> None:
        self.settings = settings
        self.store = store
        self.fold = fold

    async def apply(self, items: list[Item]) -> Changes:
        """Fold and persist one batch; returns what changed (already committed)."""
        fold, subjects = self.fold, self.settings.subjects
        job_head = f"{subjects.prefix}.job."
        decoded: dict[int, Any] = {}
        wanted: set[str] = set()
        for it in items:
            if it.stream == JOBS:
                try:
                    env = decode_submission(
                        it.data, subject=it.subject, subjects=subjects, seq=it.seq,
                        stream_time=it.time,
                    )  # fmt: skip
                except InvalidEvent:
                    env = None
                decoded[it.seq] = env
                if env is not None:
                    wanted.add(env.event.job_id)
            elif it.stream == JOB_EVENTS:
                # <prefix>.job.<job_id>.<event>[.<worker>]: the token after the head
                if it.subject.startswith(job_head):
                    wanted.add(it.subject[len(job_head) :].split(".", 1)[0])
        missing = fold.needed_jobs(wanted)
        if missing:
            fold.jobs.update(await self.store.load_jobs(missing))
        for it in items:
            if it.stream == WORKERS:
                fold.worker_message(it.seq, it.subject, it.data, it.time, dict(it.headers or {}))
            elif it.stream == JOBS:
                fold.submission(it.seq, it.subject, it.data, it.time, decoded=decoded[it.seq])
            else:
                fold.job_event(it.seq, it.subject, it.data)
        changes = fold.take_changes()
        await self.before_commit(changes)
        await self.store.write(changes, fold.factor)
        if len(fold.jobs) > KEEP_JOBS:
            fold.trim_jobs(0)
            self.store.forget_jobs(set())
        return changes

    async def before_commit(self, changes: Changes) -> None:
        """Hook: the live projector records invalid messages here."""


@dataclass
class ProjectorStats:
    batches: int = 0
    messages: int = 0
    invalid: int = 0
    kv_puts: int = 0
    errors: int = 0
    last_time: datetime | None = None  # stream timestamp of the newest applied message
    last_batch_s: float = 0.0
    positions: dict[str, int] = field(default_factory=dict)


class Projector(Folder):
    """The live projector: follows the three streams into `store`, publishes tiers to KV.

    Use `run()` (until `stop()`), or `start()` / `stop()` around other work. `wait_for(...)`
    blocks until the committed positions reach given sequences (tests, `replay` comparisons).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        bus: Bus,
        config: FoldConfig | None = None,
        *,
        publish: bool = True,
        batch_max: int = BATCH_MAX,
    ) -> None:
        self.config = config or fold_config(settings)
        super().__init__(settings, store, Fold(settings.subjects, self.config))
        self.bus = bus
        self.js: JetStreamContext = bus.js
        self.publish = publish
        self.batch_max = batch_max
        self.stats = ProjectorStats()
        self._buffer: deque[Item] = deque()
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._committed = asyncio.Condition()
        self._subs: list[Any] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._kv: Any = None
        self._published: dict[str, tuple[str, float | None]] = {}
        self.ready = asyncio.Event()
        self._owned = False

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"<Projector positions={s.positions} batches={s.batches} messages={s.messages} "
            f"invalid={s.invalid} kv_puts={s.kv_puts} errors={s.errors}>"
        )

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open(self.config)
        await self._resume()
        self._task = asyncio.create_task(self._loop(), name="projector")
        self.ready.set()

    async def run(self) -> None:
        """Start and run until stop() (or until the loop fails for good)."""
        await self.start()
        assert self._task is not None
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def stop(self) -> None:
        self._stopping = True
        await self._unsubscribe()
        self._wake.set()
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def close(self) -> None:
        """stop(), then close the connection and the store if open_projector opened them."""
        await self.stop()
        if self._owned:
            await self.bus.close()
            await self.store.close()

    async def _resume(self) -> None:
        loaded = await self.store.load()
        self.fold = Fold(
            self.settings.subjects,
            self.config,
            workers=loaded.workers,
            clock=loaded.clock,
            positions=loaded.positions,
            history_counts=loaded.history_counts,
        )
        self.stats.positions = dict(self.fold.positions)
        self._buffer.clear()
        if self.publish:
            await self._reconcile_kv()
        for logical, (stream, subject) in _filters(self.settings).items():
            start = self.fold.positions.get(logical, 0) + 1
            try:
                await self.bus.last_seq(stream)
            except NotFound:
                raise ConfigError(
                    f"Stream {stream} does not exist; run `jetgrid provision` (or `jetgrid up`)."
                ) from None
            sub = await self.js.subscribe(
                subject,
                stream=stream,
                cb=self._make_cb(logical),
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                config=ConsumerConfig(opt_start_seq=start),
                pending_msgs_limit=-1,
                pending_bytes_limit=-1,
            )
            self._subs.append(sub)

    async def _unsubscribe(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _make_cb(self, logical: str) -> Callable[[Msg], Any]:
        buffer, wake = self._buffer, self._wake

        async def cb(msg: Msg) -> None:
            md = msg.metadata
            buffer.append(
                Item(logical, md.sequence.stream, msg.subject, msg.data, md.timestamp, msg.headers)
            )
            wake.set()
            if len(buffer) >= HIGH_WATER:
                self._space.clear()
                await self._space.wait()

        return cb

    # -- the loop -----------------------------------------------------------------------------
    async def _loop(self) -> None:
        backoff = 0.5
        broken = False
        while not self._stopping:
            try:
                if broken:
                    await self._resume()
                    broken = False
                await self._drain()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The fold may be ahead of the store now: start over from what was committed.
                self.stats.errors += 1
                log.error("projector batch failed (%r); resuming from the store in %.1fs", exc,
                          backoff)  # fmt: skip
                broken = True
                await self._unsubscribe()
                self._space.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _drain(self) -> None:
        while not self._stopping:
            if not self._buffer:
                self._wake.clear()
                await self._wake.wait()
                continue
            n = min(len(self._buffer), self.batch_max)
            items = [self._buffer.popleft() for _ in range(n)]
            if len(self._buffer) < HIGH_WATER // 2:
                self._space.set()
            t0 = time.perf_counter()
            changes = await self.apply(items)
            await self._publish_tiers(changes)
            s = self.stats
            s.batches += 1
            s.messages += n
            s.last_batch_s = time.perf_counter() - t0
            s.last_time = max((it.time for it in items), default=s.last_time)
            s.positions = dict(changes.positions)
            async with self._committed:
                self._committed.notify_all()

    async def wait_for(self, positions: Mapping[str, int], within: float = 30.0) -> None:
        """Block until every given stream's committed position reaches its sequence."""

        def done() -> bool:
            return all(self.stats.positions.get(s, 0) >= n for s, n in positions.items())

        async def waiting() -> None:
            async with self._committed:
                await self._committed.wait_for(done)

        await asyncio.wait_for(waiting(), within)

    async def wait_caught_up(self, within: float = 30.0) -> dict[str, int]:
        """Wait until the positions reach the streams' last sequences as of now."""
        targets = {}
        for logical, (stream, _) in _filters(self.settings).items():
            targets[logical] = await self.bus.last_seq(stream)
        await self.wait_for(targets, within)
        return targets

    # -- side effects -------------------------------------------------------------------------
    async def before_commit(self, changes: Changes) -> None:
        if not changes.invalid:
            return
        self.stats.invalid += len(changes.invalid)
        if not self.publish:
            return
        for inv in changes.invalid:
            record = InvalidMessage.of(
                inv.data,
                stream=inv.stream,
                subject=inv.subject,
                seq=inv.seq,
                reason=inv.reason,
                detected_by=SPEAKER.source,
                headers={k: v for k, v in inv.headers.items() if isinstance(v, str)},
            )
            await self.bus.store(record, SPEAKER)
            log.info("invalid %s message at seq %s: %s", inv.stream, inv.seq, inv.reason)

    async def _bucket(self) -> Any:
        if self._kv is None:
            bucket = self.settings.tiers_bucket
            self._kv = await self.bus.call(self.js.key_value(bucket), f"open bucket {bucket}")
        return self._kv

    async def _reconcile_kv(self) -> None:
        """Learn what the bucket holds, then put every worker whose tier differs from it."""
        self._published = {}
        try:
            kv = await self._bucket()
        except NotFound:
            log.warning(
                "tiers bucket %s is missing; run `jetgrid provision`", self.settings.tiers_bucket
            )
            self._kv = None
            return
        watcher = await kv.watchall()
        try:
            while True:
                entry = await watcher.updates(timeout=5)
                if entry is None:
                    break
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    v = json.loads(entry.value)
                    self._published[entry.key] = (v["tier"], v["factor"])
        finally:
            await watcher.stop()
        await self._put_changed(list(self.fold.workers.values()))

    async def _publish_tiers(self, changes: Changes) -> None:
        if self.publish and changes.workers:
            await self._put_changed(changes.workers)

    async def _put_changed(self, views: list[Any]) -> None:
        if self._kv is None:
            return
        for view in views:
            want = (view.tier, self.fold.factor(view.tier))
            if self._published.get(view.worker_id) == want:
                continue
            value = json.dumps(kv_value(view, self.fold), separators=(",", ":")).encode()
            await self.bus.put(self.settings.tiers_bucket, view.worker_id, value)
            self._published[view.worker_id] = want
            self.stats.kv_puts += 1


async def open_projector(
    settings: Settings, config: FoldConfig | None = None, *, batch_max: int = BATCH_MAX
) -> Projector:
    """Connect, open the store at Settings.database_url, and start a projector; close() it."""
    if settings.database_url.startswith("sqlite") and settings.db_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    bus = await Bus.connect(settings, name="jetgrid-projector")
    store = Store(settings.database_url)
    projector = Projector(settings, store, bus, config, batch_max=batch_max)
    projector._owned = True
    try:
        await projector.start()
    except BaseException:
        await projector.close()
        raise
    return projector


# -- replay -------------------------------------------------------------------------------------
@dataclass
class ReplayResult:
    positions: dict[str, int]
    messages: int
    seconds: float
    digest: str

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
) -> ReplayResult:
    """Rebuild the read models into `store` (which must be empty) from sequence 1.

    Streams are read one after another (WORKERS, JOBS, JOB_EVENTS), each up to the smallest of:
    its last sequence when the replay starts, ``until_seq[stream]`` (a per-stream sequence), and
    the last message whose stream timestamp is at or before `until_time`. `progress(stream,
    done, total)` is called after each batch.
    """
    config = config or fold_config(settings)
    await store.open(config)
    loaded = await store.load()
    if any(loaded.positions.values()) or loaded.workers:
        raise InvalidEvent(
            f"Replay needs a fresh database, but {store.display_url!r} already holds read models."
        )
    folder = Folder(settings, store, Fold(settings.subjects, config))
    targets: dict[str, int] = {}
    for logical, (stream, _) in _filters(settings).items():
        last = await bus.last_seq(stream)
        cap = (until_seq or {}).get(logical)
        targets[logical] = last if cap is None else min(last, cap)
    t0 = time.perf_counter()
    total = 0
    for logical, (stream, subject) in _filters(settings).items():
        total += await _replay_stream(
            bus.js, folder, logical, stream, subject, targets[logical], until_time, batch_max,
            progress,
        )  # fmt: skip
    seconds = time.perf_counter() - t0
    return ReplayResult(dict(folder.fold.positions), total, seconds, await store.digest())


async def _replay_stream(
    js: JetStreamContext,
    folder: Folder,
    logical: str,
    stream: str,
    subject: str,
    target: int,
    until_time: datetime | None,
    batch_max: int,
    progress: Callable[[str, int, int], None] | None,
) -> int:
    if target <= 0:
        if progress:
            progress(logical, 0, 0)
        return 0
    buffer: deque[Item] = deque()
    wake = asyncio.Event()
    state = {"end": False}

    async def cb(msg: Msg) -> None:
        if state["end"]:
            return
        md = msg.metadata
        seq = md.sequence.stream
        if until_time is not None and md.timestamp > until_time:
            state["end"] = True
        elif seq <= target:
            buffer.append(Item(logical, seq, msg.subject, msg.data, md.timestamp, msg.headers))
            if seq >= target:
                state["end"] = True
        else:
            state["end"] = True
        if state["end"] or len(buffer) >= batch_max:
            wake.set()

    sub = await js.subscribe(
        subject,
        stream=stream,
        cb=cb,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
        pending_msgs_limit=-1,
        pending_bytes_limit=-1,
    )
    done = 0
    try:
        while True:
            if not buffer and not state["end"]:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 1.0)
            if buffer:
                items = [buffer.popleft() for _ in range(min(len(buffer), batch_max))]
                await folder.apply(items)
                done = items[-1].seq
                if progress:
                    progress(logical, done, target)
            elif state["end"]:
                break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    if progress:
        progress(logical, target, target)
    return folder.fold.positions[logical]
