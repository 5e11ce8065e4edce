"""GET /v1/workers, /v1/workers/{id}, /v1/tiers over real HTTP, backed by the projector's SQLite."""

from __future__ import annotations

import httpx
import pytest

from jetgrid.coordinator.tiers import DEFAULT_POLICY
from jetgrid.events import GpuTelemetry
from jetgrid.projections.runner import open_projector

pytestmark = pytest.mark.integration

WORKER_OUT_KEYS = {
    "id", "availability", "pools", "models", "backend", "concurrency", "in_flight", "last_ping",
    "healthy", "nvml", "gpus", "tier", "tier_factor", "uptime", "share", "jobs",
}  # fmt: skip


async def test_views_before_any_projector_say_so(streams, gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        r = await http.get("/v1/workers")
    assert r.status_code == 503
    assert "projector" in r.json()["error"]["message"]


async def test_workers_and_tiers_views(log, nc, gateway, start_worker) -> None:
    s = log.settings
    gpu = GpuTelemetry(
        index=0, uuid="GPU-1", name="H100", memory_used_mb=100.0, memory_total_mb=80000.0
    )
    # 1,900 healthy slots up to a second ago: it stays above 99% through ~18 s of silence.
    await log.register("w1", t=1690)
    await log.pings("w1", 1699, 1900)
    await log.ping("w1", 3599, 3599, nvml=True, gpus=[gpu])
    await log.job("j1", "w1", 3500, pool="fast")
    await log.job("j2", "w1", 3501, outcome="failed", pool="fast")
    await log.ping("ghost", 1, 3590)
    # Answered every other ping for five minutes an hour ago, then silent: tier none.
    await log.register("flaky", t=1)
    await log.pings("flaky", 1, 300, miss=set(range(0, 300, 2)))
    projector = await open_projector(s)
    try:
        await start_worker("echo", worker_id="live1")
        await projector.wait_caught_up()
        async with httpx.AsyncClient(base_url=gateway) as http:
            listed = (await http.get("/v1/workers")).json()["workers"]
            w1 = (await http.get("/v1/workers/w1")).json()
            missing = await http.get("/v1/workers/nope")
            bad = await http.get("/v1/workers", params={"availability": "sleepy"})
            fast = (await http.get("/v1/workers", params={"pool": "fast"})).json()["workers"]
            tiers = (await http.get("/v1/tiers")).json()
    finally:
        await projector.close()
    by_id = {w["id"]: w for w in listed}
    assert set(by_id) == {"w1", "ghost", "live1", "flaky"}
    assert all(WORKER_OUT_KEYS <= set(w) for w in listed)
    assert w1 == by_id["w1"] | {"availability": w1["availability"], "uptime": w1["uptime"]}
    assert (w1["tier"], w1["tier_factor"]) == ("full", 1.0)
    assert w1["uptime"]["1h"] > 0.95 and set(w1["uptime"]) == {"1h", "24h"}
    assert w1["nvml"] is True and w1["gpus"][0]["uuid"] == "GPU-1" and w1["healthy"] is True
    assert w1["jobs"] == {"completed": 1, "failed": 1}
    assert w1["pools"] == ["standard"] and w1["models"] == ["echo"] and w1["concurrency"] == 2
    live = by_id["live1"]
    assert live["availability"] == "online" and live["tier"] == "probation"
    assert live["tier_factor"] == 0.5 and live["registered"] is True
    assert by_id["ghost"]["registered"] is False
    # Why each takes the share it does: its tier and the uptime behind it.
    assert w1["share"] == {"held_back": False, "reason": "tier full: full share",
                           "fallback_wait_s": None}  # fmt: skip
    assert live["share"]["held_back"] and live["share"]["fallback_wait_s"] == 10.0
    assert live["share"]["reason"].startswith("tier probation (factor 0.5): a new worker")
    flaky = by_id["flaky"]
    assert (flaky["tier"], flaky["tier_factor"]) == ("none", 0.0)
    assert flaky["share"]["held_back"] and flaky["share"]["fallback_wait_s"] == 20.0
    up = f"{flaky['uptime']['1h']:.1%}"
    assert flaky["share"]["reason"] == (
        f"tier none (factor 0): 1h uptime {up}, below the 90% of tier tenth; "
        "takes only jobs no other worker took within 20 s"
    )
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "worker_id"
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "availability"
    assert fast == []
    assert tiers["policy"] == DEFAULT_POLICY.as_dict()
    assert "w1" in tiers["tiers"]["full"] and "live1" in tiers["tiers"]["probation"]
    assert set(tiers["tiers"]) >= {"full", "half", "tenth", "none", "probation"}
