"""The purged past from rollups: what a reader folds before a WORKERS stream whose oldest raw
pings have aged out (or were purged). Pure.

`before_cut` picks, from the ROLLUPS stream, the rollups of hours that start before the time
of the first retained WORKERS message (the cut), in hour order: they describe pings that are
gone; rollups of later hours are ignored, since the retained log's raw pings say more. When the
cut falls inside an hour, that hour's rollup is folded too (else its purged part would be lost):
the retained pings of that hour then arrive behind the tracker's newest slot and change nothing,
as late duplicates would.
`fold_rollups` applies them to a Fold before the retained log: each worker's tracker, pause
state and tier at those hour ends (projections.rollup.apply_rollup), the tier changes recorded
at the hour ends, and the fold's clock at the last of them.

What rollups do not carry into the views: a worker's registration details (models, pools,
backend), its ping and job counts over the purged hours (the jobs it took there reach the audit,
projections.audit_log), and tier changes inside an hour (one shows at the end of
the hour it happened in, up to the end of the hour that holds the cut). The trackers, and so the
uptime windows and the tiers after that hour's end, are those of the full log.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from jetgrid.events.workers import WorkerRollup
from jetgrid.projections.fold import Fold
from jetgrid.projections.rollup import HOUR_S, apply_rollup

__all__ = ["before_cut", "fold_rollups"]


def before_cut(rollups: Iterable[WorkerRollup], cut: datetime | None) -> list[WorkerRollup]:
    """The rollups of hours starting before `cut` (None: WORKERS holds nothing any more, so
    every hour is gone), one per worker and hour, in (hour, worker) order."""
    limit = None if cut is None else cut.timestamp()
    chosen: dict[tuple[int, str], WorkerRollup] = {}
    for ev in rollups:
        if limit is None or ev.hour < limit:
            chosen.setdefault((ev.hour, ev.worker_id), ev)
    return [chosen[k] for k in sorted(chosen)]


def fold_rollups(fold: Fold, rollups: Iterable[WorkerRollup]) -> dict[str, datetime]:
    """Apply `rollups` (from `before_cut`) to `fold`, whose WORKERS log is still unread; returns,
    per worker, the end of the last hour known from rollups only. A rollup whose bitmap does not
    decode is skipped and counted in ``fold.counts["invalid"]``."""
    cfg = fold.config
    until: dict[str, datetime] = {}
    for ev in rollups:
        old = fold.workers.get(ev.worker_id)
        try:
            new = apply_rollup(old, ev, cfg.policy, cfg.windows)
        except ValueError:  # its bitmap is not one: skipped and counted, like an invalid event
            fold.counts["invalid"] += 1
            continue
        end = datetime.fromtimestamp(ev.hour + HOUR_S, UTC)
        until[ev.worker_id] = end
        if fold.clock is None or end > fold.clock:
            fold.clock = end
        if new is not old:
            fold.changed(old, new)
    return until
