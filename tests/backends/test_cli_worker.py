"""`jetgrid worker --backend ollama --allow-python` as a user runs it: a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

import jetgrid
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobSubmitted, encode

pytestmark = pytest.mark.integration

JETGRID = str(Path(sys.executable).parent / "jetgrid")


async def test_an_ollama_worker_with_python_from_the_command_line(
    streams: Settings, nc, outcomes, fake_ollama, tmp_path
) -> None:
    env = {
        **os.environ,
        "JETGRID_NATS_URL": streams.nats_url,
        "JETGRID_SUBJECT_PREFIX": streams.subject_prefix,
        "JETGRID_STREAM_PREFIX": streams.stream_prefix,
        "JETGRID_DATA_DIR": str(tmp_path / "data"),
        "JETGRID_HEARTBEAT_INTERVAL_S": "0.5",
    }
    proc = await asyncio.create_subprocess_exec(
        JETGRID, "worker", "--pool", "standard", "--backend", "ollama",
        "--ollama-host", fake_ollama.url, "--model", "tiny:1b", "--allow-python",
        "--worker-id", "cli", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        job = JobSubmitted(job_id="g1", model="tiny:1b", pool="standard", prompt="from the cli")
        await nc.jetstream().publish(
            streams.subjects.submit("standard", "tiny:1b"),
            encode(job, source="test", id="g1"),
            headers={"Nats-Msg-Id": "g1"},
        )
        await outcomes.wait_terminal("g1", timeout=30)
        done = outcomes.terminal("g1")[0].event
        assert done.worker_id == "cli" and done.output["response"] == "from the cli"

        @jetgrid.remote(settings=streams, timeout_s=30)
        def double(x):
            return 2 * x

        assert await asyncio.wait_for(double(21), 30) == 42
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode()
    assert "<Worker cli" in out.decode()
