"""GET /v1/usage: a period's usage from the log, each key seeing only its own."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from jetgrid.events import format_time, now
from jetgrid.gateway.auth import ApiKey, hash_key, key_line
from tests.gateway.conftest import in_process
from tests.helpers import job, submit

pytestmark = pytest.mark.integration


async def test_a_key_sees_only_its_own_usage_priced_by_the_gateways_table(
    streams, nc, start_worker, outcomes, tmp_path: Path
) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text(
        "\n".join(key_line(ApiKey(hash_key(f"k-{n}"), n)) for n in ("alice", "bob")) + "\n"
    )
    prices = tmp_path / "prices.toml"
    prices.write_text('currency = "EUR"\nper_1k_tokens = 500.0\n')
    t0 = now() - timedelta(seconds=1)
    await start_worker()
    await submit(nc, streams, job(1, submitter="alice"), job(2, submitter="bob"),
                 job(3, submitter="bob"))  # fmt: skip
    await outcomes.wait_terminal("j1", "j2", "j3")
    period = {"from": format_time(t0), "to": format_time(now() + timedelta(seconds=1))}
    settings = streams.replace(api_keys_file=keys, prices_file=prices)
    async with in_process(settings) as (_, http):
        alice = {"Authorization": "Bearer k-alice"}
        r = await http.get("/v1/usage", params=period, headers=alice)
        assert r.status_code == 200, r.text
        (row,) = r.json()["usage"]
        assert (row["key"], row["jobs"], row["tokens"], row["currency"]) == ("alice", 1, 2, "EUR")
        assert row["cost"] == 1.0
        bob = {"Authorization": "Bearer k-bob"}
        r = await http.get("/v1/usage", params={**period, "by": "worker"}, headers=bob)
        assert [(u["worker"], u["jobs"]) for u in r.json()["usage"]] == [("w1", 2)]
        r = await http.get("/v1/usage", params={"from": "yesterday"}, headers=bob)
        assert r.status_code == 422 and "'from' has value 'yesterday'" in r.text
        r = await http.get("/v1/usage", params={**period, "by": "colour"}, headers=bob)
        assert r.status_code == 422 and "use key, model or worker" in r.text
        r = await http.get("/v1/usage", params=period)
        assert r.status_code == 401
        r = await http.get(
            "/v1/usage",
            params={"from": "0001-01-01T00:00:00Z", "to": "0001-01-02T00:00:00Z"},
            headers=bob,
        )
        assert r.status_code == 200 and r.json()["usage"] == []  # fmt: skip


async def test_with_keys_a_jobs_submitter_is_its_keys_name_whatever_the_header_says(
    streams, tmp_path: Path
) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text(key_line(ApiKey(hash_key("k-alice"), "alice")) + "\n")
    async with in_process(streams.replace(api_keys_file=keys)) as (_, http):
        headers = {"Authorization": "Bearer k-alice", "x-jetgrid-submitter": "bob"}
        job = {"model": "echo", "prompt": "x", "pool": "standard"}
        r = await http.post("/v1/jobs?queue_unserved=true", json=job, headers=headers)
        assert r.status_code == 202, r.text
        view = (await http.get(f"/v1/jobs/{r.json()['id']}", headers=headers)).json()
        assert view["submitter"] == "alice"
