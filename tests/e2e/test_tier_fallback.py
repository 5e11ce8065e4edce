"""Tiers shape shares, they do not strand jobs (coordinator.fallback), with real workers.

The workers' tiers are written into the tiers KV bucket directly (what the projector would
put there), so the tests need no uptime history; the fallback wait is a setting, kept short."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from jetgrid.cli.pools import render
from jetgrid.coordinator.provision import ensure_tiers_bucket
from jetgrid.coordinator.settings import Settings
from jetgrid.gateway.server import serving
from jetgrid.projections.audit import BudgetRule, report_worker
from jetgrid.projections.audit_log import gather
from jetgrid.projections.fold import fold_config
from jetgrid.projections.pools import read_pool_status
from jetgrid.worker.backends.echo import EchoBackend
from tests.helpers import held_back, until
from tests.helpers.jobs import job, submit

pytestmark = [pytest.mark.integration]

FACTORS = {"full": 1.0, "half": 0.5, "tenth": 0.1, "none": 0.0}


async def _tiers(nc, s: Settings, **tiers: str) -> None:
    js = nc.jetstream()
    await ensure_tiers_bucket(js, s.tiers_bucket)
    kv = await js.key_value(s.tiers_bucket)
    for worker_id, tier in tiers.items():
        await kv.put(worker_id, json.dumps({"tier": tier, "factor": FACTORS[tier]}).encode())


def _claims(outcomes, job_ids):
    return [c for j in job_ids for c in outcomes.claims(j)]


async def test_a_model_served_only_by_a_tier_none_worker_completes_its_jobs(
    streams, nc, bus, start_worker, outcomes
) -> None:
    s = streams.replace(fallback_wait_s=0.1)  # tier none waits 4 x 0.1 s
    await _tiers(nc, s, lonely="none")
    w = await start_worker(settings=s, worker_id="lonely", concurrency=2)
    await until(lambda: w.gate.tier == "none" and w.gate.factor == 0, timeout=10)
    ids = [f"j{i}" for i in range(6)]
    await submit(nc, s, *(job(i) for i in range(6)))
    await outcomes.wait_terminal(*ids, timeout=30)
    assert all(outcomes.names(j)[-1] == "completed" for j in ids)
    claims = _claims(outcomes, ids)
    assert claims and all(c.fallback and c.tier_factor == 0 for c in claims)
    # The audit, replaying the log, counts them apart and not as budget violations.
    audit = await gather(s, bus, fold_config(s))
    report = {w.worker_id: report_worker(w, BudgetRule()) for w in audit.workers()}["lonely"]
    assert report["taken_for_want_of_better"] == len(claims) >= 6
    assert report["over_budget"] == 0


async def test_two_tier_none_workers_of_one_model_both_serve_it(
    streams, nc, start_worker, outcomes
) -> None:
    s = streams.replace(fallback_wait_s=0.1)
    await _tiers(nc, s, a="none", b="none")
    slow = EchoBackend(latency_s=0.05)
    wa = await start_worker(settings=s, worker_id="a", concurrency=2, backend=slow)
    wb = await start_worker(settings=s, worker_id="b", concurrency=2, backend=slow)
    await until(lambda: (wa.gate.tier, wb.gate.tier) == ("none", "none"), timeout=10)
    ids = [f"j{i}" for i in range(30)]
    await submit(nc, s, *(job(i) for i in range(30)))
    await outcomes.wait_terminal(*ids, timeout=60)
    claims = _claims(outcomes, ids)
    assert all(outcomes.names(j)[-1] == "completed" for j in ids)
    assert all(c.fallback for c in claims)


async def test_with_the_fallback_off_a_tier_none_worker_takes_nothing(
    streams, nc, start_worker, outcomes
) -> None:
    s = streams.replace(fallback_wait_s=0.0)
    await _tiers(nc, s, lonely="none")
    w = await start_worker(settings=s, worker_id="lonely")
    await until(lambda: held_back(w), timeout=10)
    await submit(nc, s, job(1))
    rounds = w.pinger.counters.sent
    await until(lambda: w.pinger.counters.sent >= rounds + 3, timeout=20)
    assert not outcomes.events["j1"]


async def test_at_saturation_a_tier_none_worker_leaves_the_jobs_to_a_full_one(
    streams, nc, start_worker, outcomes
) -> None:
    # The full worker takes a job every ~20 ms; the none worker's wait is 2 s, so the consumer
    # never stalls for it: every job goes to the full worker, none is a fallback take.
    s = streams.replace(fallback_wait_s=0.5, heartbeat_interval_s=0.2)
    await _tiers(nc, s, good="full", poor="none")
    good = await start_worker(settings=s, worker_id="good", backend=EchoBackend(latency_s=0.02))
    poor = await start_worker(settings=s, worker_id="poor")
    await until(lambda: good.gate.tier == "full" and held_back(poor), timeout=10)
    ids = [f"j{i}" for i in range(40)]
    await submit(nc, s, *(job(i) for i in range(40)))
    await outcomes.wait_terminal(*ids, timeout=30)
    claims = _claims(outcomes, ids)
    assert {c.worker_id for c in claims} == {"good"}
    assert not any(c.fallback for c in claims)


async def test_pools_show_the_jobs_that_wait_on_a_held_back_worker(
    streams, nc, bus, start_worker, outcomes
) -> None:
    # The fallback is off, so the jobs stay where they are while the views are read.
    s = streams.replace(fallback_wait_s=0.0, heartbeat_interval_s=0.1)
    await _tiers(nc, s, lonely="none")
    w = await start_worker(settings=s, worker_id="lonely")
    await until(lambda: held_back(w), timeout=10)
    await submit(nc, s, *(job(i) for i in range(3)))
    pings = w.pinger.counters.sent
    await until(lambda: w.pinger.counters.sent >= pings + 2, timeout=10)  # pinged factor 0

    rows = await read_pool_status(bus, s, time.time())  # what `jetgrid pools` shows
    (row,) = [r for r in rows if r.model == "echo"]
    assert (row.backlog, row.held_back_workers, row.held_back_jobs) == (3, ["lonely"], 3)
    assert "3 job(s) wait on workers held back by their tier" in render(rows)

    async with serving(s.replace(gateway_port=0)) as url, httpx.AsyncClient(base_url=url) as http:

        async def held() -> dict | None:
            doc = (await http.get("/v1/pools")).json()
            pool = next(p for p in doc["pools"] if p["name"] == "standard")
            return pool if pool["held_back_jobs"] == 3 else None

        pool = await until(held, timeout=10)
    (c,) = [c for c in pool["consumers"] if c["model"] == "echo"]
    assert c["held_back_workers"] == ["lonely"] and c["held_back_jobs"] == 3
    assert not outcomes.events["j0"]
