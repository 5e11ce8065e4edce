"""The read-model store: SQLAlchemy 2 async, SQLite (aiosqlite) by default, PostgreSQL by URL.

Tables (projections.schema; portable types only; created with ``metadata.create_all``):

- ``workers``: one row per worker, the whole view as JSON (projections.view_json.to_dict) plus a
  few queryable columns (tier, pools, last seen, lifecycle times).
- ``tier_history``: every tier change, ``(worker_id, n)`` with ``since``, ``tier``, ``factor``.
- ``jobs``: one row per job (projections.jobs.JobView).
- ``checkpoints``: per stream (logical name) the last sequence applied, and the worker log
  clock (on the WORKERS row).
- ``meta``: schema version and the config the views were built under (uptime windows, tier
  policy, tick); a store built under other uptime windows is refused ("replay the log").
- ``open_hours``: the projector's hour rollups waiting for JOB_EVENTS (projections.hours);
  working state, not a read model: outside the digest, but in a snapshot.
- ``job_totals``: per worker and status, the old ended jobs a snapshot left out
  (projections.ended): a snapshot, and so a restore, is bounded by what is live; the digest
  covers every row but those jobs.

`Store.write` applies one batch of changes and the checkpoints in ONE transaction, with
executemany inserts/updates, so a projector killed anywhere resumes at the committed positions:
nothing applied twice, nothing skipped. Times are stored as fixed-width RFC 3339 strings
(``2026-11-22T12:00:00.000000Z``), which sort as time does in every database.

Errors: every method raises jetgrid errors only (projections.errors): `ReadModelUnavailable`
when the database cannot be reached or has no read-model tables, `ReadModelError` for any other
database failure, `ConfigError` for a URL that cannot be used or a database built under another
config. The URL in messages has its password masked. `Store.reader(url)` opens a store for
readers (the gateway) that keeps no connection between reads on SQLite.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import operator
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import (
    Boolean,
    bindparam,
    event,
    func,
    make_url,
    select,
)
from sqlalchemy.exc import (
    ArgumentError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from jetgrid.events import ConfigError, parse_time
from jetgrid.projections import ended
from jetgrid.projections import workers as wr
from jetgrid.projections.errors import ReadModelError, ReadModelUnavailable
from jetgrid.projections.fold import STREAMS, Changes, FoldConfig
from jetgrid.projections.jobs import JobView
from jetgrid.projections.schema import (
    ORDER,
    SCHEMA_VERSION,
    SQLITE_UPDATE_WORKER,
    TABLES,
    WORKER_SET,
    canonical_row,
    checkpoints_t,
    history_row,
    job_from_row,
    job_row,
    job_totals_t,
    jobs_t,
    meta_t,
    metadata,
    open_hours_t,
    param_update,
    plain_rows,
    sorted_json,
    tier_history_t,
    worker_row,
    workers_t,
)
from jetgrid.projections.view_json import ViewEncoder, format_optional_time, from_dict

__all__ = ["Loaded", "Store"]

# A worker row in SQLITE_UPDATE_WORKER's parameter order (the SET columns, then the key).
_SQLITE_WORKER_ROW = operator.itemgetter(*WORKER_SET, "b_worker_id")
log = logging.getLogger("jetgrid.projections.store")

P = ParamSpec("P")
T = TypeVar("T")

# Errors that mean "no read models here": the server is down or refuses us (Operational,
# Interface, a pool timeout, or the driver's own OSError on connect: asyncpg raises
# ConnectionRefusedError unwrapped), or the tables do not exist (SQLite: OperationalError "no
# such table"; PostgreSQL: ProgrammingError "relation does not exist").
_UNAVAILABLE = (OperationalError, InterfaceError, ProgrammingError, PoolTimeout, OSError)


@dataclass
class Loaded:
    """What a projector resumes from."""

    workers: dict[str, wr.WorkerView]
    positions: dict[str, int]
    clock: datetime | None
    history_counts: dict[str, int]
    open_hours: dict[str, str] = field(default_factory=dict)  # projections.hours


def _translated(
    doing: str,
) -> Callable[
    [Callable[Concatenate[Store, P], Awaitable[T]]], Callable[Concatenate[Store, P], Awaitable[T]]
]:
    """Decorate a Store method so that database errors leave it as projections.errors."""

    def deco(
        fn: Callable[Concatenate[Store, P], Awaitable[T]],
    ) -> Callable[Concatenate[Store, P], Awaitable[T]]:
        async def method(self: Store, /, *args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await fn(self, *args, **kwargs)
            except (SQLAlchemyError, OSError) as exc:
                raise self.error(doing, exc) from exc

        return functools.wraps(fn)(method)

    return deco


class Store:
    """The read models in one SQL database (see the module docstring)."""

    def __init__(self, url: str, *, echo: bool = False, **engine_args: Any) -> None:
        self.url = url
        try:
            self.display_url = make_url(url).render_as_string(hide_password=True)
            self.engine: AsyncEngine = create_async_engine(url, echo=echo, **engine_args)
        except ArgumentError as exc:  # not a URL, or an unknown dialect or driver
            raise ConfigError(
                f"Read-model database URL {url!r} cannot be used: {exc}. Expected e.g. "
                "'sqlite+aiosqlite:///path/views.db' or 'postgresql+asyncpg://user@host/db'."
            ) from exc
        except ImportError as exc:  # the URL's driver is not installed
            raise ConfigError(
                f"Read-model database URL {url!r} needs a driver that is not installed "
                f"({exc.name or exc}); install it (e.g. `pip install asyncpg`)."
            ) from exc
        if self.engine.dialect.name == "sqlite":
            # WAL lets gateways read while the projector writes; the busy timeout rides out the
            # moment a checkpoint holds the lock. Both are per connection, SQLite only.
            @event.listens_for(self.engine.sync_engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=10000")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

        self._sqlite = self.engine.dialect.name == "sqlite"
        self._known_workers: set[str] = set()
        self._view_encoder = ViewEncoder()  # caches per worker: one per Store
        self._known_jobs: set[str] = set()
        self._upd_worker = param_update(workers_t, "worker_id")
        self._upd_job = param_update(jobs_t, "job_id")
        self._upd_ckpt = (
            checkpoints_t.update()
            .where(checkpoints_t.c.stream == bindparam("b_stream"))
            .values(seq=bindparam("seq"), clock=bindparam("clock"))
        )

    @classmethod
    def reader(cls, url: str) -> Store:
        """A store for readers that come and go (the gateway's views): on SQLite without a
        connection pool, so no connection thread outlives a read; servers keep their pool."""
        if url.startswith("sqlite"):
            return cls(url, poolclass=NullPool)
        return cls(url)

    def error(self, doing: str, exc: BaseException) -> ReadModelError:
        """The jetgrid error for a database error `exc` met while `doing` something."""
        cause = getattr(exc, "orig", None) or exc
        if isinstance(exc, _UNAVAILABLE):
            return ReadModelUnavailable(
                f"The read models at {self.display_url!r} are not available while {doing} "
                f"({cause!r}); check the database URL (JETGRID_DB_URL) and that a projector "
                "(`jetgrid projector`, or `jetgrid up`) is writing them."
            )
        return ReadModelError(
            f"The read-model database at {self.display_url!r} failed while {doing}: {cause!r}."
        )

    async def close(self) -> None:
        await self.engine.dispose()

    # -- schema and config ----------------------------------------------------------------------
    @_translated("opening the read models")
    async def open(self, config: FoldConfig, *, on_policy_change: str = "warn") -> None:
        """Create the tables if missing; check or record the config the views depend on."""
        want = {"schema_version": SCHEMA_VERSION, **config.meta()}
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            have = {r.key: r.value for r in await conn.execute(select(meta_t))}
            rows = (await conn.execute(select(checkpoints_t.c.stream))).scalars().all()
            if not rows:
                await conn.execute(
                    checkpoints_t.insert(),
                    [{"stream": s, "seq": 0, "clock": None} for s in STREAMS],
                )
            if not have:
                await conn.execute(
                    meta_t.insert(), [{"key": k, "value": v} for k, v in want.items()]
                )
                return
            if have.get("schema_version") != SCHEMA_VERSION:
                raise ConfigError(
                    f"Read-model database {self.display_url!r} has schema version "
                    f"{have.get('schema_version')!r}, this jetgrid writes {SCHEMA_VERSION!r}; "
                    "replay the log into a fresh database (`jetgrid replay --db PATH`)."
                )
            for key in ("uptime_windows", "tier_window", "tick_s", "max_future_s"):
                if have.get(key) != want[key]:
                    raise ConfigError(
                        f"Read-model database {self.display_url!r} was built with "
                        f"{key}={have.get(key)!r} but the configured value is {want[key]!r}; "
                        "replay the log into a "
                        "fresh database (`jetgrid replay --db PATH`) or restore the setting."
                    )
            changed = [k for k in ("tier_policy", "probation", "hysteresis") if have[k] != want[k]]
            if changed:
                log.warning(
                    "tier policy changed (%s): tiers from now on follow the new policy; replay "
                    "the log to judge the past by it too",
                    ", ".join(f"{k} {have[k]!r} -> {want[k]!r}" for k in changed),
                )
                for k in changed:
                    await conn.execute(
                        meta_t.update().where(meta_t.c.key == k).values(value=want[k])
                    )

    @_translated("reading the read models' config")
    async def meta(self) -> dict[str, str]:
        async with self.engine.connect() as conn:
            return {r.key: r.value for r in await conn.execute(select(meta_t))}

    # -- resuming ---------------------------------------------------------------------------------
    @_translated("loading the worker views")
    async def load(self) -> Loaded:
        """Every worker view, the positions and the clock (jobs are loaded on demand)."""
        async with self.engine.connect() as conn:
            views = {}
            for wid, data in await conn.execute(select(workers_t.c.worker_id, workers_t.c.view)):
                views[wid] = from_dict(json.loads(data))
            positions, clock = {}, None
            for r in await conn.execute(select(checkpoints_t)):
                positions[r.stream] = r.seq
                if r.clock:
                    clock = parse_time(r.clock)
            counts = dict(
                (
                    await conn.execute(
                        select(tier_history_t.c.worker_id, func.max(tier_history_t.c.n)).group_by(
                            tier_history_t.c.worker_id
                        )
                    )
                ).all()
            )
            res = await conn.execute(select(open_hours_t.c.key, open_hours_t.c.value))
            hours: dict[str, str] = {k: v for k, v in res}
        self._known_workers = set(views)
        return Loaded(views, positions, clock, counts, hours)

    @_translated("loading job views")
    async def load_jobs(self, ids: Iterable[str]) -> dict[str, JobView]:
        """The stored views of these jobs (missing ids are simply absent)."""
        ids = list(ids)
        out: dict[str, JobView] = {}
        async with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                res = await conn.execute(select(jobs_t).where(jobs_t.c.job_id.in_(chunk)))
                for r in res.mappings():
                    out[r["job_id"]] = job_from_row(r)
        self._known_jobs.update(out)
        return out

    # -- writing -----------------------------------------------------------------------------------
    @_translated("writing a batch of views")
    async def write(self, changes: Changes, factor: Any) -> None:
        """Apply one batch and its positions in one transaction (executemany throughout)."""
        w_new: list[dict[str, Any]] = []
        w_upd: list[dict[str, Any]] = []
        j_new: list[dict[str, Any]] = []
        j_upd: list[dict[str, Any]] = []
        for v in changes.workers:
            row = worker_row(v, factor(v.tier), self._view_encoder.encode(v))
            (w_upd if v.worker_id in self._known_workers else w_new).append(row)
        for j in changes.jobs:
            row = job_row(j)
            (j_upd if j.job_id in self._known_jobs else j_new).append(row)
        hist = [history_row(c) for c in changes.tier_changes]
        clock = format_optional_time(changes.clock)
        ckpt = [
            {"b_stream": s, "seq": seq, "clock": clock if s == "WORKERS" else None}
            for s, seq in changes.positions.items()
        ]
        async with self.engine.begin() as conn:
            if w_new:
                await conn.execute(workers_t.insert(), plain_rows(w_new, "worker_id"))
            if w_upd and self._sqlite:
                # A live projector updates every pinging worker's row in every batch: SQLite's
                # driver executemany with positional rows skips SQLAlchemy's per-row parameter
                # processing (none of these columns needs any: text, float, and a bool that
                # sqlite3 stores as 0/1 just as SQLAlchemy's Boolean does).
                rows = list(map(_SQLITE_WORKER_ROW, w_upd))
                await conn.exec_driver_sql(SQLITE_UPDATE_WORKER, rows)
            elif w_upd:
                await conn.execute(self._upd_worker, w_upd)
            if j_new:
                await conn.execute(jobs_t.insert(), plain_rows(j_new, "job_id"))
            if j_upd:
                await conn.execute(self._upd_job, j_upd)
            if hist:
                await conn.execute(tier_history_t.insert(), hist)
            await conn.execute(self._upd_ckpt, ckpt)
            if changes.hours:
                await _write_hours(conn, changes.hours)
        self._known_workers.update(r["b_worker_id"] for r in w_new)
        self._known_jobs.update(r["b_job_id"] for r in j_new)

    def forget_jobs(self, keep: set[str]) -> None:
        """Bound the memory of which job rows exist (unknown ones are looked up again)."""
        self._known_jobs &= keep

    # -- reading -----------------------------------------------------------------------------------
    @_translated("reading the stream positions")
    async def positions(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            return {r.stream: r.seq for r in await conn.execute(select(checkpoints_t))}

    @_translated("reading the worker views")
    async def worker_rows(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            res = await conn.execute(select(workers_t).order_by(workers_t.c.worker_id))
            return [dict(r) for r in res.mappings()]

    @_translated("reading a worker view")
    async def worker_row(self, worker_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            res = await conn.execute(select(workers_t).where(workers_t.c.worker_id == worker_id))
            r = res.mappings().first()
            return None if r is None else dict(r)

    @_translated("counting jobs per worker")
    async def job_counts(self, worker_id: str | None = None) -> dict[str, dict[str, int]]:
        """{worker_id: {status: count}} over the jobs table (terminal outcomes per worker)."""
        q = select(jobs_t.c.worker_id, jobs_t.c.status, func.count()).group_by(
            jobs_t.c.worker_id, jobs_t.c.status
        )
        if worker_id is not None:
            q = q.where(jobs_t.c.worker_id == worker_id)
        out: dict[str, dict[str, int]] = {}
        async with self.engine.connect() as conn:
            for wid, status, n in await conn.execute(q):
                if wid is not None:
                    out.setdefault(wid, {})[status] = n
            for (wid, status), n in (await ended.totals(conn)).items():  # left out of a snapshot
                if worker_id is None or wid == worker_id:
                    got = out.setdefault(wid, {})
                    got[status] = got.get(status, 0) + n
        return out

    @_translated("reading tier history")
    async def tier_history(self, worker_id: str | None = None) -> list[dict[str, Any]]:
        q = select(tier_history_t).order_by(tier_history_t.c.worker_id, tier_history_t.c.n)
        if worker_id is not None:
            q = q.where(tier_history_t.c.worker_id == worker_id)
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(q)).mappings()]

    @_translated("reading the job views")
    @_translated("loading queued jobs")
    async def queued_jobs(self) -> list[JobView]:
        """Every job whose stored status is ``queued``."""
        async with self.engine.connect() as conn:
            res = await conn.execute(select(jobs_t).where(jobs_t.c.status == "queued"))
            return [job_from_row(r) for r in res.mappings()]

    async def jobs(self) -> list[JobView]:
        async with self.engine.connect() as conn:
            res = await conn.execute(select(jobs_t).order_by(jobs_t.c.job_id))
            return [job_from_row(r) for r in res.mappings()]

    @_translated("computing the digest")
    async def digest(self) -> str:
        """sha256 over a canonical dump of every read-model row (all tables, ordered by key)
        but the old ended jobs (projections.ended)."""
        async with self.engine.connect() as conn:
            return await _digest(conn)

    # -- snapshots (projections.snapshot) ------------------------------------------------------
    @_translated("dumping the read models")
    async def dump(self) -> tuple[dict[str, dict[str, Any]], str]:
        """Every row of every table but the old ended jobs (projections.ended), whose counts go
        to ``job_totals`` (``{table: {"columns": [...], "rows": [[...]]}}``, rows in key order,
        booleans as 0/1), and the digest of exactly those rows, read in one transaction."""
        out: dict[str, dict[str, Any]] = {}
        async with self.engine.begin() as conn:
            left = await ended.old_ended(conn)
            for table in TABLES:
                order = [table.c[k] for k in ORDER[table.name]]
                res = await conn.execute(select(table).order_by(*order))
                rows = [canonical_row(r) for r in res]
                if table is jobs_t and left:
                    rows = [r for r in rows if r[0] not in left]
                out[table.name] = {"columns": [c.name for c in table.columns], "rows": rows}
            got = ended.with_left_out(await ended.totals(conn), left)
            out[job_totals_t.name] = {"columns": ["worker_id", "status", "n"], "rows": got}
            res = await conn.execute(select(open_hours_t).order_by(open_hours_t.c.key))
            out[open_hours_t.name] = {"columns": ["key", "value"], "rows": [list(r) for r in res]}
            digest = await _digest(conn)
        return out, digest

    @_translated("restoring the read models from a snapshot")
    async def restore(self, tables: dict[str, dict[str, Any]], digest: str) -> bool:
        """Replace this (empty) store's rows by `tables` (Store.dump's form) in one transaction,
        committed only if the digest of the result is `digest`; False (nothing kept) if not."""
        async with self.engine.connect() as conn:
            trans = await conn.begin()
            for table in TABLES:
                await conn.execute(table.delete())
                got = tables[table.name]
                cols = [c.name for c in table.columns]
                if got["columns"] != cols:
                    await trans.rollback()
                    return False
                rows = [dict(zip(cols, r, strict=True)) for r in got["rows"]]
                for c in table.columns:
                    if isinstance(c.type, Boolean):
                        for r in rows:
                            r[c.name] = None if r[c.name] is None else bool(r[c.name])
                if rows:
                    await conn.execute(table.insert(), rows)
            if await _digest(conn) != digest:
                await trans.rollback()
                return False
            await conn.execute(open_hours_t.delete())
            hours = tables.get(open_hours_t.name, {}).get("rows") or []  # older snapshots: none
            await _write_hours(conn, {str(k): str(v) for k, v in hours})
            await conn.execute(job_totals_t.delete())
            totals = tables.get(job_totals_t.name, {}).get("rows") or []
            if totals:
                await conn.execute(
                    job_totals_t.insert(),
                    [{"worker_id": str(w), "status": str(st), "n": int(n)} for w, st, n in totals],
                )
            await trans.commit()
        self._known_workers.clear()
        self._known_jobs.clear()
        return True


async def _write_hours(conn: Any, rows: dict[str, str | None]) -> None:
    """Replace the open-hours keys in `rows` (None: delete the key)."""
    if not rows:
        return
    await conn.execute(open_hours_t.delete().where(open_hours_t.c.key.in_(list(rows))))
    new = [{"key": k, "value": v} for k, v in rows.items() if v is not None]
    if new:
        await conn.execute(open_hours_t.insert(), new)


async def _digest(conn: Any) -> str:
    """sha256 over every row of every table but the old ended jobs (projections.ended)."""
    left = await ended.old_ended(conn)
    h = hashlib.sha256()
    for table in TABLES:
        h.update(f"table {table.name}\n".encode())
        cols = [c.name for c in table.columns]
        order = [table.c[k] for k in ORDER[table.name]]
        res = await conn.execute(select(table).order_by(*order))
        for row in res:
            if table is jobs_t and left and row[0] in left:
                continue
            h.update(sorted_json(dict(zip(cols, canonical_row(row), strict=True))).encode())
            h.update(b"\n")
    return h.hexdigest()
