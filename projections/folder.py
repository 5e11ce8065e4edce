"""Applying batches of stream messages to the fold and the store: what the projector, a replay
and the digest pin share (no NATS here).

`Item` is one message as read from a stream; `stream_filters` names the streams a reader
follows; `Folder.apply` decodes a batch, loads the jobs it needs from the store, folds it with
the pure reducers (projections.fold) and writes the changes and positions in one transaction:
`fold_items` then `commit`, which a replay calls apart to write once per many batches.
"""

from __future__ import annotations

from typing import Any

from jetgrid.coordinator.settings import Settings
from jetgrid.events import JOB_EVENTS, JOBS, WORKERS
from jetgrid.events.codec import decode_submission
from jetgrid.events.errors import InvalidEvent
from jetgrid.projections.fold import STREAMS, Changes, Fold
from jetgrid.projections.items import Item
from jetgrid.projections.store import Store

__all__ = ["KEEP_JOBS", "Folder", "Item", "stream_filters"]

KEEP_JOBS = 50_000


def stream_filters(settings: Settings) -> dict[str, tuple[str, str]]:
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
        await self.fold_items(items)
        return await self.commit()

    async def fold_items(self, items: list[Item]) -> None:
        """Fold one batch without writing it (loading the jobs it needs from the store);
        `commit` writes everything folded since the last commit in one transaction."""
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
                except InvalidEvent as exc:
                    decoded[it.seq] = exc.reason
                else:
                    decoded[it.seq] = env
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
                fold.worker_message(it.seq, it.subject, it.data, it.time, it.headers)
            elif it.stream == JOBS:
                fold.submission(it.seq, it.subject, it.data, it.time, decoded=decoded[it.seq])
            else:
                fold.job_event(it.seq, it.subject, it.data, it.time)

    async def commit(self) -> Changes:
        """Write what was folded since the last commit, with the positions, in one
        transaction; returns it."""
        fold = self.fold
        changes = fold.take_changes()
        await self.before_commit(changes)
        await self.store.write(changes, fold.factor)
        if len(fold.jobs) > KEEP_JOBS:
            fold.trim_jobs(0)
            self.store.forget_jobs(set())
        return changes

    async def before_commit(self, changes: Changes) -> None:
        """Hook: the live projector records invalid messages here."""
