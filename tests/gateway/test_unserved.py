"""A submit for a model no worker serves is refused (422) unless queued on purpose, and then
visible in /v1/pools, `jetgrid pools` and /metrics."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from click.testing import CliRunner
from nats.aio.client import Client as NATS

from jetgrid.cli import main
from jetgrid.coordinator.settings import Settings

pytestmark = pytest.mark.integration

GHOST = {"model": "ghost:1b", "prompt": "anyone?", "pool": "standard"}


async def test_a_model_no_worker_serves_is_422_naming_the_way_to_queue_it(
    gateway: str, streams: Settings, nc: NATS
) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        r = await http.post("/v1/jobs", json=GHOST)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["field"] == "model"
        assert "'ghost:1b'" in err["message"] and "queue_unserved=true" in err["message"]
        bad = await http.post("/v1/jobs?queue_unserved=maybe", json=GHOST)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "queue_unserved"
    info = await nc.jetstream().stream_info(streams.streams.jobs)
    assert info.state.messages == 0  # nothing was stored to wait forever


async def test_a_served_model_is_accepted_without_asking(echo_gateway: str) -> None:
    async with httpx.AsyncClient(base_url=echo_gateway) as http:
        r = await http.post("/v1/jobs?wait=4", json={"model": "echo", "prompt": "hi"})
        assert r.status_code == 200 and r.json()["status"] == "completed"
        r = await http.post("/v1/jobs", json={"model": "echo:latest", "prompt": "x"})
        assert r.status_code == 422  # its jobs go to a subject the worker does not take
        r = await http.post("/v1/jobs", json={"model": "echo", "prompt": "x", "pool": "fast"})
        assert r.status_code == 422  # echo is served in pool standard only


async def test_queued_unserved_jobs_show_in_pools_cli_and_metrics(
    gateway: str, streams: Settings
) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        for i in range(2):
            body = {**GHOST, "prompt": str(i)}
            r = await http.post("/v1/jobs?queue_unserved=true", json=body)
            assert r.status_code == 202, r.text
        pools = {p["name"]: p for p in (await http.get("/v1/pools")).json()["pools"]}
        standard = pools["standard"]
        assert standard["unserved"] == 2 and standard["models"] == ["ghost:1b"]
        (row,) = standard["consumers"]
        assert (row["backlog"], row["unserved"], row["consumer"], row["workers"]) == (
            2, 2, None, 0
        )  # fmt: skip
        metrics = (await http.get("/metrics")).text
        assert 'jetgrid_queue_unserved{model="ghost:1b",pool="standard"} 2.0' in metrics

    env = {
        "JETGRID_NATS_URL": streams.nats_url,
        "JETGRID_SUBJECT_PREFIX": streams.subject_prefix,
        "JETGRID_STREAM_PREFIX": streams.stream_prefix,
    }
    out = await asyncio.to_thread(CliRunner().invoke, main, ["pools", "--json"], env=env)
    assert out.exit_code == 0, out.output
    (ghost,) = [r for r in json.loads(out.stdout)["pools"] if r["model"] == "ghost:1b"]
    assert (ghost["pool"], ghost["backlog"], ghost["unserved"]) == ("standard", 2, 2)
    table = await asyncio.to_thread(CliRunner().invoke, main, ["pools"], env=env)
    header, line = table.stdout.splitlines()[:2]
    assert header.split()[8] == "UNSERVED" and line.split()[0:2] == ["standard", "ghost:1b"]
    assert line.split()[8] == "2"
