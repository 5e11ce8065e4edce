"""Shared pieces of the delivery benchmarks: servers, settings, subprocess workers, waiting."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import provision_streams, wait_for_jetstream
from jetgrid.coordinator.settings import Settings
from jetgrid.events import dead_letter_spec, stream_specs

JETGRID = str(Path(sys.executable).parent / "jetgrid")


def tmpdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"jetgrid-bench-{name}-"))


async def provision(s: Settings) -> None:
    nc = (await Bus.connect(s, name="bench-provision")).nc
    js = nc.jetstream()
    await wait_for_jetstream(js)
    r = s.stream_replicas
    await provision_streams(
        js,
        [*stream_specs(s.subjects, s.streams, replicas=r), dead_letter_spec(s.streams, replicas=r)],
    )
    await nc.close()


async def spawn_worker(s: Settings, worker_id: str, *args: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "JETGRID_NATS_URL": s.nats_url,
        "JETGRID_SUBJECT_PREFIX": s.subject_prefix,
        "JETGRID_STREAM_PREFIX": s.stream_prefix,
        "JETGRID_STREAM_REPLICAS": str(s.stream_replicas),
    }
    if s.pools_file:
        env["JETGRID_POOLS_FILE"] = str(s.pools_file)
    return await asyncio.create_subprocess_exec(
        JETGRID, "worker", "--pool", "standard", "--model", "echo", "--worker-id", worker_id,
        *args, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


def pct(values: list[float], p: float) -> float:
    vs = sorted(values)
    return vs[min(len(vs) - 1, round(p / 100 * (len(vs) - 1)))]
