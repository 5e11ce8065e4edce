"""jetgrid's own /v1 jobs API, under uvicorn, against a real nats-server and echo workers."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from jetgrid.events import JobSubmitted
from jetgrid.worker.backends import expected_output

pytestmark = pytest.mark.integration


async def test_submit_returns_202_with_the_job_id_then_status_tells_the_result(
    gateway, start_worker
) -> None:
    await start_worker()
    async with httpx.AsyncClient(base_url=gateway) as http:
        r = await http.post("/v1/jobs", json={"model": "echo", "prompt": "hello"})
        assert r.status_code == 202
        body = r.json()
        job_id = body["id"]
        assert body["status"] == "queued" and body["seq"] >= 1
        assert r.headers["location"] == f"/v1/jobs/{job_id}"
        for _ in range(800):
            status = (await http.get(f"/v1/jobs/{job_id}")).json()
            if status["status"] == "completed":
                break
            await asyncio.sleep(0.025)
        assert status["status"] == "completed"
        job = JobSubmitted(job_id=job_id, model="echo", pool="standard", prompt="hello")
        assert status["output"] == expected_output(job)
        assert status["worker_id"] == "w1" and status["attempts"] == 1
        assert status["pool"] == "standard" and status["subject"].endswith(".jobs.standard.echo")


async def test_wait_returns_the_result_when_it_completes_in_time(gateway, start_worker) -> None:
    await start_worker()
    async with httpx.AsyncClient(base_url=gateway) as http:
        r = await http.post(
            "/v1/jobs?wait=10", json={"model": "echo", "input": {"x": 1}, "pool": "standard"}
        )
    assert r.status_code == 200
    out = r.json()
    assert out["status"] == "completed" and out["output"]["response"] == '{"x":1}'
    assert out["usage"]["total_tokens"] == 2


async def test_wait_that_runs_out_returns_202_queued(gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:  # no worker: it stays queued
        r = await http.post(
            "/v1/jobs?wait=0.3&queue_unserved=true", json={"model": "echo", "prompt": "x"}
        )
        assert r.status_code == 202 and r.json()["status"] == "queued"
        status = (await http.get(f"/v1/jobs/{r.json()['id']}")).json()
    assert status["status"] == "queued"


async def test_idempotency_key_returns_the_same_job(gateway, streams, nc, start_worker) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        unserved, key = "/v1/jobs?queue_unserved=true", {"Idempotency-Key": "k1"}
        first = await http.post(unserved, json={"model": "echo", "prompt": "once"}, headers=key)
        second = await http.post(unserved, json={"model": "echo", "prompt": "once"}, headers=key)
        assert first.json()["id"] == second.json()["id"]
        info = await nc.jetstream().stream_info(streams.streams.jobs)
        assert info.state.messages == 1  # never a second job
        await start_worker()
        done = await http.post(
            "/v1/jobs?wait=10",
            json={"model": "echo", "prompt": "once"},
            headers={"Idempotency-Key": "k1"},
        )
        assert done.status_code == 200 and done.json()["id"] == first.json()["id"]
        assert done.json()["status"] == "completed"
        assert done.headers.get("idempotent-replayed") == "true"
        assert (await nc.jetstream().stream_info(streams.streams.jobs)).state.messages == 1


async def test_a_raw_nats_job_is_readable_through_the_gateway(
    gateway, streams, nc, start_worker
) -> None:
    await start_worker()
    ack = await nc.jetstream().publish(
        streams.subjects.submit("standard", "echo"), b'{"model": "echo", "prompt": "from nats"}'
    )
    async with httpx.AsyncClient(base_url=gateway) as http:
        for _ in range(800):
            r = await http.get(f"/v1/jobs/seq-{ack.seq}")
            if r.status_code == 200 and r.json()["status"] == "completed":
                break
            await asyncio.sleep(0.025)
    assert r.json()["output"]["response"] == "from nats"


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        (b"not json", 400, "body", "not valid JSON"),
        (b"", 400, "body", "empty"),
        (b"[1]", 422, "body", "valid dictionary"),
        (b'{"prompt": "x"}', 422, "model", "Field required"),
        (b'{"model": 5, "prompt": "x"}', 422, "model", "valid string"),
        (b'{"model": "echo"}', 422, "prompt", "needs 'prompt' or 'input'"),
        (b'{"model": "echo", "prompt": "x", "pool": "nope"}', 422, "pool", "unknown pool"),
        (b'{"model": "echo", "prompt": "x", "priority": "urgent"}', 422, "priority", "high"),
        (b'{"model": "echo", "prompt": "x", "colour": 1}', 422, "colour", "Extra inputs"),
        (b'{"model": "echo", "prompt": "x", "id": "a.b"}', 422, "id", "pattern"),
        (b'{"model": "", "prompt": "x"}', 422, "model", "at least 1"),
    ],
)
async def test_bad_requests_get_a_4xx_naming_the_field(gateway, body, status, field, words) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        r = await http.post("/v1/jobs", content=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field and words in err["message"], err


@pytest.mark.parametrize("wait", ["soon", "-1", "100000"])
async def test_bad_wait_is_refused(gateway, wait: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        r = await http.post(f"/v1/jobs?wait={wait}", json={"model": "echo", "prompt": "x"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "wait"


async def test_unknown_job_is_404(gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        r = await http.get("/v1/jobs/nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]


async def test_health_and_readiness(gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
