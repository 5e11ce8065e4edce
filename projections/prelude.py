"""The purged past from rollups: what a reader folds before a WORKERS stream whose oldest raw
pings have aged out (or were purged). Pure.

`before_cut` picks, from the ROLLUPS stream, the rollups of hours that end at or before the
time of the first retained WORKERS message (they describe pings that are gone), in hour order;
rollups of hours the retained log covers are ignored, since its raw pings say more.
`fold_rollups` applies them to a Fold before the retained log: each worker's tracker, pause
state and tier at those hour ends (projections.rollup.apply_rollup), the tier changes recorded
at the hour ends, and the fold's clock at the last of them.

What rollups do not carry: a worker's registration (models, pools, backend), drains and job
counts of the purged hours, and tier changes inside an hour (a tier change shows at the end of
the hour it happened in). Tiers, uptime windows and the hysteresis that follows are exact when
the cut is at an hour's end; the raw pings of the hour that holds a later cut are not replaced.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from jetgrid.events.workers import WorkerRollup
from jetgrid.projections.fold import Fold
from jetgrid.projections.rollup import HOUR_S, apply_rollup

__all__ = ["before_cut", "fold_rollups"]


def before_cut(rollups: Iterable[WorkerRollup], cut: datetime | None) -> list[WorkerRollup]:
    """The rollups of hours ending at or before `cut` (None: WORKERS holds nothing any more, so
    every hour is gone), one per worker and hour, in (hour, worker) order."""
    limit = None if cut is None else cut.timestamp()
    chosen: dict[tuple[int, str], WorkerRollup] = {}
    for ev in rollups:
        if limit is None or ev.hour + HOUR_S <= limit:
            chosen.setdefault((ev.hour, ev.worker_id), ev)
    return [chosen[k] for k in sorted(chosen)]


def fold_rollups(fold: Fold, rollups: Iterable[WorkerRollup]) -> dict[str, datetime]:
    """Apply `rollups` (from `before_cut`) to `fold`, whose WORKERS log is still unread; returns,
    per worker, the end of the last hour known from rollups only."""
    cfg = fold.config
    until: dict[str, datetime] = {}
    for ev in rollups:
        old = fold.workers.get(ev.worker_id)
        new = apply_rollup(old, ev, cfg.policy, cfg.windows)
        end = datetime.fromtimestamp(ev.hour + HOUR_S, UTC)
        until[ev.worker_id] = end
        if fold.clock is None or end > fold.clock:
            fold.clock = end
        if new is not old:
            fold.changed(old, new)
    return until
