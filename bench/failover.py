"""Time from a worker's SIGKILL to its job completing on another worker, by AckWait.

    .venv/bin/python bench/failover.py [--ack-wait 1 2 5] [--runs 3] [--job-s 2]

For each AckWait: one nats-server, a pools file with that ack_wait_s, a victim and a standby
worker (`jetgrid worker` subprocesses). A job that sleeps --job-s seconds is submitted; 1.5 s
after the victim publishes `started` (time for the standby to come up) the victim is SIGKILLed.
We time the kill -> the standby's `started` (the redelivery) and the kill -> `completed` (the
redelivery plus one whole run of the job, --job-s). The lease left
at the kill is between 2/3 AckWait and AckWait (the victim sent +WPI every AckWait/3), so the
redelivery comes after ~0.67-1.0 x AckWait, plus up to one long poll of the standby.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from _common import Bus, Settings, provision, spawn_worker, tmpdir

from jetgrid.events import JobSubmitted, encode
from jetgrid.natsserver import NatsServer


async def one(s: Settings, run: int, job_s: float) -> tuple[float, float]:
    victim = await spawn_worker(s, f"victim{run}", "--no-dead-letters")
    nc = (await Bus.connect(s, name="bench-failover")).nc
    js = nc.jetstream()
    seen: dict[str, float] = {}
    event = asyncio.Event()

    async def on_event(msg) -> None:  # type: ignore[no-untyped-def]
        _, name = s.subjects.parse_job_event(msg.subject)
        worker = b'"worker_id":"victim' in msg.data
        key = f"{name}:{'victim' if worker else 'standby'}"
        seen.setdefault(key, time.perf_counter())
        event.set()

    job_id = f"f{run}"
    await nc.subscribe(s.subjects.job_events(job_id), cb=on_event)
    job = JobSubmitted(job_id=job_id, model="echo", pool="standard", input={"sleep": job_s})
    await js.publish(s.subjects.submit("standard", "echo"), encode(job, source="bench"),
                     headers={"Nats-Msg-Id": job_id})  # fmt: skip
    while "started:victim" not in seen:
        event.clear()
        await asyncio.wait_for(event.wait(), 60)
    standby = await spawn_worker(s, f"standby{run}", "--no-dead-letters")
    await asyncio.sleep(1.5)  # the standby is up and pulling before the victim dies
    victim.kill()
    killed = time.perf_counter()
    await victim.wait()
    while "completed:standby" not in seen:
        event.clear()
        await asyncio.wait_for(event.wait(), 120)
    standby.terminate()
    await standby.wait()
    await nc.close()
    return seen["started:standby"] - killed, seen["completed:standby"] - killed


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ack-wait", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--job-s", type=float, default=2.0)
    a = ap.parse_args()
    rows = []
    for ack_wait in a.ack_wait:
        d = tmpdir(f"failover-{ack_wait:g}")
        pools = d / "pools.toml"
        pools.write_text(f'[[pool]]\nname = "standard"\nack_wait_s = {ack_wait}\n')
        with NatsServer(d / "store") as server:
            s = Settings(nats_url=server.url, subject_prefix="fo", pools_file=pools)
            await provision(s)
            runs = [await one(s, i, a.job_s) for i in range(a.runs)]
        rows.append((ack_wait, runs))
    print(f"SIGKILL mid-job -> redelivered / completed elsewhere; median of {a.runs} runs; "
          f"the job runs {a.job_s:g} s")  # fmt: skip
    print(
        f"{'AckWait s':>9} {'redelivered s':>14} {'completed s':>12} {'redelivered / AckWait':>22}"
    )
    for ack_wait, runs in rows:
        red = statistics.median(r[0] for r in runs)
        comp = statistics.median(r[1] for r in runs)
        print(f"{ack_wait:9g} {red:14.2f} {comp:12.2f} {red / ack_wait:22.2f}")


if __name__ == "__main__":
    asyncio.run(main())
