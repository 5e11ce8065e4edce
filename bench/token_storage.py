"""What storing token chunks costs the server: TOKENS on file (synced on every write, as
jetgrid's nats.conf asks) against memory, with no stream as the baseline.

For each storage it starts a nats-server with jetgrid's own config, provisions the deployment's
streams and publishes `--chunks` chunk-sized messages the way a worker does (core publish, no
ack awaited) as fast as it can: chunks stored per second. Then it sends chunks at `--rate` per
second for `--seconds` while timing acked publishes to JOB_EVENTS (the lifecycle writes the
chunks compete with), one every 5 ms: their p50 and p99.

    .venv/bin/python bench/token_storage.py [--chunks 20000] [--rate 1000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import nats

from jetgrid.coordinator.provision import deployment_specs, provision_streams
from jetgrid.coordinator.settings import Settings
from jetgrid.natsserver import NatsServer

BODY = json.dumps({"job_id": "j" * 32, "attempt": 1, "i": 0, "text": "hello world " * 3})


async def _publish(nc: nats.NATS, s: Settings, n: int, rate: float | None) -> None:
    """`n` chunks as a worker sends them (core publish), at `rate` per second or at once."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(n):
        await nc.publish(s.subjects.tokens(f"job{i % 100}", "w1"), BODY.encode())
        if rate and i % 10 == 9:
            await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - loop.time()))
    await nc.flush()


async def measure(storage: str, chunks: int, rate: float, seconds: float) -> tuple[float, ...]:
    """(chunks stored per second at full speed; p50 and p99 ms of acked JOB_EVENTS publishes
    while chunks arrive at `rate` per second for `seconds`)."""
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp) / "js") as server:
        tokens = "memory" if storage == "none" else storage
        s = Settings(nats_url=server.url, tokens_storage=tokens)  # type: ignore[arg-type]
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        specs = deployment_specs(s)
        if storage == "none":
            specs = [x for x in specs if x.logical != "TOKENS"]
        await provision_streams(js, specs)

        async def stored(n: int) -> None:
            if storage != "none":
                # polls the server's count: there is no local event to wait on
                while (await js.stream_info(s.streams.tokens)).state.messages < n:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)

        t0 = time.perf_counter()
        await _publish(nc, s, chunks, None)
        await stored(chunks)
        capacity = chunks / (time.perf_counter() - t0)

        lat: list[float] = []
        flow = asyncio.create_task(_publish(nc, s, int(rate * seconds), rate))
        i = 0
        while not flow.done():
            t = time.perf_counter()
            await js.publish(s.subjects.job_event(f"j{i}", "progress"), b"{}")
            lat.append((time.perf_counter() - t) * 1000)
            i += 1
            await asyncio.sleep(0.005)
        await flow
        await nc.close()
    q = statistics.quantiles(lat, n=100)
    return capacity, q[49], q[98]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=1000.0, help="chunks/s while timing")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    for r in range(args.rounds):
        for storage in ("none", "file", "memory"):
            cap, p50, p99 = await measure(storage, args.chunks, args.rate, args.seconds)
            print(
                f"round {r} TOKENS {storage:6s}: {cap:>9,.0f} chunks/s stored at full speed; "
                f"acked JOB_EVENTS publish at {args.rate:g} chunks/s: "
                f"p50 {p50:.2f} ms p99 {p99:.2f} ms",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
