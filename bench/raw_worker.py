"""The baseline worker of bench/roundtrip.py: a raw nats-py JetStream work-queue worker.

It does what JETSTREAM.md section 3 does and nothing more: bind to an existing durable pull
consumer (``pull_subscribe_bind``, no API call), and in each of C concurrent tasks loop over
``fetch(1)``; for every job, store the result as a JetStream event (``js.publish`` awaited, with
``Nats-Msg-Id: <job>:result`` like jetgrid's terminal events), then ``ack()``. The result is the
job's own bytes (an echo): no decoding, no validation, no lifecycle events.

Each task has its own pull subscription (its own deliver inbox), so a task never takes another
task's message or status reply. Once bound, the worker publishes ``<ready-subject>`` (core NATS)
so that the benchmark knows it is serving; SIGTERM stops it.

    python bench/raw_worker.py --nats-url URL --stream S --consumer C \
        --result-prefix P --concurrency 4 --worker-id raw-1 --ready-subject X
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import signal
import sys
import time

import nats
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext


async def serve(args: argparse.Namespace) -> int:
    nc = await nats.connect(args.nats_url, name=f"raw-worker-{args.worker_id}")
    js = nc.jetstream()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    done = 0
    busy = 0

    async def one_task(sub: JetStreamContext.PullSubscription) -> None:
        nonlocal done, busy
        while not stop.is_set():
            try:
                msgs = await sub.fetch(1, timeout=args.fetch_timeout)
            except NatsTimeoutError:
                continue
            for m in msgs:
                busy += 1
                try:
                    job_id = (m.headers or {}).get("Nats-Msg-Id") or str(m.metadata.sequence.stream)
                    await js.publish(
                        f"{args.result_prefix}.{job_id}.done",
                        m.data,
                        headers={"Nats-Msg-Id": f"{job_id}:result"},
                    )
                    await m.ack()
                    done += 1
                finally:
                    busy -= 1

    subs = [
        await js.pull_subscribe_bind(args.consumer, stream=args.stream)
        for _ in range(args.concurrency)
    ]
    tasks = [asyncio.create_task(one_task(sub)) for sub in subs]
    await nc.publish(args.ready_subject, args.worker_id.encode())
    await nc.flush()
    await stop.wait()
    for _ in range(100):  # give a job in hand up to ~1 s to finish; a fetch is just cancelled
        if not busy:
            break
        await asyncio.sleep(0.01)
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    await nc.flush()  # the last acks
    await nc.close()
    print(f"<RawWorker {args.worker_id} completed={done}>", file=sys.stderr, flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nats-url", required=True)
    ap.add_argument("--stream", required=True)
    ap.add_argument("--consumer", required=True)
    ap.add_argument("--result-prefix", required=True, help="results go to <prefix>.<job>.done")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--worker-id", default="raw")
    ap.add_argument("--ready-subject", required=True)
    ap.add_argument("--fetch-timeout", type=float, default=5.0)
    ap.add_argument("--cpu-profile", help="write a CPU-time cProfile of the run to this file")
    args = ap.parse_args()
    if not args.cpu_profile:
        return asyncio.run(serve(args))
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    try:
        return asyncio.run(serve(args))
    finally:
        prof.disable()
        prof.dump_stats(args.cpu_profile)


if __name__ == "__main__":
    sys.exit(main())
