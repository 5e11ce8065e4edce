"""The command line as a user runs it: real processes, real ports, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from jetgrid.cli import main
from jetgrid.natsserver import NatsServer, free_port

JETGRID = str(Path(sys.executable).parent / "jetgrid")
COMMANDS = sorted(main.commands)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command: str | None) -> None:
    result = CliRunner().invoke(main, [command, "--help"] if command else ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    doc = (main.commands[command].help if command else main.help) or ""
    assert len(doc.split()) >= 6, f"{command} needs a real description"


def test_a_worker_without_a_pool_is_told_to_name_one() -> None:
    result = CliRunner().invoke(main, ["worker", "--model", "echo"])
    assert result.exit_code == 2
    assert "Missing option '--pool'" in result.output


def test_subject_prints_the_submission_subject() -> None:
    result = CliRunner().invoke(main, ["subject", "--pool", "fast", "--model", "llama3.2:1b"])
    assert result.exit_code == 0
    assert result.output.strip() == "jetgrid.jobs.fast.llama3_2E2_3A1b"
    bad = CliRunner().invoke(main, ["subject", "--pool", "a.b", "--model", "m"])
    assert bad.exit_code == 1 and "pool 'a.b'" in bad.output


async def _spawn(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        JETGRID,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


async def _read_until(proc: asyncio.subprocess.Process, marker: str, timeout: float = 30) -> str:
    seen = []

    async def read() -> str:
        assert proc.stdout is not None
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError(
                    "process ended before printing " + marker + ":\n" + "".join(seen)
                )
            seen.append(line)
            if marker in line:
                return "".join(seen)

    return await asyncio.wait_for(read(), timeout)


@pytest.mark.integration
@pytest.mark.slow
async def test_up_serves_jobs_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    gw_port, nats_port = free_port(), free_port()
    args = ["up", "--data-dir", str(data), "--gateway-port", str(gw_port),
            "--nats-port", str(nats_port)]  # fmt: skip
    proc = await _spawn(*args)
    banner = await _read_until(proc, "Ctrl-C")
    assert f"http://127.0.0.1:{gw_port}" in banner and f"nats://127.0.0.1:{nats_port}" in banner
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw_port}") as http:
        r = await http.post("/v1/jobs?wait=20", json={"model": "echo", "prompt": "persist me"})
        assert r.status_code == 200 and r.json()["status"] == "completed", r.text
        job_id = r.json()["id"]
    proc.send_signal(signal.SIGTERM)
    rest = await _read_until(proc, "stopped.")
    assert await asyncio.wait_for(proc.wait(), 20) == 0, rest
    assert (data / "nats" / "jetstream").is_dir()

    proc = await _spawn(*args)  # a restart resumes from the same store
    await _read_until(proc, "Ctrl-C")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw_port}") as http:
            for _ in range(300):
                r = await http.get(f"/v1/jobs/{job_id}")
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert r.json()["status"] == "completed"
            assert r.json()["output"]["response"] == "persist me"
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


@pytest.mark.integration
async def test_up_says_plainly_when_a_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = await _spawn("up", "--data-dir", str(tmp_path), "--gateway-port", str(port),
                            "--nats-port", str(free_port()))  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    text = out.decode()
    assert f"Port {port}" in text and "already in use" in text and "--gateway-port" in text
    assert "Traceback" not in text


@pytest.mark.integration
@pytest.mark.parametrize("case", ["no NATS", "no streams", "port taken"])
async def test_a_gateway_that_cannot_start_says_why_in_one_line(
    case: str, nats_server: NatsServer
) -> None:
    """Each start-up failure is one `Error:` line naming the value and the fix, exit 1."""
    env = {"JETGRID_NATS_URL": nats_server.url, "JETGRID_STREAM_PREFIX": "NOSTREAMS_",
           "JETGRID_SUBJECT_PREFIX": "nostreams"}  # fmt: skip
    expected = {
        "no NATS": "Could not connect to NATS",
        "no streams": "`jetgrid provision`",
        "port taken": "--port",
    }[case]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1] if case == "port taken" else free_port()
        if case == "no NATS":
            env["JETGRID_NATS_URL"] = f"nats://127.0.0.1:{free_port()}"
        proc = await _spawn("gateway", "--port", str(port), env=env)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 1, text
    errors = [line for line in text.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and expected in errors[0], text
    assert "Traceback" not in text


@pytest.mark.integration
async def test_worker_and_submit_commands(nats_server: NatsServer, tmp_path: Path) -> None:
    env = {"JETGRID_NATS_URL": nats_server.url, "JETGRID_SUBJECT_PREFIX": "clitest",
           "JETGRID_STREAM_PREFIX": "CLI_"}  # fmt: skip
    prov = await _spawn("provision", env=env)
    out, _ = await prov.communicate()
    assert prov.returncode == 0 and b"created stream CLI_JOBS" in out
    worker = await _spawn("worker", "--pool", "standard", "--model", "echo", "--worker-id",
                          "cli-w", "--concurrency", "2", env=env)  # fmt: skip
    try:
        sub = await _spawn("submit", "--model", "echo", "--prompt", "from the shell",
                           "--wait", "20", env=env)  # fmt: skip
        out, _ = await asyncio.wait_for(sub.communicate(), 30)
        assert sub.returncode == 0, out
        lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
        assert lines[0]["status"] == "queued"
        assert lines[-1]["status"] == "completed"
        assert lines[-1]["output"]["response"] == "from the shell"
        assert lines[-1]["worker_id"] == "cli-w"
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(worker.communicate(), 30)
    assert worker.returncode == 0, out
    assert b"completed=1" in out  # the drained worker prints its counters


@pytest.mark.integration
async def test_unreachable_nats_is_a_clear_error() -> None:
    proc = await _spawn("provision", "--nats-url", f"nats://127.0.0.1:{free_port()}")
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert b"Could not connect to NATS" in out and b"Traceback" not in out
