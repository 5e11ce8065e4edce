"""Running every consumer of the log over a log with hostile messages in it (shared by the
hostile-log tests): each must reach the end, and the read models must equal those of the log
without the hostile messages."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JOB_EVENTS, JOBS, WORKERS, InvalidMessage, decode
from jetgrid.gateway.board import JobBoard
from jetgrid.gateway.fleet import Fleet
from jetgrid.projections.audit_log import gather
from jetgrid.projections.fold import Fold, fold_config
from jetgrid.projections.folder import Folder, stream_filters
from jetgrid.projections.items import Item
from jetgrid.projections.replay import read_stream, replay
from jetgrid.projections.runner import Projector
from jetgrid.projections.schema import jobs_t, tier_history_t, workers_t
from jetgrid.projections.store import Store
from jetgrid.worker.deadletter import DeadLetterWatcher
from tests.helpers import read_stream as read_all
from tests.helpers import until

DEEP = b'{"model": "echo", "prompt": ' + b"[" * 1000 + b"]" * 1000 + b"}"


@dataclass
class Reached:
    """Which consumers reached the end of the log, and what each skipped or recorded."""

    ends: dict[str, int] = field(default_factory=dict)  # logical stream -> last seq
    consumers: dict[str, bool] = field(default_factory=dict)
    recorded: dict[str, set[int]] = field(default_factory=dict)  # stream -> seqs on INVALID


class SeenFleet(Fleet):
    """The gateway's fleet, remembering the last WORKERS sequence it folded."""

    last = 0

    async def _on_msg(self, msg: Any) -> None:
        await super()._on_msg(msg)
        self.last = msg.metadata.sequence.stream


class Skipping:
    """A Folder that leaves out the hostile messages: the log as it would be without them."""

    def __init__(self, folder: Folder, hostile: dict[str, set[int]]) -> None:
        self.folder, self.fold, self.hostile = folder, folder.fold, hostile

    async def apply(self, items: list[Item]) -> Any:
        return await self.folder.apply(
            [it for it in items if it.seq not in self.hostile.get(it.stream, set())]
        )


async def rows(store: Store) -> dict[str, list[Any]]:
    """The read models (not the checkpoints: positions differ where a hostile message ends a
    stream)."""
    out = {}
    async with store.engine.connect() as conn:
        for table in (workers_t, tier_history_t, jobs_t):
            res = await conn.execute(select(table).order_by(*table.primary_key.columns))
            out[table.name] = [tuple(r) for r in res]
    return out


async def clean_replay(
    s: Settings, bus: Bus, store: Store, hostile: dict[str, set[int]], ends: dict[str, int]
) -> None:
    """Replay into `store` up to `ends`, leaving out the hostile messages."""
    config = fold_config(s)
    await store.open(config)
    folder = Skipping(Folder(s, store, Fold(s.subjects, config)), hostile)
    for logical, (stream, subject) in stream_filters(s).items():
        end = ends[logical]
        await read_stream(bus.js, folder, logical, stream, subject, end, None, 20_000, None)


async def equal_to_clean(
    s: Settings, bus: Bus, store: Store, hostile: dict[str, set[int]], path: Path
) -> None:
    """Raise unless `store` holds the read models of the log without the hostile messages, up
    to the positions `store` has reached (workers keep heart-beating meanwhile)."""
    ends = dict((await store.load()).positions)
    clean = Store(f"sqlite+aiosqlite:///{path}")
    try:
        await clean_replay(s, bus, clean, hostile, ends)
        assert await rows(store) == await rows(clean), f"read models differ at {ends}"
    finally:
        await clean.close()


async def run_consumers(
    s: Settings, nc: Any, bus: Bus, tmp: Path, hostile: dict[str, set[int]], valid: list[str]
) -> Reached:
    """Run the projector, replay, audit, the gateway's folds and a dead-letter watcher over the
    log as it is now; returns what reached the end. Raises if the read models differ from
    those of the log without the hostile messages."""
    js = nc.jetstream()
    got = Reached()
    for logical, (stream, _) in stream_filters(s).items():
        got.ends[logical] = await bus.last_seq(stream)

    live_store = Store(f"sqlite+aiosqlite:///{tmp / 'live.db'}")
    projector = Projector(s, live_store, bus)
    await projector.start()
    try:
        await projector.wait_for(got.ends, within=30)
        got.consumers["projector"] = True
    finally:
        await projector.stop()

    replay_store = Store(f"sqlite+aiosqlite:///{tmp / 'replay.db'}")
    replayed = await replay(s, replay_store, bus)
    got.consumers["replay"] = all(replayed.positions[k] >= n for k, n in got.ends.items())
    assert replayed.invalid >= sum(len(seqs) for seqs in hostile.values())  # skipped, counted

    audit = await gather(s, bus, fold_config(s))
    got.consumers["audit"] = all(audit.fold.positions[k] >= n for k, n in got.ends.items())
    assert audit.fold.counts["invalid"] >= sum(len(seqs) for seqs in hostile.values())

    board, fleet = JobBoard(bus, s), SeenFleet(bus, s)
    await board.start()
    await fleet.start()
    try:
        await asyncio.wait_for(board.caught_up.wait(), 30)
        # The board follows from the log's end; past jobs are read back by id, hostile
        # messages on their subjects included.
        found = [await board.find(j) for j in valid]
        assert all(v is not None and v.status == "completed" for v in found)
        got.consumers["gateway board"] = True
        await until(lambda: fleet.last >= got.ends[WORKERS])
        got.consumers["gateway fleet"] = True
    finally:
        await board.stop()
        await fleet.stop()

    watcher = DeadLetterWatcher(s, bus, name="hostile-test")
    for seq in sorted(hostile.get(JOBS, set())):
        advisory = {
            "type": "io.nats.jetstream.advisory.v1.max_deliver",
            "stream": s.streams.jobs,
            "consumer": "x",
            "stream_seq": seq,
            "deliveries": 5,
        }
        assert await watcher.handle(json.dumps(advisory).encode()) is None
    got.consumers["dead-letter watcher"] = True

    for m in await read_all(js, s.streams.invalid):
        record = decode(m.data).event
        assert isinstance(record, InvalidMessage)
        got.recorded.setdefault(record.stream, set()).add(record.seq or 0)
    # once: one record per message, whoever recorded it
    per_message = [decode(m.data).event for m in await read_all(js, s.streams.invalid)]
    keys = [(r.stream, r.seq) for r in per_message]
    assert len(keys) == len(set(keys)), f"recorded more than once: {keys}"

    await equal_to_clean(s, bus, replay_store, hostile, tmp / "clean-replay.db")
    await equal_to_clean(s, bus, live_store, hostile, tmp / "clean-live.db")
    got.consumers["read models equal the clean log's"] = True
    for store in (live_store, replay_store):
        await store.close()
    return got


__all__ = ["DEEP", "JOB_EVENTS", "Reached", "run_consumers"]
