"""/v1 beyond submit and status: result, cancel, list, the SSE event stream, pools."""

from __future__ import annotations

import json

import httpx
import pytest

from jetgrid.coordinator.consumers import pool_consumer
from jetgrid.coordinator.provision import ensure_consumer
from jetgrid.events import decode
from jetgrid.worker.backends import EchoBackend

pytestmark = pytest.mark.integration


async def test_result_is_202_then_200_and_409_when_there_is_none(gateway, start_worker) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        job = (
            await http.post("/v1/jobs?queue_unserved=true", json={"model": "echo", "prompt": "hi"})
        ).json()
        pending = await http.get(f"/v1/jobs/{job['id']}/result")
        assert pending.status_code == 202 and pending.headers["retry-after"] == "1"
        assert pending.json()["status"] == "queued"
        await start_worker()
        done = await http.get(f"/v1/jobs/{job['id']}/result?wait=10")
        assert done.status_code == 200
        assert done.json()["output"]["response"] == "hi" and done.json()["status"] == "completed"
        bad = await http.post(
            "/v1/jobs?wait=10", json={"model": "echo", "input": {"fail": "permanent"}}
        )
        assert bad.json()["status"] == "failed"
        conflict = await http.get(f"/v1/jobs/{bad.json()['id']}/result")
        assert conflict.status_code == 409
        assert "failed" in conflict.json()["error"]["message"]
        assert (await http.get("/v1/jobs/nope/result")).status_code == 404


async def test_cancel_publishes_cancel_requested_once(gateway, streams, nc) -> None:
    js = nc.jetstream()
    async with httpx.AsyncClient(base_url=gateway) as http:
        job = (
            await http.post("/v1/jobs?queue_unserved=1", json={"model": "echo", "prompt": "x"})
        ).json()
        r = await http.delete(f"/v1/jobs/{job['id']}?reason=changed+my+mind")
        assert r.status_code == 202 and r.json()["cancel_requested"] is True
        again = await http.delete(f"/v1/jobs/{job['id']}")
        assert again.status_code == 202
        assert (await http.delete("/v1/jobs/nope")).status_code == 404
    subject = streams.subjects.job_event(job["id"], "cancel_requested")
    msg = await js.get_last_msg(streams.streams.job_events, subject)
    event = decode(msg.data).event
    assert event.job_id == job["id"] and event.reason == "changed my mind"
    assert msg.headers["Nats-Msg-Id"] == f"{job['id']}:cancel_requested"
    info = await js.stream_info(streams.streams.job_events)
    assert info.state.messages == 1  # the second request deduped on Nats-Msg-Id


async def test_cancel_of_a_finished_job_is_409(gateway, start_worker) -> None:
    await start_worker()
    async with httpx.AsyncClient(base_url=gateway) as http:
        job = (await http.post("/v1/jobs?wait=10", json={"model": "echo", "prompt": "x"})).json()
        r = await http.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 409 and "already completed" in r.json()["error"]["message"]


async def test_list_filters_and_pages_newest_first(gateway, start_worker) -> None:
    await start_worker()
    async with httpx.AsyncClient(base_url=gateway) as http:
        ids = []
        for i in range(5):
            body = {"model": "echo", "prompt": f"p{i}"}
            ids.append((await http.post("/v1/jobs?wait=10", json=body)).json()["id"])
        failed = await http.post(
            "/v1/jobs?wait=10", json={"model": "echo", "input": {"fail": "permanent"}}
        )
        first = (await http.get("/v1/jobs?limit=4")).json()
        assert [j["id"] for j in first["jobs"]] == [failed.json()["id"], *ids[::-1][:3]]
        rest = (await http.get(f"/v1/jobs?limit=4&cursor={first['next_cursor']}")).json()
        assert [j["id"] for j in rest["jobs"]] == ids[1::-1] and rest["next_cursor"] is None
        only = (await http.get("/v1/jobs?status=failed")).json()["jobs"]
        assert [j["id"] for j in only] == [failed.json()["id"]]
        by_worker = (await http.get("/v1/jobs?worker=w1&model=echo&pool=standard")).json()
        assert len(by_worker["jobs"]) == 6
        assert (await http.get("/v1/jobs?worker=w9")).json()["jobs"] == []
        for bad in ("limit=0", "limit=x", "cursor=abc"):
            r = await http.get(f"/v1/jobs?{bad}")
            assert r.status_code == 422 and r.json()["error"]["field"] == bad.split("=")[0]


def _parse_sse(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            k, _, v = line.partition(":")
            fields[k] = fields.get(k, "") + v.lstrip(" ")
        if "event" in fields or "data" in fields:
            events.append(fields)
    return events


async def test_event_stream_relays_tokens_live_and_resumes(gateway, start_worker) -> None:
    await start_worker(backend=EchoBackend(token_delay_s=0.05))
    text = "one two three four five"
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        job = (await http.post("/v1/jobs", json={"model": "echo", "prompt": text})).json()
        async with http.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            body = "".join([chunk async for chunk in r.aiter_text()])
        events = _parse_sse(body)
        names = [e["event"] for e in events]
        assert names[-1] == "completed" and "started" in names
        tokens = [json.loads(e["data"])["text"] for e in events if e["event"] == "token"]
        assert len(tokens) >= 2 and "".join(tokens) in text  # relayed while it ran
        lifecycle = [e for e in events if e["event"] != "token"]
        assert all(int(e["id"]) == json.loads(e["data"])["seq"] for e in lifecycle)
        done = json.loads(lifecycle[-1]["data"])
        assert done["output"]["response"] == text  # the whole output, whatever was streamed
        # Reconnecting after the second event replays only what came after it.
        resume = await http.get(
            f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": lifecycle[1]["id"]}
        )
        again = [e for e in _parse_sse(resume.text) if e["event"] != "token"]
        assert [e["id"] for e in again] == [e["id"] for e in lifecycle[2:]]
        nothing = await http.get(
            f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": lifecycle[-1]["id"]}
        )
        assert _parse_sse(nothing.text) == []
        bad = await http.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "Last-Event-ID"
        assert (await http.get("/v1/jobs/nope/events")).status_code == 404


async def test_pools_report_backlog_from_consumer_info(gateway, streams, nc) -> None:
    pool = streams.pool_configs()["fast"]
    spec = pool_consumer(
        streams.subjects,
        streams.streams.jobs,
        "fast",
        "tiny:1b",
        ack_wait_s=pool.ack_wait_s,
        max_deliver=pool.max_deliver,
        max_ack_pending=pool.max_ack_pending,
    )
    await ensure_consumer(nc.jetstream(), spec)
    async with httpx.AsyncClient(base_url=gateway) as http:
        for i in range(3):
            await http.post(
                "/v1/jobs?queue_unserved=true", json={"model": "tiny:1b", "prompt": f"{i}"}
            )
        pools = {p["name"]: p for p in (await http.get("/v1/pools")).json()["pools"]}
    assert set(pools) == {"fast", "standard", "heavy"}
    fast = pools["fast"]
    assert fast["backlog"] == 3 and fast["models"] == ["tiny:1b"]
    (row,) = fast["consumers"]
    assert row["consumer"] == spec.name and row["ack_pending"] == 0 and row["workers"] == 0
    assert pools["standard"]["consumers"] == []


async def test_pools_show_live_workers_warm_with_the_pool_status_fields(echo_gateway) -> None:
    async with httpx.AsyncClient(base_url=echo_gateway) as http:
        pools = {p["name"]: p for p in (await http.get("/v1/pools")).json()["pools"]}
    standard = pools["standard"]
    assert standard["models"] == ["echo"]  # its high, normal and low consumers make one row
    (row,) = standard["consumers"]
    assert row["consumer"] == "pool-standard-echo" and row["workers"] == 1
    assert (row["warm_workers"], row["cold_workers"]) == (["w1"], [])  # echo loads nothing
    assert (row["running"], row["oldest_wait_s"], row["suggested_workers"]) == (0, None, 0)
