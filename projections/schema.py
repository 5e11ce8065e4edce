"""The read models' tables, and how a view or a job maps to a row and back.

Portable types only (SQLite and PostgreSQL); times are fixed-width RFC 3339 strings
(``2026-11-22T12:00:00.000000Z``), which sort as time does in every database. A worker's row
holds its whole view as JSON (projections.view_json.to_dict, key order fixed so the text is
canonical) plus a few queryable columns. projections.store reads and writes them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
)

from jetgrid.projections import workers as wr
from jetgrid.projections.fold import TierChange
from jetgrid.projections.jobs import JobView
from jetgrid.projections.view_json import (
    format_optional_time,
    format_time,
    parse_optional_time,
    to_dict,
)

SCHEMA_VERSION = "1"
metadata = MetaData()

workers_t = Table(
    "workers",
    metadata,
    Column("worker_id", String(128), primary_key=True),
    Column("view", Text, nullable=False),
    Column("tier", String(32), nullable=False),
    Column("tier_factor", Float),
    Column("tier_since", String(32)),
    Column("pools", Text, nullable=False),  # JSON list
    Column("registered", Boolean, nullable=False),
    Column("lifecycle", String(16), nullable=False),
    Column("first_seen", String(32), nullable=False),
    Column("last_seen", String(32), nullable=False),
    Column("last_ping_at", String(32)),
    Column("as_of", String(32), nullable=False),
)
tier_history_t = Table(
    "tier_history",
    metadata,
    Column("worker_id", String(128), primary_key=True),
    Column("n", Integer, primary_key=True, autoincrement=False),
    Column("since", String(32), nullable=False, index=True),
    Column("tier", String(32), nullable=False),
    Column("factor", Float),
)
jobs_t = Table(
    "jobs",
    metadata,
    Column("job_id", String(128), primary_key=True),
    Column("status", String(16), nullable=False, index=True),
    Column("model", Text),
    Column("pool", String(128)),
    Column("kind", String(32)),
    Column("priority", String(32)),
    Column("worker_id", String(128), index=True),
    Column("attempts", Integer, nullable=False),
    Column("submitted_at", String(32)),
    Column("claimed_at", String(32)),
    Column("started_at", String(32)),
    Column("finished_at", String(32)),
    Column("output", Text),  # JSON
    Column("usage", Text),  # JSON
    Column("error", Text),
    Column("error_type", String(64)),
    Column("cancel_requested", Boolean, nullable=False),
    Column("progress", Float),
    Column("retries", Integer, nullable=False),
    Column("duplicates", Integer, nullable=False),
    Column("terminal_seq", BigInteger),
    Column("jobs_seq", BigInteger),
)
checkpoints_t = Table(
    "checkpoints",
    metadata,
    Column("stream", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),  # stream sequences outgrow 32 bits
    Column("clock", String(32)),
)
meta_t = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
# The projector's open hours (projections.hours): working state saved with each batch, not a
# read model, so outside TABLES and the digest; a snapshot carries it (Store.dump).
open_hours_t = Table(
    "open_hours",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)
# Per worker and status, the ended jobs a snapshot left out (projections.ended); outside TABLES
# and the digest, in a snapshot.
job_totals_t = Table(
    "job_totals",
    metadata,
    Column("worker_id", String(128), primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("n", BigInteger, nullable=False),
)
TABLES = (workers_t, tier_history_t, jobs_t, checkpoints_t, meta_t)
ORDER = {
    "workers": ("worker_id",),
    "tier_history": ("worker_id", "n"),
    "jobs": ("job_id",),
    "checkpoints": ("stream",),
    "meta": ("key",),
}


# One encoder each, built once: json.dumps with non-default options builds a new JSONEncoder
# per call, which costs as much as encoding a small value. The output is the same text.
_SORTED = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
COMPACT = json.JSONEncoder(separators=(",", ":"))


def sorted_json(value: Any) -> str:
    return _SORTED.encode(value)


@functools.lru_cache(maxsize=4096)
def _pools_json(pools: tuple[str, ...]) -> str:
    """The pools column of a view: the same few tuples, encoded once each."""
    return sorted_json(list(pools))


def worker_row(
    view: wr.WorkerView, factor: float | None, text: str | None = None
) -> dict[str, Any]:
    """The row of a view; `text`: its JSON if already encoded (projections.view_json)."""
    return {
        "b_worker_id": view.worker_id,
        # to_dict's key order is fixed, so the text is canonical without sorting (and faster).
        "view": COMPACT.encode(to_dict(view)) if text is None else text,
        "tier": view.tier,
        "tier_factor": factor,
        "tier_since": format_optional_time(view.tier_since),
        "pools": _pools_json(view.pools),
        "registered": view.registered,
        "lifecycle": view.lifecycle,
        "first_seen": format_time(view.first_seen),
        "last_seen": format_time(view.last_seen),
        "last_ping_at": format_optional_time(view.last_ping_at),
        "as_of": format_time(view.as_of),
    }


def job_row(v: JobView) -> dict[str, Any]:
    return {
        "b_job_id": v.job_id,
        "status": v.status,
        "model": v.model,
        "pool": v.pool,
        "kind": v.kind,
        "priority": v.priority,
        "worker_id": v.worker_id,
        "attempts": v.attempts,
        "submitted_at": format_optional_time(v.submitted_at),
        "claimed_at": format_optional_time(v.claimed_at),
        "started_at": format_optional_time(v.started_at),
        "finished_at": format_optional_time(v.finished_at),
        "output": None if v.output is None else sorted_json(v.output),
        "usage": None if v.usage is None else sorted_json(v.usage),
        "error": v.error,
        "error_type": v.error_type,
        "cancel_requested": v.cancel_requested,
        "progress": v.progress,
        "retries": v.retries,
        "duplicates": v.duplicates,
        "terminal_seq": v.terminal_seq,
        "jobs_seq": v.jobs_seq,
    }


def job_from_row(r: Mapping[Any, Any]) -> JobView:
    return JobView(
        job_id=r["job_id"],
        status=r["status"],
        model=r["model"],
        pool=r["pool"],
        kind=r["kind"],
        priority=r["priority"],
        jobs_seq=r["jobs_seq"],
        submitted_at=parse_optional_time(r["submitted_at"]),
        worker_id=r["worker_id"],
        attempts=r["attempts"],
        claimed_at=parse_optional_time(r["claimed_at"]),
        started_at=parse_optional_time(r["started_at"]),
        finished_at=parse_optional_time(r["finished_at"]),
        output=None if r["output"] is None else json.loads(r["output"]),
        usage=None if r["usage"] is None else json.loads(r["usage"]),
        error=r["error"],
        error_type=r["error_type"],
        cancel_requested=bool(r["cancel_requested"]),
        progress=r["progress"],
        retries=r["retries"],
        duplicates=r["duplicates"],
        terminal_seq=r["terminal_seq"],
    )


WORKER_SET = tuple(c.name for c in workers_t.columns if c.name != "worker_id")
# The same UPDATE as param_update(workers_t, "worker_id"), as plain SQL with qmark parameters
# for SQLite's driver (see Store.write).
SQLITE_UPDATE_WORKER = (
    f"UPDATE {workers_t.name} SET {', '.join(f'{c} = ?' for c in WORKER_SET)} WHERE worker_id = ?"
)


def param_update(table: Table, key: str) -> Any:
    """UPDATE table SET <every other column> WHERE key = :b_key, for executemany."""
    cols: dict[str, Any] = {c.name: bindparam(c.name) for c in table.columns if c.name != key}
    return table.update().where(table.c[key] == bindparam(f"b_{key}")).values(cols)


def plain_rows(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Rows keyed for INSERT: `b_<key>` back to `<key>`."""
    out = []
    for r in rows:
        d = dict(r)
        d[key] = d.pop(f"b_{key}")
        out.append(d)
    return out


def canonical_row(row: Any) -> list[Any]:
    # Booleans come back as 0/1 from SQLite and True/False from PostgreSQL: compare as ints.
    return [int(v) if isinstance(v, bool) else v for v in row]


def history_row(c: TierChange) -> dict[str, Any]:
    return {
        "worker_id": c.worker_id,
        "n": c.n,
        "since": format_time(c.since),
        "tier": c.tier,
        "factor": c.factor,
    }
