"""Which ended jobs a snapshot leaves out, so that a restore is bounded by what is live.

A snapshot (projections.snapshot) carries every row but the **old ended jobs**: jobs whose
status is terminal, whose submission was folded, that are not among the `KEEP_ENDED` most
recently finished (by ``finished_at``, then ``job_id``), and that finished more than
`KEEP_ENDED_S` before the worker log clock (the ``WORKERS`` checkpoint). Their number per
worker and status moves to the ``job_totals`` table, so `Store.job_counts` (the worker views'
completed and failed counts) gives the same answer from a restored store as from the original.
Their data stays in the log (and the archive): the gateway reads a job by id from the log, not
from this table.

The rule depends only on the rows and the checkpoints, so it is the same for a live projector,
a restored one and a replay at the same positions; `Store.digest` covers what it keeps (every
row but the old ended jobs), so the three digests stay comparable. Why these conditions:

- only terminal jobs: the projector still needs live ones (and `queued` ones age out);
- only jobs whose submission was folded: a submission folded after its job left would start a
  new, queued row;
- the newest `KEEP_ENDED` and the last `KEEP_ENDED_S` stay: a late event (a redelivered
  duplicate, a late cancel request) for a job that was left out would start a partial row in
  a restored projector, and its digest would then differ from a replay's. So the horizon is
  set well past AckWait and the worker's retry times.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from jetgrid.events import TERMINAL_NAMES, parse_time
from jetgrid.projections.schema import checkpoints_t, job_totals_t, jobs_t
from jetgrid.projections.view_json import format_time

__all__ = ["KEEP_ENDED", "KEEP_ENDED_S", "old_ended", "totals", "with_left_out"]

KEEP_ENDED = 10_000  # the gateway keeps as many ended jobs in memory
KEEP_ENDED_S = 3600.0


async def old_ended(conn: Any) -> dict[str, tuple[str | None, str]]:
    """The old ended jobs (module docstring): job id -> (worker, status)."""
    clock = (
        await conn.execute(select(checkpoints_t.c.clock).where(checkpoints_t.c.stream == "WORKERS"))
    ).scalar()
    if not clock:
        return {}
    cutoff = format_time(parse_time(clock) - timedelta(seconds=KEEP_ENDED_S))
    q = (
        select(jobs_t.c.job_id, jobs_t.c.worker_id, jobs_t.c.status, jobs_t.c.finished_at)
        .where(
            jobs_t.c.status.in_(sorted(TERMINAL_NAMES)),
            jobs_t.c.submitted_at.is_not(None),
            jobs_t.c.finished_at.is_not(None),
        )
        .order_by(jobs_t.c.finished_at.desc(), jobs_t.c.job_id.desc())
        .offset(KEEP_ENDED)
    )
    return {j: (w, st) for j, w, st, fin in await conn.execute(q) if fin < cutoff}


async def totals(conn: Any) -> dict[tuple[str, str], int]:
    """The job_totals table: (worker, status) -> jobs left out of an earlier snapshot."""
    res = await conn.execute(select(job_totals_t))
    return {(r.worker_id, r.status): r.n for r in res}


def with_left_out(
    before: dict[tuple[str, str], int], left: dict[str, tuple[str | None, str]]
) -> list[list[Any]]:
    """job_totals rows after leaving out `left` (old_ended), in key order."""
    out = dict(before)
    for wid, status in left.values():
        if wid is not None:
            out[(wid, status)] = out.get((wid, status), 0) + 1
    return [[w, st, n] for (w, st), n in sorted(out.items())]
