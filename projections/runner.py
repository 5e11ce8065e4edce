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

A job still queued when JOBS retention drops its submission would vanish unrecorded: once a
minute of log time (the newest stream time applied) it publishes `dead` for each such job
(projections.jobs.ages_out; id ``<job>:terminal``). It publishes an hour rollup of each worker's
pings and the jobs it took to ROLLUPS (projections.rollup, projections.hours) before the batch
that closes the hour commits: once both WORKERS and JOB_EVENTS are folded past the hour's end;
when only JOB_EVENTS holds it back and its buffer is empty, it reads JOB_EVENTS' last sequence,
and if it has folded that far, JOB_EVENTS is idle and the hour closes.
Started with nothing folded on a WORKERS stream whose oldest pings aged out, it first folds the
rollups of those hours (projections.prelude).

A batch is folded and written by projections.folder.Folder, as a replay (projections.replay)
does.

Snapshots (projections.snapshot): after a commit that brings the messages folded since the last
snapshot to Settings.snapshot_every, or the stream time since then to snapshot_every_s, it
publishes its tables and positions to the snapshot bucket. Started on an empty database, it
first restores the newest snapshot and follows the streams from its positions; a snapshot it
cannot use (foreign, another config, damaged) is logged with the reason and it replays from
sequence 1 instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
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
from jetgrid.coordinator.position import position
from jetgrid.coordinator.settings import Settings
from jetgrid.events.addressing import Speaker
from jetgrid.events.errors import ConfigError, JetgridError
from jetgrid.events.streams import JOB_EVENTS, JOBS, WORKERS
from jetgrid.projections import snapshot
from jetgrid.projections.fold import Changes, Fold, FoldConfig, fold_config, kv_value
from jetgrid.projections.folder import Folder, stream_filters
from jetgrid.projections.hours import OpenHours
from jetgrid.projections.items import Item
from jetgrid.projections.jobs import aged_out_dead, ages_out
from jetgrid.projections.prelude import fold_rollups
from jetgrid.projections.replay import purged_rollups
from jetgrid.projections.store import Store

__all__ = ["Projector", "ProjectorStats", "open_projector"]

log = logging.getLogger("jetgrid.projector")

BATCH_MAX = 2_000
HIGH_WATER = 50_000
KV_WINDOW = 256  # tier puts in flight at once
AGED_OUT_CHECK_S = 60.0  # log time between two looks for queued jobs that aged out of JOBS
SPEAKER = Speaker.service("projector")


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
    snapshots: int = 0  # published
    restored: dict[str, int] | None = None  # the positions of the snapshot it started from
    refused: str | None = None  # why the snapshot found at start was not used


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
        snapshots: bool | None = None,
    ) -> None:
        self.config = config or fold_config(settings)
        super().__init__(settings, store, Fold(settings.subjects, self.config))
        self.bus = bus
        self.js: JetStreamContext = bus.js
        self.publish = publish
        self.snapshots = publish if snapshots is None else snapshots
        self._since_snapshot = 0
        self._snapshot_time: datetime | None = None
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
        self._aged_checked: datetime | None = None
        self._workers_time: datetime | None = None  # stream time of the newest WORKERS folded

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"<Projector positions={s.positions} batches={s.batches} messages={s.messages} "
            f"invalid={s.invalid} kv_puts={s.kv_puts} errors={s.errors}>"
        )

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open(self.config)
        if self.snapshots and not any((await self.store.positions()).values()):
            await self._restore_snapshot()
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
        self.fold.hours = OpenHours.from_rows(loaded.open_hours, keep=self.publish)
        self.stats.positions = dict(self.fold.positions)
        self._buffer.clear()
        if not loaded.workers and not any(loaded.positions.values()):
            await self._fold_purged_hours()
        if self.publish:
            await self._reconcile_kv()
        for logical, (stream, subject) in stream_filters(self.settings).items():
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

    async def _fold_purged_hours(self) -> None:
        """A fresh projector over a WORKERS stream whose oldest pings aged out folds the rollups
        of those hours first (projections.prelude); a missing stream is reported just after."""
        try:
            rollups = await purged_rollups(self.bus, self.settings)
        except NotFound:
            return
        if fold_rollups(self.fold, rollups):
            await self.apply([])

    async def _unsubscribe(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _make_cb(self, logical: str) -> Callable[[Msg], Any]:
        buffer, wake = self._buffer, self._wake

        async def cb(msg: Msg) -> None:
            seq, stamp = position(msg)
            buffer.append(Item(logical, seq, msg.subject, msg.data, stamp, msg.headers))
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
            self._workers_time = max(
                (it.time for it in items if it.stream == WORKERS), default=self._workers_time
            )
            if not self._buffer and self.fold.hours.waiting(self.fold.clock):
                await self._close_idle_hours()
            if self.snapshots:
                await self._maybe_snapshot(n, s.last_time)
            if self.publish:
                await self.end_aged_out(s.last_time)
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
        for logical, (stream, _) in stream_filters(self.settings).items():
            targets[logical] = await self.bus.last_seq(stream)
        await self.wait_for(targets, within)
        return targets

    async def _close_idle_hours(self) -> None:
        """Close the hours that wait only for JOB_EVENTS if it has been folded to its end
        (projections.hours.OpenHours.idle)."""
        if self._workers_time is None:
            return
        seen = self._workers_time
        try:
            last = await self.bus.last_seq(self.settings.streams(JOB_EVENTS))
        except JetgridError as exc:
            log.debug("could not read JOB_EVENTS' last sequence: %s", exc)
            return
        if self.fold.positions[JOB_EVENTS] >= last:
            self.fold.hours.idle(seen)
            await self.apply([])

    # -- snapshots ----------------------------------------------------------------------------
    async def _restore_snapshot(self) -> None:
        try:
            snap = await snapshot.load(self.bus, self.store, self.settings, self.config)
        except JetgridError as exc:
            self.stats.refused = str(exc)
            log.warning("not starting from the snapshot: %s Replaying from sequence 1.", exc)
            return
        if snap is not None:
            self.stats.restored = dict(snap.positions)
            log.info("restored the read models from a snapshot at %s", snap.positions)

    async def _maybe_snapshot(self, n: int, now: datetime | None) -> None:
        self._since_snapshot += n
        if self._snapshot_time is None:
            self._snapshot_time = now
        cfg = self.settings
        if not snapshot.due(
            self._since_snapshot, now, self._snapshot_time, cfg.snapshot_every,
            cfg.snapshot_every_s,
        ):  # fmt: skip
            return
        self._since_snapshot, self._snapshot_time = 0, now
        try:
            await snapshot.publish(self.bus, self.store, self.settings, self.config)
            self.stats.snapshots += 1
        except JetgridError as exc:
            self.stats.errors += 1
            log.warning("publishing a read-model snapshot failed: %s", exc)

    # -- side effects -------------------------------------------------------------------------
    async def before_commit(self, changes: Changes) -> None:
        if self.publish:  # <worker>:rollup:<hour>: a replay or restart sends the same ids
            for rollup in changes.rollups:
                await self.bus.store(rollup, SPEAKER)
        if not changes.invalid:
            return
        self.stats.invalid += len(changes.invalid)
        if not self.publish:
            return
        for inv in changes.invalid:
            await self.bus.record_invalid(
                inv.data,
                SPEAKER,
                stream=inv.stream,
                subject=inv.subject,
                seq=inv.seq,
                reason=inv.reason,
                headers=inv.headers,
            )
            log.info("invalid %s message at seq %s: %s", inv.stream, inv.seq, inv.reason)

    async def end_aged_out(self, now: datetime | None) -> int:
        """Publish `dead` for each queued job that JOBS retention dropped by log time `now`
        (projections.jobs.ages_out), at most once per minute of log time; how many it sent."""
        max_age = self.settings.retention[JOBS].max_age_s
        if now is None or max_age <= 0:
            return 0
        last = self._aged_checked
        if last is not None and (now - last).total_seconds() < AGED_OUT_CHECK_S:
            return 0
        self._aged_checked = now
        sent = 0
        for view in await self.store.queued_jobs():
            if not ages_out(view, now, max_age):
                continue
            try:  # <job>:terminal: a second projector, or a retry, is the same message
                await self.bus.store(aged_out_dead(view), SPEAKER)
            except JetgridError as exc:
                self.stats.errors += 1
                log.warning("job %s aged out of JOBS but its dead event failed: %s",
                            view.job_id, exc)  # fmt: skip
                continue
            sent += 1
            log.info("job %s aged out of JOBS retention while queued: dead", view.job_id)
        return sent

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
        """Put every view whose (tier, factor) differs from what the bucket holds, up to
        KV_WINDOW puts in flight at once (a fleet that leaves probation together changes
        thousands of tiers in one batch: one round trip each, in series, would stall the fold).
        """
        kv = self._kv
        if kv is None:
            return
        bucket = self.settings.tiers_bucket
        todo: list[tuple[str, tuple[str, float | None], bytes]] = []
        for view in views:
            want = (view.tier, self.fold.factor(view.tier))
            if self._published.get(view.worker_id) != want:
                value = json.dumps(kv_value(view, self.fold), separators=(",", ":")).encode()
                todo.append((view.worker_id, want, value))
        for i in range(0, len(todo), KV_WINDOW):
            chunk = todo[i : i + KV_WINDOW]
            # The bucket opened at start (Bus.put would open it again: a round trip per put).
            puts = (
                self.bus.call(kv.put(w, v), f"put {w!r} in bucket {bucket!r}") for w, _, v in chunk
            )
            results = await asyncio.gather(*puts, return_exceptions=True)
            for (wid, want, _), got in zip(chunk, results, strict=True):
                if not isinstance(got, BaseException):
                    self._published[wid] = want
                    self.stats.kv_puts += 1
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed


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
