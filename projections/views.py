"""Read side of the worker read models: WorkerOut documents and the tiers view.

`worker_out(view, now, ...)` is the one WorkerOut (the shape agreed in the README) of a worker
view; `workers_out` builds them from the projector's Store (``GET /v1/workers``,
``/v1/workers/{id}``, with tiers and job counts from its tables), and the gateway's live fleet
(gateway.fleet) from its own fold. Availability (projections.workers.availability) and uptime
are judged at the later of ``now`` (the caller's wall clock) and the view's own log time, so a
worker that stopped pinging turns stale, then offline, even when the log has gone quiet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from jetgrid.coordinator.fallback import DEFAULT_FALLBACK_WAIT_S, share
from jetgrid.coordinator.tiers import DEFAULT_POLICY, PROBATION, TierPolicy
from jetgrid.events import format_time
from jetgrid.projections import workers as wr
from jetgrid.projections.store import Store
from jetgrid.projections.uptime import window_label
from jetgrid.projections.view_json import from_dict

__all__ = ["policy_of", "tiers_view", "worker_out", "workers_out"]


def worker_out(
    view: wr.WorkerView,
    now: datetime,
    *,
    tier: str | None = None,
    tier_factor: float | None = None,
    tier_since: str | None = None,
    jobs: Mapping[str, int] | None = None,
    policy: TierPolicy | None = None,
    tier_window: str | None = None,
    fallback_wait_s: float = DEFAULT_FALLBACK_WAIT_S,
) -> dict[str, Any]:
    """One WorkerOut (the shape agreed in the README) of `view` at `now`; the tier fields and
    the job counts come from whoever has them (the projector's tables). ``share`` says why the
    worker takes little or no work (coordinator.fallback.share: its tier and the uptime over
    `tier_window`, the window tiers are judged over; default the first)."""
    at = max(now, view.as_of)
    uptime: dict[str, float | None] = {}
    if view.uptime is not None:
        for w in view.uptime.windows(at.timestamp()):
            uptime[w.label] = w.uptime
    else:
        uptime = {"1h": None, "24h": None}
    ping = view.last_ping
    counts = jobs or {}
    window = tier_window if tier_window in uptime else next(iter(uptime), "1h")
    why = share(
        policy or DEFAULT_POLICY,
        tier=tier,
        factor=tier_factor,
        uptime=uptime.get(window),
        window=window,
        base_s=fallback_wait_s,
    )
    return {
        "id": view.worker_id,
        "availability": wr.availability(view, at),
        "pools": list(view.pools),
        "models": list(view.models),
        "backend": view.backend,
        "concurrency": view.concurrency,
        "in_flight": 0 if ping is None else ping.in_flight,
        "last_ping": None if ping is None else format_time(ping.time),
        "healthy": None if ping is None else ping.healthy,
        "nvml": False if ping is None else ping.nvml,
        "gpus": [] if ping is None else [g.model_dump(mode="json") for g in ping.gpus],
        "tier": tier,
        "tier_factor": tier_factor,
        "tier_since": tier_since,
        "uptime": uptime,
        "share": why,
        "jobs": {"completed": counts.get("completed", 0), "failed": counts.get("failed", 0)},
        "registered": view.registered,
        "lifecycle": view.lifecycle,
    }


async def workers_out(
    store: Store, worker_id: str | None = None, fallback_wait_s: float = DEFAULT_FALLBACK_WAIT_S
) -> list[dict[str, Any]]:
    """WorkerOut for every worker (or the one given; [] if unknown), ordered by id, judged at
    the wall clock under the store's tier policy; ReadModelUnavailable when the store has no
    read models to give."""
    if worker_id is None:
        rows = await store.worker_rows()
    else:
        row = await store.worker_row(worker_id)
        rows = [] if row is None else [row]
    counts = await store.job_counts(worker_id)
    meta = await store.meta()
    policy = policy_of(meta) if "tier_policy" in meta else DEFAULT_POLICY
    window = window_label(float(meta["tier_window"])) if meta.get("tier_window") else None
    now = datetime.now(UTC)
    return [
        _row_out(r, counts.get(r["worker_id"]), now, policy, window, fallback_wait_s) for r in rows
    ]


def _row_out(
    row: Mapping[str, Any],
    counts: Mapping[str, int] | None,
    now: datetime,
    policy: TierPolicy,
    window: str | None,
    fallback_wait_s: float,
) -> dict[str, Any]:
    """WorkerOut of a `workers` row, with its projected tier and the jobs table's counts."""
    return worker_out(
        from_dict(json.loads(row["view"])),
        now,
        tier=row["tier"],
        tier_factor=row["tier_factor"],
        tier_since=row["tier_since"],
        jobs=counts,
        policy=policy,
        tier_window=window,
        fallback_wait_s=fallback_wait_s,
    )


def policy_of(meta: dict[str, str]) -> TierPolicy:
    """The tier policy the read models were built under (from the store's meta table)."""
    slots, factor = meta["probation"].split(":")
    return TierPolicy.from_string(
        meta["tier_policy"],
        probation_slots=int(slots),
        probation_factor=float(factor),
        hysteresis=float(meta["hysteresis"]),
    )


async def tiers_view(store: Store) -> dict[str, Any]:
    """{"policy": TierPolicy.as_dict(), "tiers": {name: [worker ids]}} for ``GET /v1/tiers``."""
    policy = policy_of(await store.meta())
    members: dict[str, list[str]] = {t.name: [] for t in policy.tiers}
    members.setdefault(PROBATION, [])
    for row in await store.worker_rows():
        members.setdefault(row["tier"], []).append(row["worker_id"])
    return {"policy": policy.as_dict(), "tiers": members}
