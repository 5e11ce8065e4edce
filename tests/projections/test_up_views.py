"""`jetgrid up` runs a projector: its gateway's /v1/workers lists the echo workers and tiers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from jetgrid.natsserver import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_up_serves_worker_views_from_its_projector(tmp_path: Path) -> None:
    gw, nats_port = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        os.path.join(os.path.dirname(sys.executable), "jetgrid"), "up", "--data-dir",
        str(tmp_path / "data"), "--gateway-port", str(gw), "--nats-port", str(nats_port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        banner = ""
        while "Ctrl-C" not in banner:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, banner
            banner += line
        assert "jetgrid.db" in banner
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw}") as http:
            workers: list = []
            for _ in range(200):  # until the projector has folded both registrations
                r = await http.get("/v1/workers")
                workers = r.json().get("workers", []) if r.status_code == 200 else []
                if len(workers) == 2:
                    break
                await asyncio.sleep(0.1)
            assert len(workers) == 2 and all(w["tier"] == "probation" for w in workers)
            tiers = (await http.get("/v1/tiers")).json()
            assert sorted(tiers["tiers"]["probation"]) == sorted(w["id"] for w in workers)
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
