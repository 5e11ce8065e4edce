"""`jetgrid` processes for tests: workers as subprocesses, the gateway under uvicorn, pools
files."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from jetgrid.coordinator.settings import Settings

JETGRID = str(Path(sys.executable).parent / "jetgrid")


def write_pools(path: Path, **fields: Any) -> Path:
    """A pools file with one pool, `standard`, with `fields` set."""
    lines = ["[[pool]]", 'name = "standard"']
    for k, v in fields.items():
        lines.append(f"{k} = {v!r}".replace("'", '"').replace("(", "[").replace(")", "]"))
    path.write_text("\n".join(lines) + "\n")
    return path


def worker_env(s: Settings, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "JETGRID_NATS_URL": s.nats_url,
        "JETGRID_SUBJECT_PREFIX": s.subject_prefix,
        "JETGRID_STREAM_PREFIX": s.stream_prefix,
        "JETGRID_HEARTBEAT_INTERVAL_S": "0.5",
        "JETGRID_STREAM_REPLICAS": str(s.stream_replicas),
    }
    if s.pools_file:
        env["JETGRID_POOLS_FILE"] = str(s.pools_file)
    env.update(extra)
    return env


async def spawn_worker(
    s: Settings, worker_id: str, *args: str, log: Path | None = None, **env: str
) -> asyncio.subprocess.Process:
    """`jetgrid worker` as its own process (so it can be SIGKILLed or SIGTERMed). Its output
    goes to a pipe, or to `log` for long runs (a pipe nobody reads fills up and blocks it)."""
    # a small local file opened once per process start; not worth a thread
    out = open(log, "ab") if log else asyncio.subprocess.PIPE  # noqa: ASYNC230
    try:
        return await asyncio.create_subprocess_exec(
            JETGRID, "worker", "--pool", "standard", "--model", "echo", "--worker-id", worker_id,
            *args,
            env=worker_env(s, **env),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


async def run_gateway(s: Settings):  # type: ignore[no-untyped-def]
    """The gateway under uvicorn on a free port: (server, task, base URL)."""
    from jetgrid.gateway.server import make_server, wait_started

    server = make_server(s.replace(gateway_port=0))
    task = asyncio.create_task(server.serve())
    port = await wait_started(server, task)
    return server, task, f"http://127.0.0.1:{port}"
