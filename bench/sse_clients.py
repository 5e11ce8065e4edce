"""Many concurrent job event streams on one gateway: JetStream consumers, RSS, fan-out.

Starts a nats-server and one gateway process (the real `jetgrid gateway` under uvicorn, on
127.0.0.1), submits one job for a model no worker serves yet, and opens `--clients` concurrent
``GET /v1/jobs/{id}/events`` streams on it (raw sockets, one connection each). With every stream
open it reads the JetStream consumer count (the JOB_EVENTS stream's and the server's total)
and the gateway's RSS; then it starts one echo worker for the model (the real `jetgrid worker`,
streaming tokens), and checks that every client receives the job's `completed` event (and how
many got token chunks), timing the fan-out from the worker's start.

    .venv/bin/python bench/sse_clients.py [--clients 5000] [--connect-batch 250]

The gateway's stream limits are raised to fit (`JETGRID_MAX_STREAMS_PER_KEY`,
`JETGRID_MAX_STREAMS`), and so are both processes' open-file limits (up to the hard limit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import nats

from jetgrid.coordinator.provision import provision_streams
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobSubmitted, encode, stream_specs
from jetgrid.natsserver import NatsServer, free_port

JETGRID = str(Path(sys.executable).parent / "jetgrid")
MODEL = "held-until-a-worker-comes"
TEXT = " ".join(f"w{i}" for i in range(20))


def raise_nofile(want: int) -> int:
    """Raise this process's open-file limit towards `want` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(max(soft, want), hard) if hard != resource.RLIM_INFINITY else max(soft, want)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_gateway(env: dict[str, str], port: int, nofile: int) -> subprocess.Popen[bytes]:
    """The real `jetgrid gateway`, with its open-file limit raised to `nofile`."""
    return subprocess.Popen(
        [JETGRID, "gateway", "--port", str(port)],
        env=env,
        preexec_fn=lambda: raise_nofile(nofile),  # runs before exec, in the child
    )


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The real `jetgrid worker` (echo), serving MODEL and streaming its words as tokens."""
    return subprocess.Popen(
        [JETGRID, "worker", "--pool", "standard", "--model", MODEL, "--worker-id", "bw1",
         "--echo-token-delay", "0.02"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


class Client:
    """One SSE connection, read until the job's terminal event."""

    def __init__(self, port: int, job_id: str) -> None:
        self.port, self.job_id = port, job_id
        self.buf = b""
        self.opened = asyncio.Event()
        self.done_at: float | None = None
        self.status = 0
        self.error: str | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(
            f"GET /v1/jobs/{self.job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await self.writer.drain()
        while b"retry:" not in self.buf:  # headers and the first frame: the stream is open
            chunk = await self.reader.read(65536)
            if not chunk:
                raise ConnectionError("closed before the first frame")
            self.buf += chunk
        self.status = int(self.buf.split(b" ", 2)[1])
        self.opened.set()

    async def read_to_end(self) -> None:
        assert self.reader is not None and self.writer is not None
        try:
            while b"event: completed" not in self.buf:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                self.buf += chunk
            if b"event: completed" in self.buf:
                self.done_at = time.perf_counter()
        finally:
            self.writer.close()

    @property
    def tokens(self) -> int:
        return self.buf.count(b"event: token")


async def consumers(js: nats.js.JetStreamContext, stream: str) -> tuple[int, int]:
    """(consumers on `stream`, consumers in the account)."""
    info = await js.stream_info(stream)
    acct = await js.account_info()
    return info.state.consumer_count, acct.consumers


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clients", type=int, default=5000)
    ap.add_argument("--connect-batch", type=int, default=250, help="connections opened at once")
    args = ap.parse_args()
    n = args.clients
    nofile = raise_nofile(n + 1024)

    tmp = Path(tempfile.mkdtemp(prefix="jetgrid-bench-sse-"))
    server = NatsServer(tmp / "store", port=0, log_file=tmp / "nats.log").start()
    settings = Settings(nats_url=server.url, subject_prefix="bench", data_dir=tmp)
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await provision_streams(js, stream_specs(settings.subjects, settings.streams))
    port = free_port()
    env = {
        **os.environ,
        "JETGRID_NATS_URL": server.url,
        "JETGRID_SUBJECT_PREFIX": "bench",
        "JETGRID_MAX_STREAMS_PER_KEY": str(n + 100),
        "JETGRID_MAX_STREAMS": str(n + 100),
    }
    gateway = start_gateway(env, port, n + 1024)
    worker: subprocess.Popen[bytes] | None = None
    clients: list[Client] = []
    stream = settings.streams.job_events
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(300):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise SystemExit("the gateway did not come up")
            job_id = uuid.uuid4().hex
            job = JobSubmitted(job_id=job_id, model=MODEL, pool="standard", prompt=TEXT)
            subject = settings.subjects.submit("standard", MODEL)
            await js.publish(subject, encode(job, source="bench"), headers={"Nats-Msg-Id": job_id})
            for _ in range(100):
                if (await http.get(f"/v1/jobs/{job_id}")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
        before = await consumers(js, stream)
        rss_before = rss_mib(gateway.pid)

        t0 = time.perf_counter()
        clients = [Client(port, job_id) for _ in range(n)]
        failed: list[str] = []
        for i in range(0, n, args.connect_batch):
            batch = clients[i : i + args.connect_batch]
            opened = await asyncio.gather(*(c.open() for c in batch), return_exceptions=True)
            for c, r in zip(batch, opened, strict=True):
                if isinstance(r, BaseException):
                    c.error = repr(r)
                    failed.append(c.error)
        open_s = time.perf_counter() - t0
        ok = [c for c in clients if c.opened.is_set() and c.status == 200]
        during = await consumers(js, stream)
        rss_during = rss_mib(gateway.pid)
        readers = [asyncio.create_task(c.read_to_end()) for c in ok]

        t1 = time.perf_counter()
        worker = start_worker(env)
        await asyncio.wait_for(asyncio.gather(*readers), 300)
        done = [c for c in ok if c.done_at is not None]
        fanout = [c.done_at - t1 for c in done if c.done_at is not None]
        after = await consumers(js, stream)
        rss_after = rss_mib(gateway.pid)
    finally:
        for c in clients:
            if c.writer is not None and not c.writer.is_closing():
                c.writer.close()
        await nc.close()
        for p in (worker, gateway):
            if p is not None:
                p.terminate()
        for p in (worker, gateway):
            if p is not None:
                p.wait(15)
        server.stop()

    with_tokens = sum(1 for c in done if c.tokens)
    result = {
        "clients": n,
        "open": len(ok),
        "open_failed": len(failed),
        "open_s": round(open_s, 2),
        "completed_seen": len(done),
        "with_token_chunks": with_tokens,
        "fanout_last_s_from_worker_start": round(max(fanout), 2) if fanout else None,
        "consumers_job_events_before_during_after": [before[0], during[0], after[0]],
        "consumers_account_before_during_after": [before[1], during[1], after[1]],
        "gateway_rss_mib_before_during_after": [
            round(rss_before, 1),
            round(rss_during, 1),
            round(rss_after, 1),
        ],
        "nofile": nofile,
    }
    print(
        f"{len(ok)}/{n} event streams open on one gateway ({open_s:.1f} s to open); "
        f"{len(done)} saw `completed` ({with_tokens} with token chunks)"
    )
    print(
        f"JetStream consumers on {stream}: {before[0]} before, {during[0]} with every stream "
        f"open, {after[0]} after; in the account: {before[1]}, {during[1]}, {after[1]}"
    )
    print(f"gateway RSS: {rss_before:.0f} MiB before, {rss_during:.0f} MiB with every stream open")
    if failed:
        print(f"first open failures: {failed[:3]}")
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
