"""The live queue on a real gateway: GET /v1/queue per pool, model and tenant, each queued job's
position and ETA, the same figures in /metrics; and deadlines (`start_by`, `ttl_s`) ending
queued jobs `expired` through the gateway's sweep, with one event however many gateways sweep."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from nats.aio.client import Client as NATS

from jetgrid.cli import main
from jetgrid.coordinator.settings import Settings
from jetgrid.events import decode
from jetgrid.events import now as wall_clock
from jetgrid.gateway.app import Gateway
from jetgrid.gateway.queue_api import Expiry
from jetgrid.gateway.schemas import QueueList
from tests.gateway.conftest import in_process
from tests.helpers import read_stream, until

pytestmark = pytest.mark.integration

GHOST = {"model": "ghost:1b", "prompt": "anyone?", "pool": "standard"}
QUEUE_UNSERVED = "/v1/jobs?queue_unserved=true"


@pytest.fixture
async def inproc(streams: Settings) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    """The gateway app in this process (its state at hand: the clock can be moved)."""
    async with in_process(streams) as (gw, http):
        yield gw, http


async def submit(http: httpx.AsyncClient, tenant: str, **fields: Any) -> str:
    r = await http.post(
        QUEUE_UNSERVED, json={**GHOST, **fields}, headers={"x-jetgrid-submitter": tenant}
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def row_of(body: dict[str, Any]) -> dict[str, Any]:
    (row,) = [r for r in body["queues"] if (r["pool"], r["model"]) == ("standard", "ghost:1b")]
    return row


async def test_queue_per_pool_model_and_tenant_with_positions_and_metrics(
    inproc: tuple[Gateway, httpx.AsyncClient],
    start_worker: Callable[..., Awaitable[Any]],
) -> None:
    _, http = inproc
    a1 = await submit(http, "acme")
    a2 = await submit(http, "acme", priority="low")
    b1 = await submit(http, "beta", priority="high")
    a3 = await submit(http, "acme")

    async def queued() -> dict[str, Any] | None:
        row = row_of((await http.get("/v1/queue")).json())
        return row if row["queued"] == 4 else None

    row = await until(queued)
    assert row["running"] == 0 and row["oldest_wait_s"] is not None
    assert (row["wait_p50_s"], row["wait_p95_s"], row["drain_per_s"]) == (None, None, 0.0)
    tenants = {t["tenant"]: t for t in row["tenants"]}
    assert (tenants["acme"]["queued"], tenants["beta"]["queued"]) == (3, 1)
    # high before normal before low; in stream order within a priority; tenants share the line
    places = {}
    for job_id in (a1, a2, b1, a3):
        body = (await http.get(f"/v1/jobs/{job_id}")).json()
        places[job_id] = (body["position"], body["eta_s"], body["submitter"])
    assert places == {
        b1: (1, None, "beta"), a1: (2, None, "acme"), a3: (3, None, "acme"), a2: (4, None, "acme")
    }  # fmt: skip
    metrics = (await http.get("/metrics")).text
    assert (
        'jetgrid_queue_jobs{model="ghost:1b",pool="standard",state="queued",tenant="acme"} 3.0'
        in metrics
    )

    await start_worker("ghost:1b", concurrency=1)

    async def drained() -> dict[str, Any] | None:
        row = row_of((await http.get("/v1/queue")).json())
        return row if row["queued"] == 0 and row["running"] == 0 else None

    row = await until(drained)
    QueueList.model_validate((await http.get("/v1/queue")).json())  # the documented shape
    assert row["drain_per_s"] > 0 and row["wait_p50_s"] is not None
    assert row["wait_p95_s"] >= row["wait_p50_s"] >= 0
    done = (await http.get(f"/v1/jobs/{a1}")).json()
    assert done["status"] == "completed" and done["position"] is None and done["eta_s"] is None
    metrics = (await http.get("/metrics")).text
    assert 'jetgrid_queue_drain_per_second{model="ghost:1b",pool="standard",tenant="beta"}' in (
        metrics
    )


async def test_a_queued_job_past_its_deadline_ends_expired_once_whoever_sweeps(
    inproc: tuple[Gateway, httpx.AsyncClient], streams: Settings, nc: NATS
) -> None:
    gw, http = inproc
    soon = await submit(http, "acme", ttl_s=30)
    later = await submit(http, "acme", start_by=(wall_clock() + timedelta(hours=1)).isoformat())
    await until(lambda: len(gw.queue.queued.get(("standard", "ghost:1b"), {})) == 2)
    body = (await http.get(f"/v1/jobs/{soon}")).json()
    assert body["status"] == "queued" and body["deadline"] is not None

    ahead = wall_clock() + timedelta(seconds=60)  # past `soon`'s deadline and the sweep's grace
    gw.clock = lambda: ahead
    other = Expiry(gw.bus, gw.speaker, gw.queue, lambda: ahead)  # a second gateway's sweep
    assert await gw.expiry.sweep() + await other.sweep() >= 1

    async def expired() -> dict[str, Any] | None:
        body = (await http.get(f"/v1/jobs/{soon}")).json()
        return body if body["status"] == "expired" else None

    body = await until(expired)
    assert body["error_type"] == "expired" and "deadline" in body["error"]
    assert (await http.get(f"/v1/jobs/{later}")).json()["status"] == "queued"
    assert await gw.expiry.sweep() == 0  # it is no longer queued
    msgs = await read_stream(
        nc.jetstream(), streams.streams.job_events, streams.subjects.job_events(soon)
    )
    assert [m.subject.rsplit(".", 1)[-1] for m in msgs] == ["expired"]  # one, from two sweeps
    view = gw.board.get(soon)
    assert view is not None and view.jobs_seq is not None
    assert decode(msgs[0].data).event.jobs_seq == view.jobs_seq  # the webhook service reads it
    r = await http.get(f"/v1/jobs/{soon}/result")
    assert r.status_code == 409 and "expired" in r.json()["error"]["message"]
    listed = (await http.get("/v1/jobs?status=expired")).json()["jobs"]
    assert [j["id"] for j in listed] == [soon]


async def test_a_start_by_already_past_is_422_naming_the_field(
    inproc: tuple[Gateway, httpx.AsyncClient],
) -> None:
    _, http = inproc
    past = (wall_clock() - timedelta(minutes=5)).isoformat()
    r = await http.post(QUEUE_UNSERVED, json={**GHOST, "start_by": past})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == "start_by" and "already passed" in err["message"]
    r = await http.post(QUEUE_UNSERVED, json={**GHOST, "start_by": "2026-12-05T12:00:00"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "start_by"  # no offset
    r = await http.post(QUEUE_UNSERVED, json={**GHOST, "ttl_s": 0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "ttl_s"


async def test_jetgrid_pools_prints_the_gateways_queue_per_tenant(
    gateway: str, streams: Settings
) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        for tenant in ("acme", "acme", "beta"):
            await submit(http, tenant)

        async def queued() -> bool:
            return bool(row_of((await http.get("/v1/queue")).json())["queued"] == 3)

        await until(queued)
    env = {
        "JETGRID_NATS_URL": streams.nats_url,
        "JETGRID_SUBJECT_PREFIX": streams.subject_prefix,
        "JETGRID_STREAM_PREFIX": streams.stream_prefix,
    }
    args = ["pools", "--queue", gateway]
    out = await asyncio.to_thread(CliRunner().invoke, main, args, env=env)
    assert out.exit_code == 0, out.output
    lines = out.stdout.split("\n\n", 1)[1].splitlines()
    assert lines[0].split() == [
        "POOL", "MODEL", "TENANT", "QUEUED", "RUNNING", "OLDEST", "WAIT-P50", "WAIT-P95",
        "DRAIN/S", "SHARE",
    ]  # fmt: skip
    rows = {tuple(line.split()[:3]): line.split()[3:] for line in lines[1:-1]}
    assert rows[("standard", "ghost:1b", "(all)")][:2] == ["3", "0"]
    assert rows[("standard", "ghost:1b", "acme")][:2] == ["2", "0"]
    assert rows[("standard", "ghost:1b", "beta")][:2] == ["1", "0"]
    assert lines[-1] == "(waits and drain over the last 300 s)"
    as_json = await asyncio.to_thread(CliRunner().invoke, main, [*args, "--json"], env=env)
    assert row_of(json.loads(as_json.stdout)["queue"])["queued"] == 3
    bad = ["pools", "--queue", "http://127.0.0.1:9"]
    out = await asyncio.to_thread(CliRunner().invoke, main, bad, env=env)
    assert out.exit_code == 1 and "Could not read http://127.0.0.1:9/v1/queue" in out.output
