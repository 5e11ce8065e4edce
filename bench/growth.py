"""Does serving depend on history? The gateway's time to ready and RSS over logs of growing length.

For each size (1x, then `--factor` times it) a fresh nats-server is filled with a realistic mix
(per job: its submission on JOBS, claimed, started and completed on JOB_EVENTS; plus worker
registrations and pings on WORKERS, `--pings-per-job` per job), with event times as a fleet of
100 workers pinging every 5 s would give them (20 pings a second, so the log spans about
1.7 hours at 200k messages; it ends a minute ago), by raw publishes in batches of
`BATCH` whose acks arrive asynchronously on one inbox (each batch's acks awaited before the
next). Then a real `jetgrid gateway`
process is started and timed to its first 200 on /readyz (`--repeat` times: the median); its
RSS is read then, and an old job (the first one filled) is read by id to check it is still
served. With `--baseline-src DIR` (a
checkout of another version, e.g. `git archive main | tar -x -C DIR`) its gateway is measured
on the same log too. Then a fresh projector (empty SQLite read model) catches up from sequence 1,
publishes a snapshot of its read models, and another fresh projector catches up from that
snapshot; both are timed (`--no-projector` skips this).

    .venv/bin/python bench/growth.py [--messages 200000] [--factor 10] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import ensure_snapshot_bucket, provision_streams
from jetgrid.coordinator.settings import Settings
from jetgrid.events import (
    JobClaimed,
    JobCompleted,
    JobStarted,
    JobSubmitted,
    WorkerHeartbeat,
    WorkerRegistered,
    encode,
    stream_specs,
)
from jetgrid.events.codec import format_time
from jetgrid.natsserver import NatsServer, free_port
from jetgrid.projections import snapshot
from jetgrid.projections.fold import fold_config
from jetgrid.projections.folder import stream_filters
from jetgrid.projections.runner import Projector
from jetgrid.projections.store import Store

JETGRID = str(Path(sys.executable).parent / "jetgrid")
PREFIX = "growth"
WORKERS = 100
BATCH = 5000
JOB = "J0000000000"  # placeholder job id, replaced in the encoded bytes
NUM = 987654321  # placeholder ping counter
WHEN = datetime(2000, 1, 1, tzinfo=UTC)  # placeholder event time
PING_S = 5.0 / WORKERS  # event time between two pings of the fleet


def templates(s: Settings) -> dict[str, tuple[str, bytes]]:
    """(subject, body) of each message kind, with placeholders for the job id and counters."""
    subj = s.subjects
    w = "w000"
    src = f"jetgrid/worker/{w}"
    done = JobCompleted(job_id=JOB, worker_id=w, attempt=1, output={"text": "ok"}, duration_s=0)
    sub = JobSubmitted(job_id=JOB, model="echo", pool="standard", prompt="hi")
    return {
        "submit": (subj.submit("standard", "echo"), encode(sub, source="b", time=WHEN)),
        "claimed": (
            subj.job_event(JOB, "claimed", w),
            encode(
                JobClaimed(job_id=JOB, worker_id=w, attempt=1, jobs_seq=NUM), source=src, time=WHEN
            ),
        ),
        "started": (
            subj.job_event(JOB, "started", w),
            encode(JobStarted(job_id=JOB, worker_id=w, attempt=1), source=src, time=WHEN),
        ),
        "completed": (subj.job_event(JOB, "completed", w), encode(done, source=src, time=WHEN)),
        "ping": (
            subj.worker_event(w, "heartbeat"),
            encode(
                WorkerHeartbeat(worker_id=w, n=NUM, healthy=True, interval_s=5.0, in_flight=0),
                source=src,
                time=WHEN,
            ),
        ),
    }


def fill_plan(messages: int, pings_per_job: int) -> int:
    """Jobs to fill so that the log holds about `messages` messages."""
    return max(1, messages // (4 + pings_per_job))


async def fill(url: str, s: Settings, jobs: int, pings_per_job: int) -> int:
    """Publish the mix; returns the number of messages stored."""
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    js = nc.jetstream()
    await provision_streams(js, stream_specs(s.subjects, s.streams))
    t = templates(s)
    start = datetime.now(UTC) - timedelta(seconds=jobs * pings_per_job * PING_S + 60)
    when = format_time(WHEN).encode()
    for i in range(WORKERS):
        w = f"w{i:03d}"
        reg = WorkerRegistered(
            worker_id=w, pools=["standard"], models=["echo"], backend="echo", concurrency=4,
            heartbeat_interval_s=5.0,
        )  # fmt: skip
        await js.publish(
            s.subjects.worker_event(w, "registered"),
            encode(reg, source=f"jetgrid/worker/{w}", time=start),
        )
    inbox = nc.new_inbox()
    acked = 0
    caught_up = asyncio.Event()
    target = 0

    async def on_ack(msg: object) -> None:
        nonlocal acked
        acked += 1
        if acked >= target:
            caught_up.set()

    await nc.subscribe(inbox, cb=on_ack)

    async def pub(subject: str, body: bytes) -> None:
        await nc.publish(subject, body, reply=inbox)

    async def settle() -> None:  # wait for the batch's acks: the stream stored all of it
        nonlocal target
        target = sent
        if acked < target:
            caught_up.clear()
            await asyncio.wait_for(caught_up.wait(), 120)

    jobs_seq = 0
    pings = 0
    sent = 0
    for i in range(jobs):
        jid = f"J{i:010d}"
        w = f"w{i % WORKERS:03d}"
        jobs_seq += 1
        at = format_time(start + timedelta(seconds=pings * PING_S)).encode()
        for kind in ("submit", "claimed", "started", "completed"):
            subject, body = t[kind]
            subject = subject.replace(JOB, jid).replace("w000", w)
            body = body.replace(JOB.encode(), jid.encode()).replace(b"w000", w.encode())
            body = body.replace(str(NUM).encode(), str(jobs_seq).encode()).replace(when, at)
            await pub(subject, body)
        for _ in range(pings_per_job):
            pings += 1
            pw = f"w{pings % WORKERS:03d}"
            subject, body = t["ping"]
            body = body.replace(str(NUM).encode(), str(pings // WORKERS + 1).encode())
            body = body.replace(b"w000", pw.encode())
            body = body.replace(
                when, format_time(start + timedelta(seconds=pings * PING_S)).encode()
            )
            await pub(subject.replace("w000", pw), body)
        sent += 4 + pings_per_job
        if sent % BATCH < 4 + pings_per_job:
            await settle()
    await settle()
    total = 0
    for name in (s.streams.jobs, s.streams.job_events, s.streams.workers):
        for _ in range(600):
            info = await js.stream_info(name)
            if name != s.streams.jobs or info.state.messages >= jobs:
                break
            await asyncio.sleep(0.1)
        total += info.state.messages
    await nc.close()
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def gateway(url: str, src: str | None) -> tuple[float, float, str]:
    """(seconds to ready, RSS MiB at ready, status of the first job read by id)."""
    port = free_port()
    env = {
        **os.environ,
        "JETGRID_NATS_URL": url,
        "JETGRID_SUBJECT_PREFIX": PREFIX,
        "JETGRID_LOG_LEVEL": "WARNING",
    }
    if src:
        env["PYTHONPATH"] = src
    t0 = time.perf_counter()
    proc = subprocess.Popen(  # noqa: ASYNC220 (the bench times it; nothing else runs)
        [JETGRID, "gateway", "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"gateway exited with {proc.returncode}")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            ready = time.perf_counter() - t0
            rss = rss_mib(proc.pid)
            r = await http.get(f"/v1/jobs/J{0:010d}")
            status = (
                r.json().get("status", r.status_code) if r.status_code == 200 else r.status_code
            )
        return ready, rss, str(status)
    finally:
        proc.terminate()
        proc.wait(10)


async def projector_catch_up(s: Settings, tmp: Path) -> tuple[float, float]:
    """(seconds for a fresh projector to catch up from sequence 1, seconds for another fresh one
    to catch up from the snapshot the first published); their read models' digests must agree."""
    bus = await Bus.connect(s, name="growth-bench")
    try:
        await ensure_snapshot_bucket(bus.js, s.snapshot_bucket)
        config = fold_config(s)
        # The log's ends, read before any projector floods the connection with deliveries.
        ends = {k: await bus.last_seq(stream) for k, (stream, _) in stream_filters(s).items()}
        times, digests = [], []
        for name, snapshots in (("replay", False), ("snapshot", True)):
            store = Store(f"sqlite+aiosqlite:///{tmp / name}.db")
            projector = Projector(s, store, bus, config, publish=False, snapshots=snapshots)
            t0 = time.perf_counter()
            try:
                await projector.start()
                await projector.wait_for(ends, within=3600)
                times.append(time.perf_counter() - t0)
                if not snapshots:
                    await snapshot.publish(bus, store, s, config)
                elif projector.stats.restored is None:
                    raise SystemExit(f"the snapshot was not used: {projector.stats.refused}")
                digests.append(await store.digest())
            finally:
                await projector.close()
        if digests[0] != digests[1]:
            raise SystemExit("the projector from the snapshot disagrees with the one from seq 1")
        return times[0], times[1]
    finally:
        await bus.close()


def du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=200_000, help="log length at 1x")
    ap.add_argument("--factor", type=int, default=10, help="the larger size, in multiples of 1x")
    ap.add_argument("--pings-per-job", type=int, default=6)
    ap.add_argument("--baseline-src", help="another version's source tree to measure as well")
    ap.add_argument("--baseline-max", type=int, default=10**9, help="skip the baseline above this")
    ap.add_argument("--repeat", type=int, default=3, help="gateway starts per size (median)")
    ap.add_argument("--no-projector", action="store_true", help="skip the projector catch-up")
    args = ap.parse_args()
    rows = []
    for mult in (1, args.factor):
        tmp = Path(tempfile.mkdtemp(prefix="jetgrid-growth-"))
        server = NatsServer(tmp / "store", port=0, log_file=tmp / "nats.log").start()
        try:
            s = Settings(nats_url=server.url, subject_prefix=PREFIX, data_dir=tmp)
            jobs = fill_plan(args.messages * mult, args.pings_per_job)
            t0 = time.perf_counter()
            total = await fill(server.url, s, jobs, args.pings_per_job)
            filled = time.perf_counter() - t0
            store = du_mib(tmp / "store")
            print(
                f"{mult}x: {total:,} messages filled in {filled:.0f} s, store {store:.0f} MiB",
                flush=True,
            )
            runs = [await gateway(server.url, None) for _ in range(args.repeat)]
            ready = statistics.median(r[0] for r in runs)
            rss = statistics.median(r[1] for r in runs)
            status = runs[0][2]
            row = {
                "size": f"{mult}x",
                "messages": total,
                "store_mib": store,
                "ready_s": ready,
                "rss_mib": rss,
                "old_job": status,
            }
            if args.baseline_src and total <= args.baseline_max:
                b_ready, b_rss, b_status = await gateway(server.url, args.baseline_src)
                row.update(base_ready_s=b_ready, base_rss_mib=b_rss, base_old_job=b_status)
            if not args.no_projector:
                row["proj_replay_s"], row["proj_snapshot_s"] = await projector_catch_up(s, tmp)
            rows.append(row)
            print(json.dumps(row), flush=True)
        finally:
            server.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    one = rows[0]
    print()
    print(
        "| size | messages | store MiB | ready s | RSS MiB | old job | baseline ready s "
        "| baseline RSS MiB | projector from seq 1 s | projector from snapshot s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f" ({r['ready_s'] / one['ready_s']:.2f}x)" if r is not one else ""
        rss_ratio = f" ({r['rss_mib'] / one['rss_mib']:.2f}x)" if r is not one else ""
        base = (
            f"{r['base_ready_s']:.2f} | {r['base_rss_mib']:.0f}" if "base_ready_s" in r else "- | -"
        )
        proj = (
            f"{r['proj_replay_s']:.1f} | {r['proj_snapshot_s']:.1f}"
            if "proj_replay_s" in r
            else "- | -"
        )
        print(
            f"| {r['size']} | {r['messages']:,} | {r['store_mib']:.0f} | {r['ready_s']:.2f}{ratio} "
            f"| {r['rss_mib']:.0f}{rss_ratio} | {r['old_job']} | {base} | {proj} |"
        )
    big = rows[-1]
    ok = big["ready_s"] <= 1.2 * one["ready_s"] and big["rss_mib"] <= 1.2 * one["rss_mib"]
    print(f"\ntarget (10x within 1.2x of 1x, ready and RSS): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    asyncio.run(main())
