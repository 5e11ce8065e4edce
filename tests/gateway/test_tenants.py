"""Who a job's tenant is at the gateway: the API key's name where keys are configured (a
client's x-jetgrid-submitter header cannot choose another), else that header or "anonymous";
in a fair-share pool the job waits in its tenant's queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from jetgrid.events import decode_submission
from jetgrid.gateway.auth import ApiKey, hash_key, key_line
from tests.helpers import read_stream

pytestmark = pytest.mark.integration


async def _stored(nc: Any, s: Any) -> dict[str, tuple[str, Any]]:
    """job id -> (subject, job) of every submission on JOBS."""
    out = {}
    for m in await read_stream(nc.jetstream(), s.streams.jobs):
        md = m.metadata
        env = decode_submission(
            m.data, subject=m.subject, subjects=s.subjects,
            seq=md.sequence.stream, stream_time=md.timestamp,
        )  # fmt: skip
        out[env.event.job_id] = (m.subject, env.event)
    return out


def _fair_pools(tmp_path: Path) -> Path:
    path = tmp_path / "pools.toml"
    path.write_text('[[pool]]\nname = "standard"\nfair_share = true\n')
    return path


async def test_a_keyed_gateway_names_the_key_whatever_the_header_says(
    streams: Any, nc: Any, serve_gateway: Any, start_worker: Any, tmp_path: Path
) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text(key_line(ApiKey(hash_key("k-ci"), "ci")) + "\n")
    s = streams.replace(api_keys_file=keys, pools_file=_fair_pools(tmp_path))
    await start_worker(settings=s)
    headers = {"Authorization": "Bearer k-ci", "x-jetgrid-submitter": "someone-else"}
    async with serve_gateway(s) as base, httpx.AsyncClient(base_url=base) as http:
        r = await http.post(
            "/v1/jobs?wait=20&queue_unserved=1",
            json={"model": "echo", "prompt": "hi"},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "completed"  # a worker took it from the tenant queue
        job_id = r.json()["id"]
    subject, job = (await _stored(nc, s))[job_id]
    assert (job.submitter, job.tenant) == ("ci", "ci")
    assert subject == s.subjects.submit("standard", "echo", "normal", "ci")


async def test_an_open_gateway_takes_the_header_or_anonymous(
    streams: Any, nc: Any, serve_gateway: Any, tmp_path: Path
) -> None:
    body = {"model": "echo", "prompt": "hi"}
    async with serve_gateway(streams) as base, httpx.AsyncClient(base_url=base) as http:
        named = await http.post(
            "/v1/jobs?queue_unserved=1", json=body, headers={"x-jetgrid-submitter": "alice"}
        )
        anon = await http.post("/v1/jobs?queue_unserved=1", json=body)
        too_long = await http.post(
            "/v1/jobs?queue_unserved=1", json=body, headers={"x-jetgrid-submitter": "x" * 129}
        )
    assert too_long.status_code == 422 and "x-jetgrid-submitter" in too_long.text
    stored = await _stored(nc, streams)
    subject, job = stored[named.json()["id"]]
    # Not a fair-share pool: the shared queue, as before tenants.
    assert (job.submitter, job.tenant, subject) == (
        "alice",
        None,
        streams.subjects.submit("standard", "echo"),
    )
    assert stored[anon.json()["id"]][1].submitter == "anonymous"


async def test_llm_routes_queue_in_the_callers_tenant_queue(
    streams: Any, nc: Any, serve_gateway: Any, start_worker: Any, wait_model: Any, tmp_path: Path
) -> None:
    s = streams.replace(pools_file=_fair_pools(tmp_path))
    await start_worker(settings=s)
    async with serve_gateway(s) as base, httpx.AsyncClient(base_url=base, timeout=20) as http:
        await wait_model(base)
        r = await http.post(
            "/api/generate",
            json={"model": "echo", "prompt": "in", "stream": False},
            headers={"x-jetgrid-submitter": "bob"},
        )
        assert r.status_code == 200 and r.json()["response"] == "in"
    ((subject, job),) = (await _stored(nc, s)).values()
    assert (job.submitter, job.tenant) == ("bob", "bob")
    assert subject.endswith(".normal.bob")


async def test_sessions_and_conversations_pick_a_lane_of_the_tenant_queue(
    streams: Any, nc: Any, serve_gateway: Any, tmp_path: Path
) -> None:
    from jetgrid.coordinator.pools import PoolConfig
    from jetgrid.coordinator.share import lane_of, queue_lane

    path = tmp_path / "pools.toml"
    path.write_text('[[pool]]\nname = "standard"\nfair_share = true\naffinity_lanes = 8\n')
    s = streams.replace(pools_file=path)
    chat = {"messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hi"},
                         {"role": "user", "content": "more"}]}  # fmt: skip
    async with serve_gateway(s) as base, httpx.AsyncClient(base_url=base) as http:
        hdr = {"x-jetgrid-submitter": "ann"}
        with_session = await http.post(
            "/v1/jobs?queue_unserved=1",
            json={"model": "echo", "prompt": "hi", "session": "s-1"},
            headers=hdr,
        )
        convo = await http.post(
            "/v1/jobs?queue_unserved=1",
            json={"model": "echo", "kind": "chat", "input": chat},
            headers=hdr,
        )
        plain = await http.post("/v1/jobs?queue_unserved=1", json={"model": "echo", "prompt": "x"},
                                headers=hdr)  # fmt: skip
    stored = await _stored(nc, s)
    subject, job = stored[with_session.json()["id"]]
    assert (job.session, job.lane) == ("s-1", lane_of("session:s-1", 8))
    assert subject == s.subjects.submit("standard", "echo", "normal", "ann", job.lane)
    pool = PoolConfig("standard", extra={"fair_share": True, "affinity_lanes": 8})
    expected = queue_lane(pool, "ann", session=None, kind="chat", input=chat)
    assert expected is not None and stored[convo.json()["id"]][1].lane == expected
    assert stored[plain.json()["id"]][1].lane is None  # no key: the tenant queue itself
