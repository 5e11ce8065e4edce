"""/metrics counted from the log; /openapi.json from the pydantic models; the dashboard feed."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jetgrid.gateway.openapi import document
from jetgrid.gateway.schemas import SubmitJob
from tests.helpers import until

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_jobs_from_the_log(gateway, start_worker) -> None:
    await start_worker()
    async with httpx.AsyncClient(base_url=gateway) as http:
        for body in ({"prompt": "a"}, {"prompt": "b"}, {"input": {"fail": "permanent"}}):
            await http.post("/v1/jobs?wait=10", json={"model": "echo", **body})
        lbl = (("model", "echo"), ("pool", "standard"))

        async def scraped():  # type: ignore[no-untyped-def]
            r = await http.get("/metrics")
            s = samples(r.text)
            return s if s.get(("jetgrid_jobs_failed_total", lbl)) == 1 else None

        s = await until(scraped, timeout=15)
    assert s[("jetgrid_jobs_submitted_total", lbl)] == 3
    assert s[("jetgrid_jobs_started_total", lbl)] == 3
    assert s[("jetgrid_jobs_completed_total", lbl)] == 2
    assert s[("jetgrid_job_queue_seconds_count", lbl)] == 3
    assert s[("jetgrid_job_run_seconds_count", lbl)] == 3
    consumer = (("consumer", "pool-standard-echo"), ("model", "echo"), ("pool", "standard"))
    assert s[("jetgrid_queue_depth", consumer)] == 0
    assert s[("jetgrid_workers", (("availability", "online"), ("tier", "none")))] == 1


async def test_a_second_gateway_reports_the_same_totals(
    gateway, streams, start_worker, serve_gateway
) -> None:
    """Counters count what happens while a gateway runs (not history): two gateways that both
    ran while a job completed count it alike."""
    await start_worker()
    async with serve_gateway(streams) as other:
        async with httpx.AsyncClient(base_url=gateway) as http:
            await http.post("/v1/jobs?wait=10", json={"model": "echo", "prompt": "x"})
        lbl = (("model", "echo"), ("pool", "standard"))
        for base in (gateway, other):
            async with httpx.AsyncClient(base_url=base) as http:

                async def counted():  # type: ignore[no-untyped-def]
                    s = samples((await http.get("/metrics")).text)
                    return s.get(("jetgrid_jobs_completed_total", lbl)) == 1

                await until(counted, timeout=15)


def test_openapi_schemas_are_the_validating_models() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["schemas"]["SubmitJob"] == SubmitJob.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    ops = {(p, m) for p, item in doc["paths"].items() for m in item}
    assert ops == {
        ("/v1/jobs", "post"),
        ("/v1/jobs", "get"),
        ("/v1/jobs/{job_id}", "get"),
        ("/v1/jobs/{job_id}", "delete"),
        ("/v1/jobs/{job_id}/result", "get"),
        ("/v1/jobs/{job_id}/events", "get"),
        ("/v1/pools", "get"),
        ("/v1/queue", "get"),
        ("/v1/usage", "get"),
        ("/v1/stalls", "get"),
    }


async def test_openapi_is_served_and_dashboard_loads(gateway, start_worker) -> None:
    await start_worker()
    async with httpx.AsyncClient(base_url=gateway) as http:
        assert (await http.get("/openapi.json")).json()["info"]["title"] == "jetgrid"
        page = await http.get("/")
        assert page.status_code == 200 and "dashboard.js" in page.text
        assert (await http.get("/static/dashboard.js")).status_code == 200
        workers = (await http.get("/dashboard/workers")).json()["workers"]
        assert [w["id"] for w in workers] in ([], ["w1"])


async def test_readyz_fails_when_a_stream_is_missing(gateway, streams, nc) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        assert (await http.get("/readyz")).json()["checks"]["streams"] is True
        await nc.jetstream().delete_stream(streams.streams.jobs)
        r = await http.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["streams"] is False


async def test_workers_are_counted_by_their_projected_tier(
    gateway, streams, nc, start_worker
) -> None:
    from jetgrid.coordinator.provision import ensure_tiers_bucket
    from jetgrid.projections.runner import open_projector

    await ensure_tiers_bucket(nc.jetstream(), streams.tiers_bucket)
    projector = await open_projector(streams)  # writes the read models the gateway reads
    try:
        await start_worker()
        async with httpx.AsyncClient(base_url=gateway) as http:

            async def tiered():  # type: ignore[no-untyped-def]
                s = samples((await http.get("/metrics")).text)
                key = ("jetgrid_workers", (("availability", "online"), ("tier", "probation")))
                return s.get(key) == 1

            await until(tiered, timeout=15)
    finally:
        await projector.close()
