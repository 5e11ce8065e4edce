"""The dashboard in headless Chromium on a running stack: a worker card and a submitted job show,
and a worker held back by its tier says so.

Needs Debian's `chromium` (`make test` installs it when running as root with apt); skipped,
saying why, only where it is not installed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import pytest

from jetgrid.coordinator.provision import ensure_tiers_bucket
from tests.helpers import held_back, until
from tests.helpers.jobs import job, submit

pytestmark = pytest.mark.integration


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    return exe


async def _chromium_run(exe: str, profile: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=4000",
        "--window-size=1280,900",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    return out.decode(errors="replace")


async def test_dashboard_shows_workers_and_jobs(gateway, start_worker, tmp_path):  # type: ignore[no-untyped-def]
    exe = _chromium()
    await start_worker(worker_id="gpu-box-1", concurrency=2)
    async with httpx.AsyncClient(base_url=gateway) as http:
        job = (await http.post("/v1/jobs?wait=10", json={"model": "echo", "prompt": "hi"})).json()

        async def listed() -> bool:
            workers = (await http.get("/dashboard/workers")).json()["workers"]
            return any(w["id"] == "gpu-box-1" for w in workers)

        await until(listed, timeout=15)
    dom = await _chromium_run(exe, tmp_path / "profile", "--dump-dom", f"{gateway}/")
    assert 'data-worker="gpu-box-1"' in dom, dom[-3000:]
    assert f'data-job="{job["id"]}"' in dom
    assert "live · updated" in dom
    shot = tmp_path / "dashboard.png"
    await _chromium_run(exe, tmp_path / "profile", f"--screenshot={shot}", f"{gateway}/")
    assert shot.stat().st_size > 10_000
    print(f"dashboard screenshot: {shot}")


async def test_dashboard_says_why_a_worker_is_held_back_and_what_waits_on_it(
    streams, nc, gateway, start_worker, tmp_path
):  # type: ignore[no-untyped-def]
    exe = _chromium()
    s = streams.replace(fallback_wait_s=0.0, heartbeat_interval_s=0.2)  # strict: the job waits
    js = nc.jetstream()
    await ensure_tiers_bucket(js, s.tiers_bucket)
    await (await js.key_value(s.tiers_bucket)).put(
        "lonely", json.dumps({"tier": "none", "factor": 0.0}).encode()
    )
    w = await start_worker(settings=s, worker_id="lonely")
    await until(lambda: held_back(w), timeout=10)
    await submit(nc, s, job(1))
    async with httpx.AsyncClient(base_url=gateway) as http:

        async def held() -> bool:
            pools = (await http.get("/v1/pools")).json()["pools"]
            return any(p["held_back_jobs"] == 1 for p in pools)

        await until(held, timeout=15)
    dom = await _chromium_run(exe, tmp_path / "profile", "--dump-dom", f"{gateway}/")
    assert 'data-worker="lonely"' in dom, dom[-3000:]
    assert "tier factor 0, by its last ping" in dom
    assert "1 job waits on lonely" in dom


async def test_dashboard_queue_panel_shows_tenants_waits_and_shares(  # type: ignore[no-untyped-def]
    gateway, start_worker, tmp_path
):
    from tests.gateway.test_shedding import Gate

    exe = _chromium()
    gate = Gate()
    await start_worker(backend=gate, concurrency=3)
    try:
        async with httpx.AsyncClient(base_url=gateway) as http:
            for tenant in ("acme", "acme", "beta"):  # held running by the gate
                r = await http.post(
                    "/v1/jobs",
                    json={"model": "echo", "prompt": tenant},
                    headers={"x-jetgrid-submitter": tenant},
                )
                assert r.status_code == 202, r.text
            r = await http.post(
                "/v1/jobs?queue_unserved=true",
                json={"model": "ghost:1b", "prompt": "waits"},
                headers={"x-jetgrid-submitter": "beta"},
            )
            assert r.status_code == 202, r.text

            async def live() -> bool:
                rows = {
                    (q["pool"], q["model"]): q
                    for q in (await http.get("/v1/queue")).json()["queues"]
                }
                echo, ghost = rows.get(("standard", "echo")), rows.get(("fast", "ghost:1b"))
                return bool(echo and echo["running"] == 3 and ghost and ghost["queued"] == 1)

            await until(live, timeout=15)
        dom = await _chromium_run(exe, tmp_path / "profile", "--dump-dom", f"{gateway}/")
        assert 'data-queue="standard/echo"' in dom, dom[-3000:]
        assert 'data-queue="standard/echo/acme"' in dom and 'data-queue="standard/echo/beta"' in dom
        assert 'data-queue="fast/ghost:1b/beta"' in dom
        acme = dom.split('data-queue="standard/echo/acme"', 1)[1].split("</tr>", 1)[0]
        beta = dom.split('data-queue="standard/echo/beta"', 1)[1].split("</tr>", 1)[0]
        assert '<td class="share">66.7%</td>' in acme and '<td class="share">33.3%</td>' in beta
        assert "<td>2</td>" in acme  # running
        ghost = dom.split('data-queue="fast/ghost:1b/beta"', 1)[1].split("</tr>", 1)[0]
        assert "<td>1</td>" in ghost  # queued
        assert "waits and drain over the last 300" in dom
        shot = tmp_path / "dashboard-queue.png"
        await _chromium_run(exe, tmp_path / "profile", f"--screenshot={shot}", f"{gateway}/")
        assert shot.stat().st_size > 10_000
        print(f"dashboard screenshot: {shot}")
    finally:
        gate.release.set()


async def test_dashboard_stalls_panel_shows_a_workers_stalled_jobs(  # type: ignore[no-untyped-def]
    streams, gateway, start_worker, tmp_path
):
    from tests.helpers import write_pools
    from tests.worker.test_stalls import HangingBackend

    exe = _chromium()
    pools = write_pools(tmp_path / "p.toml", stall_after_s=0.2, backoff_s=[0.05], max_deliver=2)
    await start_worker(worker_id="wedged", backend=HangingBackend(), drain_grace_s=0.2,
                       settings=streams.replace(pools_file=pools))  # fmt: skip
    async with httpx.AsyncClient(base_url=gateway) as http:
        r = await http.post("/v1/jobs", json={"model": "echo", "prompt": "hangs"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]

        async def stalled() -> bool:
            rows = (await http.get("/v1/stalls")).json()["workers"]
            return any(w["worker_id"] == "wedged" for w in rows)

        await until(stalled, timeout=15)
        (row,) = (await http.get("/v1/stalls")).json()["workers"]
        assert row["latest"][0]["job_id"] == job_id and row["latest"][0]["model"] == "echo"
    dom = await _chromium_run(exe, tmp_path / "profile", "--dump-dom", f"{gateway}/")
    assert 'data-stalls="wedged"' in dom, dom[-3000:]
    panel = dom.split('data-stalls="wedged"', 1)[1].split("</tr>", 1)[0]
    assert f"<code>{job_id}</code>" in panel and "<td>standard</td>" in panel
    shot = tmp_path / "dashboard-stalls.png"
    await _chromium_run(exe, tmp_path / "profile", f"--screenshot={shot}", f"{gateway}/")
    assert shot.stat().st_size > 10_000
    print(f"dashboard screenshot: {shot}")
