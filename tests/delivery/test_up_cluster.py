"""`jetgrid up --cluster 3` as a user runs it: three nodes, R3 streams, jobs served."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import nats
import pytest

from jetgrid.natsserver import free_port, port_free
from tests.helpers import JETGRID

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def three_free_ports() -> int:
    for _ in range(50):
        p = free_port()
        if all(port_free("127.0.0.1", p + i) for i in range(3)) and p + 2 < 65536:
            return p
    raise RuntimeError("no three consecutive free ports")


async def test_up_cluster_runs_a_replicated_jetstream_cluster(tmp_path) -> None:
    base, gw = three_free_ports(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JETGRID_")}
    proc = await asyncio.create_subprocess_exec(
        JETGRID, "up", "--cluster", "3", "--data-dir", str(tmp_path / "d"),
        "--nats-port", str(base), "--gateway-port", str(gw), "--workers", "1", "--no-auth",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    seen = []
    try:
        while "Ctrl-C" not in "".join(seen):
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()  # type: ignore[union-attr]
            assert line, "".join(seen)
            seen.append(line)
        banner = "".join(seen)
        urls = [f"nats://127.0.0.1:{base + i}" for i in range(3)]
        assert ",".join(urls) in banner and "3 JetStream nodes, streams R3" in banner
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw}") as http:
            r = await http.post("/v1/jobs?wait=20", json={"model": "echo", "prompt": "r3"})
            assert r.status_code == 200 and r.json()["status"] == "completed", r.text
        nc = await nats.connect(urls[2])  # any node serves
        try:
            js = nc.jetstream()
            for name in ("JOBS", "JOB_EVENTS", "WORKERS", "INVALID", "DEAD_LETTERS"):
                info = await js.stream_info(name)
                assert info.config.num_replicas == 3, name
                assert info.cluster and len(info.cluster.replicas or []) == 2, name
            ci = await js.consumer_info("JOBS", "pool-standard-echo")
            assert ci.cluster and len(ci.cluster.replicas or []) == 2
        finally:
            await nc.close()
        for i in range(3):
            assert (tmp_path / "d" / "nats-cluster" / f"n{i + 1}" / "jetstream").is_dir()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
