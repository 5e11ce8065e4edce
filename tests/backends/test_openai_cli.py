"""`jetgrid worker --backend openai --base-url URL` as a user runs it: a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobSubmitted, encode

pytestmark = pytest.mark.integration

JETGRID = str(Path(sys.executable).parent / "jetgrid")


async def test_an_openai_worker_from_the_command_line(
    streams: Settings, nc, outcomes, fake_openai, tmp_path
) -> None:
    fake_openai.api_key = "sk-cli"
    env = {
        **os.environ,
        "JETGRID_NATS_URL": streams.nats_url,
        "JETGRID_SUBJECT_PREFIX": streams.subject_prefix,
        "JETGRID_STREAM_PREFIX": streams.stream_prefix,
        "JETGRID_DATA_DIR": str(tmp_path / "data"),
        "JETGRID_HEARTBEAT_INTERVAL_S": "0.5",
        "JETGRID_OPENAI_API_KEY": "sk-cli",
    }
    proc = await asyncio.create_subprocess_exec(
        JETGRID, "worker", "--pool", "standard", "--backend", "openai",
        "--base-url", fake_openai.url, "--model", "tiny", "--worker-id", "cli", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        job = JobSubmitted(
            job_id="g1", model="tiny", pool="standard", kind="chat", prompt="from the cli"
        )
        await nc.jetstream().publish(
            streams.subjects.submit("standard", "tiny"),
            encode(job, source="test", id="g1"),
            headers={"Nats-Msg-Id": "g1"},
        )
        await outcomes.wait_terminal("g1", timeout=30)
        done = outcomes.terminal("g1")[0].event
        assert done.worker_id == "cli" and done.output["message"]["content"] == "from the cli"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode()
    assert "sk-cli" not in out.decode()


def test_a_bad_base_url_is_one_sentence_naming_it() -> None:
    proc = subprocess.run(
        [JETGRID, "worker", "--pool", "p", "--model", "m", "--backend", "openai",
         "--base-url", "localhost:8080"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "'localhost:8080' is not an http(s) URL; give one like" in proc.stderr
    assert "Traceback" not in proc.stderr
