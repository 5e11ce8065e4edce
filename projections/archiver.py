"""`jetgrid archive`'s work: copy what is about to age out of the streams into an archive directory.

For each stream (WORKERS, JOBS, JOB_EVENTS, INVALID) the archive takes every message after the
last one already archived and stored before the cut-off: `before` when given, else the moment
the stream's retention will reach in `margin_s` (now - max_age + margin), so a daily run keeps
everything with a margin to spare. A stream kept forever (max_age 0) is archived only up to an
explicit `before`. Messages go to the archive in files of at most `file_max` messages
(projections.archive); running it again only adds what is new, never a duplicate.

The report also names what the archive cannot keep: sequences that aged out before any run
archived them (a gap), and job consumers (`at_risk`) that still hold unfinished jobs stored at
or before the JOBS cut-off: JetStream drops a submission when it ages out whether or not a
worker took it, so those jobs never run unless a worker takes them first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.events import INVALID, JOB_EVENTS, JOBS, WORKERS
from jetgrid.projections.archive import ArchiveDir, ArchiveFile
from jetgrid.projections.items import Item
from jetgrid.projections.replay import read_stream

__all__ = ["ARCHIVED_STREAMS", "ArchiveReport", "archive_streams", "at_risk", "cutoff"]

ARCHIVED_STREAMS = (WORKERS, JOBS, JOB_EVENTS, INVALID)
FILE_MAX = 100_000


def cutoff(
    max_age_s: float, now: datetime, margin_s: float, before: datetime | None
) -> datetime | None:
    """The stream time up to which to archive: `before`, else what ages out within `margin_s`
    (None: nothing ages out, the stream keeps messages forever)."""
    if before is not None:
        return before
    if max_age_s <= 0:
        return None
    return now - timedelta(seconds=max(0.0, max_age_s - margin_s))


@dataclass
class ArchiveReport:
    """What one run added: per stream, the files written and their cut-off."""

    files: dict[str, list[ArchiveFile]] = field(default_factory=dict)
    cutoffs: dict[str, datetime | None] = field(default_factory=dict)
    gaps: dict[str, tuple[int, int]] = field(default_factory=dict)
    at_risk: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for stream, (a, b) in self.gaps.items():
            out.append(
                f"{stream}: sequences {a}..{b} aged out before they were archived; they are "
                "not in the archive"
            )
        for stream, cut in self.cutoffs.items():
            files = self.files.get(stream, [])
            if cut is None:
                out.append(f"{stream}: kept forever by its retention; nothing to archive")
            elif not files:
                out.append(f"{stream}: nothing new stored before {cut.isoformat()}")
            else:
                n = sum(f.count for f in files)
                out.append(
                    f"{stream}: archived {n} messages, seq {files[0].first}..{files[-1].last}, "
                    f"in {len(files)} file(s)"
                )
        return out


class _Collector:
    """Takes batches from read_stream and writes them as archive files of `file_max`."""

    def __init__(self, archive: ArchiveDir, stream: str, file_max: int) -> None:
        self.archive, self.stream, self.file_max = archive, stream, file_max
        self.pending: list[Item] = []
        self.written: list[ArchiveFile] = []

    async def apply(self, items: list[Item]) -> None:
        self.pending.extend(items)
        while len(self.pending) >= self.file_max:
            self._flush(self.file_max)

    def _flush(self, n: int) -> None:
        chunk, self.pending = self.pending[:n], self.pending[n:]
        self.written.append(self.archive.append(self.stream, chunk))

    def close(self) -> None:
        if self.pending:
            self._flush(len(self.pending))


async def archive_streams(
    settings: Settings,
    bus: Bus,
    archive: ArchiveDir,
    *,
    now: datetime,
    margin_s: float = 86400.0,
    before: datetime | None = None,
    file_max: int = FILE_MAX,
    progress: Callable[[str, int, int], None] | None = None,
) -> ArchiveReport:
    """Archive every stream up to its cut-off (see the module docstring)."""
    report = ArchiveReport()
    retention = settings.retention
    for logical in ARCHIVED_STREAMS:
        stream = settings.streams(logical)
        cut = cutoff(retention[logical].max_age_s, now, margin_s, before)
        report.cutoffs[logical] = cut
        if cut is None:
            continue
        last = await bus.last_seq(stream)
        collector = _Collector(archive, logical, file_max)
        start = archive.last(logical) + 1
        await read_stream(
            bus.js, collector, logical, stream, ">", last, cut, 20_000, progress, start=start
        )
        collector.close()
        report.files[logical] = collector.written
        if collector.written and collector.written[0].first > start:
            report.gaps[logical] = (start, collector.written[0].first - 1)
    jobs_cut = archive.last(JOBS)
    if report.cutoffs.get(JOBS) is not None and jobs_cut:
        consumers = await bus.consumers_info(settings.streams.jobs)
        report.at_risk = at_risk(
            [
                (
                    c.name,
                    c.ack_floor.stream_seq if c.ack_floor else 0,
                    (c.num_pending or 0) + (c.num_ack_pending or 0),
                )
                for c in consumers
            ],
            jobs_cut,
        )
    return report


def at_risk(consumers: list[tuple[str, int, int]], cut_seq: int) -> list[str]:
    """One warning per job consumer `(name, ack floor, unfinished)` that has unfinished jobs and
    has not acked past `cut_seq`, the last JOBS sequence about to age out."""
    return [
        f"JOBS consumer {name} has {n} unfinished jobs and has acked only up to sequence "
        f"{floor}; those stored at or before {cut_seq} will age out of JOBS and never run: add "
        "workers for its pool and model, or cancel them"
        for name, floor, n in sorted(consumers)
        if n > 0 and floor < cut_seq
    ]
