"""Job ids cannot collide across submitters, and a refused submission is visible (issue 11,
findings 2 and 8): against a real nats-server, echo workers and the gateway under uvicorn."""

from __future__ import annotations

import json

import httpx
import pytest

from jetgrid.events import decode
from jetgrid.gateway.auth import ApiKey, hash_key, key_line
from tests.helpers import until

pytestmark = pytest.mark.integration


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def two_keys(streams, serve_gateway, start_worker, tmp_path):  # type: ignore[no-untyped-def]
    """A gateway with two tenants: `victim` (every model) and `thief` (scoped to `ech*`)."""
    path = tmp_path / "api-keys"
    path.write_text(
        key_line(ApiKey(hash_key("k-victim"), "victim"))
        + "\n"
        + key_line(ApiKey(hash_key("k-thief"), "thief", models=("ech*",)))
    )
    await start_worker()
    async with serve_gateway(streams.replace(api_keys_file=path)) as base:
        yield base


async def test_a_key_that_reuses_another_keys_id_gets_its_own_job(two_keys) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=two_keys) as http:
        victim = await http.post(
            "/v1/jobs?wait=10",
            json={"model": "echo", "prompt": "the secret", "id": "payroll"},
            headers=bearer("k-victim"),
        )
        assert victim.status_code == 200 and victim.json()["output"]["response"] == "the secret"
        thief = await http.post(
            "/v1/jobs?wait=10",
            json={"model": "echo", "prompt": "mine", "id": "payroll"},
            headers=bearer("k-thief"),
        )
        assert thief.status_code == 200 and thief.headers.get("idempotent-replayed") is None
        assert thief.json()["id"] != victim.json()["id"]
        assert thief.json()["output"]["response"] == "mine"
        # Each finds its own job under the id it chose; a retry is the same job.
        got = await http.get("/v1/jobs/payroll", headers=bearer("k-thief"))
        assert got.json()["output"]["response"] == "mine"
        got = await http.get("/v1/jobs/payroll", headers=bearer("k-victim"))
        assert got.json()["output"]["response"] == "the secret"
        again = await http.post(
            "/v1/jobs",
            json={"model": "echo", "prompt": "the secret", "id": "payroll"},
            headers=bearer("k-victim"),
        )
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == victim.json()["id"]


async def test_an_idempotency_key_is_scoped_to_the_api_key(two_keys) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=two_keys) as http:
        victim = await http.post(
            "/v1/jobs?wait=10",
            json={"model": "echo", "prompt": "the secret"},
            headers={**bearer("k-victim"), "Idempotency-Key": "order-1"},
        )
        thief = await http.post(
            "/v1/jobs?wait=10",
            json={"model": "echo", "prompt": "mine"},
            headers={**bearer("k-thief"), "Idempotency-Key": "order-1"},
        )
    assert victim.json()["output"]["response"] == "the secret"
    assert thief.json()["id"] != victim.json()["id"]
    assert thief.json()["output"]["response"] == "mine"


async def test_http_cannot_choose_a_derived_id(gateway) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=gateway) as http:
        r = await http.post("/v1/jobs", json={"model": "echo", "prompt": "x", "id": "seq-9"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "id"
    assert "reserved prefix 'seq-'" in r.json()["error"]["message"]


async def test_a_nats_client_cannot_claim_a_later_bare_jobs_id(
    gateway, streams, nc, start_worker
) -> None:  # type: ignore[no-untyped-def]
    js, subject = nc.jetstream(), streams.subjects.submit("standard", "echo")
    last = (await js.stream_info(streams.streams.jobs)).state.last_seq
    await js.publish(subject, json.dumps(
        {"model": "echo", "prompt": "evil", "job_id": f"seq-{last + 2}"}).encode())  # fmt: skip
    ack = await js.publish(subject, b'{"model": "echo", "prompt": "victim"}')
    assert ack.seq == last + 2
    await start_worker()
    async with httpx.AsyncClient(base_url=gateway) as http:

        async def finished(job: str) -> dict[str, object] | None:
            body = (await http.get(f"/v1/jobs/{job}")).json()
            return body if body.get("status") in ("completed", "rejected") else None

        victim = await until(lambda: finished(f"seq-{ack.seq}"))
        attacker = await until(lambda: finished(f"seq-{last + 1}"))
    assert victim["status"] == "completed" and victim["output"]["response"] == "victim"  # type: ignore[index]
    assert attacker["status"] == "rejected" and "reserved prefix" in str(attacker["error"])


async def test_a_bare_job_takes_its_documented_id_field(gateway, streams, nc, start_worker) -> None:  # type: ignore[no-untyped-def]
    await start_worker()
    await nc.jetstream().publish(
        streams.subjects.submit("standard", "echo"),
        b'{"model": "echo", "prompt": "named", "id": "my-bare-job"}',
    )
    async with httpx.AsyncClient(base_url=gateway) as http:

        async def done() -> dict[str, object] | None:
            r = await http.get("/v1/jobs/my-bare-job")
            return r.json() if r.status_code == 200 and r.json()["status"] == "completed" else None

        body = await until(done)
    assert body["output"]["response"] == "named"  # type: ignore[index]


async def test_a_submission_refused_after_its_ack_is_rejected_where_its_submitter_looks(
    gateway, streams, nc, start_worker
) -> None:  # type: ignore[no-untyped-def]
    events = await nc.subscribe(streams.subjects.job_events("typo"))
    await nc.jetstream().publish(
        streams.subjects.submit("standard", "echo"),
        b'{"model": "echo", "promt": "hi", "id": "typo"}',
    )
    await start_worker()
    msg = await events.next_msg(timeout=20)
    env = decode(msg.data)
    assert msg.subject.startswith(streams.subjects.job_events("typo")[:-1] + "rejected")
    assert env.type == "jetgrid.job.rejected" and "promt" in env.event.reason
    async with httpx.AsyncClient(base_url=gateway) as http:

        async def shown() -> dict[str, object] | None:
            r = await http.get("/v1/jobs/typo")
            return r.json() if r.status_code == 200 else None

        body = await until(shown)
        result = await http.get("/v1/jobs/typo/result")
    assert body["status"] == "rejected" and "promt" in str(body["error"])
    assert result.status_code == 409 and "rejected" in result.json()["error"]["message"]


def test_jetgrid_submit_refuses_a_derived_id_before_connecting() -> None:
    from click.testing import CliRunner

    from jetgrid.cli import main

    args = ["submit", "--model", "echo", "--prompt", "x", "--id", "seq-7"]
    result = CliRunner().invoke(main, args, env={"JETGRID_NATS_URL": "nats://127.0.0.1:1"})
    assert result.exit_code == 2 and "--id" in result.output
    assert "reserved prefix 'seq-'" in result.output


async def test_a_bare_job_cannot_take_the_id_of_a_job_already_claimed(
    gateway, streams, nc, start_worker
) -> None:  # type: ignore[no-untyped-def]
    await start_worker()
    async with httpx.AsyncClient(base_url=gateway) as http:
        victim = await http.post(
            "/v1/jobs?wait=10", json={"model": "echo", "prompt": "the secret", "id": "report"}
        )
        assert victim.json()["status"] == "completed"
        rejected = await nc.subscribe(streams.subjects.job_event("report", "rejected") + ".*")
        ack = await nc.jetstream().publish(  # no Nats-Msg-Id: JetStream cannot see the clash
            streams.subjects.submit("standard", "echo"),
            b'{"model": "echo", "prompt": "evil", "id": "report"}',
        )
        refusal = decode((await rejected.next_msg(timeout=20)).data).event
        assert refusal.jobs_seq == ack.seq and f"JOBS seq {victim.json()['seq']}" in refusal.reason
        after = (await http.get("/v1/jobs/report")).json()
    assert after["status"] == "completed" and after["output"]["response"] == "the secret"
