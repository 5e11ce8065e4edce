"""`jetgrid up` with auth on runs the Batch API and a webhook service as its gateway user: a
job's webhook and a batch's webhook arrive, signed, and NATS refuses nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from pathlib import Path

import httpx
import openai
import pytest

from jetgrid.natsserver import free_port
from tests.gateway.test_webhooks import Receiver, receiving
from tests.helpers import until

JETGRID = str(Path(sys.executable).parent / "jetgrid")
SECRET = "whsec_" + base64.b64encode(b"jetgrid-up-webhook-secret-012345").decode()
pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_up_delivers_job_and_batch_webhooks_with_auth_on(tmp_path: Path) -> None:
    data, gw_port = tmp_path / "data", free_port()
    env = {**os.environ, "JETGRID_WEBHOOK_ALLOW_PRIVATE": "1", "JETGRID_WEBHOOK_SECRET": SECRET}
    proc = await asyncio.create_subprocess_exec(
        JETGRID, "up", "--data-dir", str(data), "--gateway-port", str(gw_port),
        "--nats-port", str(free_port()), "--workers", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    banner = ""
    while "Ctrl-C" not in banner:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line, banner
        banner += line
    base = f"http://127.0.0.1:{gw_port}"
    receiver = Receiver(SECRET)
    try:
        async with receiving(receiver), httpx.AsyncClient(base_url=base) as http:
            job = {"model": "echo", "prompt": "up", "webhook": f"{receiver.url}/job"}
            resp = await http.post("/v1/jobs", json=job)
            assert resp.status_code == 202, resp.text
            line = {"custom_id": "a", "method": "POST", "url": "/v1/completions",
                    "body": {"model": "echo", "prompt": "hi"}}  # fmt: skip
            async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="x") as c:
                up = await c.files.create(
                    file=("in.jsonl", json.dumps(line).encode()), purpose="batch"
                )
                batch = await c.batches.create(
                    input_file_id=up.id,
                    endpoint="/v1/completions",
                    completion_window="24h",
                    metadata={"webhook_url": f"{receiver.url}/batch"},
                )
                await until(lambda: receiver.got.get("/job") and receiver.got.get("/batch"), 30)
                done = await c.batches.retrieve(batch.id)
        assert done.status == "completed" and done.output_file_id
        assert all(ok for got in receiver.got.values() for _, _, ok in got)
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)
    log = (data / "nats-server.log").read_text()
    assert not [ln for ln in log.splitlines() if "Permissions Violation" in ln]
