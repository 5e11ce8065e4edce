"""`jetgrid up` runs with auth on: generated passwords, a user per role, no anonymous access."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import stat
import sys
from pathlib import Path

import pytest

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.errors import NatsUnavailable
from jetgrid.coordinator.settings import Settings
from jetgrid.natsserver import free_port
from jetgrid.worker.agent import Worker, WorkerOptions
from jetgrid.worker.backends import EchoBackend

JETGRID = str(Path(sys.executable).parent / "jetgrid")
pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        JETGRID, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


def _exports(text: str) -> dict[str, str]:
    pairs = [
        shlex.split(ln[len("export ") :])[0] for ln in text.splitlines() if ln.startswith("export ")
    ]
    return dict(p.split("=", 1) for p in pairs)


async def test_up_generates_credentials_and_refuses_anonymous_clients(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    url = f"nats://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        JETGRID, "up", "--data-dir", str(data), "--gateway-port", str(free_port()),
        "--nats-port", str(port), "--workers", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    banner = ""
    while "Ctrl-C" not in banner:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line, banner
        banner += line
    try:
        assert "auth     on" in banner
        for name in ("credentials.json", "nats.conf"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
        with pytest.raises(NatsUnavailable):
            await Bus.connect(Settings(nats_url=url, nats_connect_timeout_s=1), name="anonymous")

        # The client user, as `eval "$(jetgrid credentials client)"` gives it, submits and waits.
        rc, out = await _run("credentials", "client", "--data-dir", str(data))
        client = {**_exports(out), "JETGRID_NATS_URL": url}
        rc, out = await _run("submit", "--model", "echo", "--prompt", "auth on", "--wait", "20",
                             env=client)  # fmt: skip
        assert rc == 0, out
        assert json.loads(out.splitlines()[-1])["status"] == "completed"

        # A worker may not submit: a clear refusal naming the subject, not a hang.
        worker_user = json.loads((data / "credentials.json").read_text())["passwords"]
        wname = next(u for u in worker_user if u.startswith("worker-"))
        as_worker = {"JETGRID_NATS_URL": url, "JETGRID_NATS_USER": wname,
                     "JETGRID_NATS_PASSWORD": worker_user[wname]}  # fmt: skip
        rc, out = await _run("submit", "--model", "echo", "--prompt", "x", env=as_worker)
        assert rc == 1 and "NATS refused to publish to jetgrid.jobs.standard.echo" in out, out

        # A new worker gets its own user; the running server reloads and lets it in.
        rc, out = await _run("worker-credentials", "add", "late-1", "--data-dir", str(data))
        assert rc == 0, out
        env = dict(ln.split("=", 1) for ln in out.splitlines() if ln.startswith("JETGRID_"))
        settings = Settings(nats_url=url, nats_user=env["JETGRID_NATS_USER"],
                            nats_password=env["JETGRID_NATS_PASSWORD"])  # fmt: skip
        options = WorkerOptions(pool="standard", models=("echo",), worker_id="late-1", burst=True)
        agent = Worker(settings, options, EchoBackend())
        await asyncio.wait_for(agent.run(), 30)
        assert agent.counters.pings >= 1
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)
    log = (data / "nats-server.log").read_text()
    # The only refusal in the log is the one this test provoked on purpose.
    refusals = [ln for ln in log.splitlines() if "Permissions Violation" in ln]
    assert all("jetgrid.jobs.standard.echo" in ln for ln in refusals), refusals
