"""`jetgrid submit` as the `client` NATS user of a fair-share pool: the job goes to that user's
own tenant queue (the only one its permissions allow) with the user as its submitter."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from jetgrid.events import decode
from tests.security.conftest import PREFIX, STREAMS

pytestmark = pytest.mark.integration
JETGRID = str(Path(sys.executable).parent / "jetgrid")


async def test_submit_queues_under_the_nats_users_tenant_in_a_fair_pool(
    provisioned: Any, admin_nc: Any, tmp_path: Path
) -> None:
    pools = tmp_path / "pools.toml"
    pools.write_text('[[pool]]\nname = "standard"\nfair_share = true\n')
    env = {**os.environ, "JETGRID_NATS_URL": provisioned.server.url,
           "JETGRID_NATS_USER": "client", "JETGRID_NATS_PASSWORD": provisioned.passwords["client"],
           "JETGRID_SUBJECT_PREFIX": PREFIX, "JETGRID_STREAM_PREFIX": STREAMS,
           "JETGRID_POOLS_FILE": str(pools)}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        JETGRID, "submit", "--model", "echo", "--pool", "standard", "--prompt", "hi",
        "--id", "fair-cli-1", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    seq = json.loads(out.decode().splitlines()[-1])["seq"]
    msg = await admin_nc.jetstream().get_msg(f"{STREAMS}JOBS", seq)
    assert msg.subject == f"{PREFIX}.jobs.standard.echo.normal.client"
    job = decode(msg.data).event
    assert (job.job_id, job.submitter, job.tenant) == ("fair-cli-1", "client", "client")
