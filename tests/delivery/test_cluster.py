"""A real 3-node JetStream cluster on loopback: R3 streams and consumers, failover, chaos."""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import signal
import time

import pytest
from nats.js.api import Header

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import provision_streams, wait_for_jetstream
from jetgrid.coordinator.settings import Settings
from jetgrid.events import dead_letter_spec, encode, stream_specs
from jetgrid.worker.agent import Worker, WorkerOptions
from jetgrid.worker.backends import EchoBackend, expected_output
from tests.helpers import job, job_views, patiently, read_stream, spawn_worker, submit, until

pytestmark = pytest.mark.integration
_n = itertools.count(1)


async def cluster_settings(cluster, tmp_path, **pools) -> Settings:  # type: ignore[no-untyped-def]
    n = next(_n)
    s = Settings(
        nats_url=cluster.url,
        subject_prefix=f"c{n}",
        stream_prefix=f"C{n}_",
        data_dir=tmp_path / "data",
        heartbeat_interval_s=0.5,
        stream_replicas=3,
    )
    if pools:
        from pathlib import Path

        lines = ["[[pool]]", 'name = "standard"'] + [f"{k} = {v!r}" for k, v in pools.items()]
        path = Path(tmp_path) / "pools.toml"
        path.write_text("\n".join(lines).replace("(", "[").replace(")", "]") + "\n")
        s = s.replace(pools_file=path)
    nc = (await Bus.connect(s, name="provision")).nc
    js = nc.jetstream()
    await wait_for_jetstream(js)
    specs = [
        *stream_specs(s.subjects, s.streams, replicas=3),
        dead_letter_spec(s.streams, replicas=3),
    ]
    for _ in range(40):  # right after a node restart the meta layer may still be catching up
        try:
            await provision_streams(js, specs)
            break
        except Exception:
            await asyncio.sleep(0.5)
    await nc.close()
    return s


async def publish_retrying(js, subject: str, body: bytes, msg_id: str) -> int:  # type: ignore[no-untyped-def]
    while True:  # same Nats-Msg-Id on every try: a retry after a lost ack is a no-op
        try:
            return (await js.publish(subject, body, headers={Header.MSG_ID: msg_id}, timeout=2)).seq
        except Exception:
            await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_streams_and_consumers_are_replicated_and_survive_a_leader(cluster, tmp_path):
    s = await cluster_settings(cluster, tmp_path)
    nc = (await Bus.connect(s, name="client")).nc
    js = nc.jetstream()
    agent = Worker(s, WorkerOptions(pool="standard", models=("echo",), concurrency=4),
                   EchoBackend())  # fmt: skip
    task = asyncio.create_task(agent.run())
    try:
        await agent.ready.wait()
        assert len(nc._server_pool) >= 3  # the client knows every node
        for name in (s.streams.jobs, s.streams.job_events, s.streams.workers, s.streams.invalid):
            info = await js.stream_info(name)
            assert info.config.num_replicas == 3 and len(info.cluster.replicas or []) == 2
        ci = await js.consumer_info(s.streams.jobs, "pool-standard-echo")
        assert ci.cluster is not None and len(ci.cluster.replicas or []) == 2
        jobs = [job(i) for i in range(20)]
        for j in jobs[:10]:
            await submit(js, s, j)
        leader = (await js.stream_info(s.streams.jobs)).cluster.leader
        node = next(n for n in cluster.nodes if leader and leader.endswith(n.store_dir.name))
        await asyncio.to_thread(node.kill)
        try:
            for j in jobs[10:]:
                subject = s.subjects.submit(j.pool, j.model)
                await publish_retrying(js, subject, encode(j, source="t", id=j.job_id), j.job_id)

            async def done() -> bool:
                views = await job_views(js, s)
                return all(views.get(j.job_id) and views[j.job_id].terminal for j in jobs)

            await until(done, timeout=60, every=0.5)
            views = await job_views(js, s)
            assert all(views[j.job_id].output == expected_output(j) for j in jobs)
            assert (await js.stream_info(s.streams.jobs)).cluster.leader != leader
        finally:
            await asyncio.to_thread(node.start)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
        await nc.close()


GOOD, PERMANENT, TRANSIENT = 1990, 5, 5


async def explain_stuck(js, s: Settings, jobs, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """What the log, the consumers and the workers know about each job that is not terminal."""
    views = await job_views(js, s)
    lines = []
    for j in jobs:
        v = views.get(j.job_id)
        if v is not None and v.terminal:
            continue
        lines.append(f"job {j.job_id}: view {v}")
        events = await read_stream(js, s.streams.job_events, s.subjects.job_events(j.job_id))
        for m in events:
            lines.append(f"  event seq={m.metadata.sequence.stream} {m.subject}")
        for log_file in sorted(tmp_path.glob("cw*.log")):
            for line in log_file.read_text(errors="replace").splitlines():
                if j.job_id in line:
                    lines.append(f"  {log_file.name}: {line[:300]}")
    for info in await js.consumers_info(s.streams.jobs):
        lines.append(
            f"consumer {info.name}: delivered={info.delivered} ack_floor={info.ack_floor} "
            f"ack_pending={info.num_ack_pending} redelivered={info.num_redelivered} "
            f"pending={info.num_pending} waiting={info.num_waiting}"
        )
    state = (await js.stream_info(s.streams.jobs)).state
    lines.append(f"JOBS: messages={state.messages} first={state.first_seq} last={state.last_seq}")
    return "not terminal:\n" + "\n".join(lines)


@pytest.mark.slow
@pytest.mark.timeout(170)  # normally 20-50 s; a shared, loaded machine gets some headroom
# If a job is ever left non-terminal, the failure lists its stored events, the worker log lines
# naming it (workers log each delivery and ack at debug level here) and every consumer's state.
async def test_chaos(cluster, tmp_path, procs) -> None:
    """>= 2,000 jobs while workers are SIGKILLed at random and a NATS node dies and comes back:
    every job ends exactly once, none is lost, every output is right, only the doomed die."""
    s = await cluster_settings(cluster, tmp_path, ack_wait_s=2.0, max_deliver=6,
                               backoff_s=(0.1,))  # fmt: skip
    rng = random.Random(4)
    jobs = [job(i) for i in range(GOOD)]
    jobs += [job(f"perm{i}", prompt=None, input={"fail": "permanent"}) for i in range(PERMANENT)]
    jobs += [job(f"dead{i}", prompt=None, input={"fail": "transient"}) for i in range(TRANSIENT)]
    rng.shuffle(jobs)
    workers: dict[str, object] = {}
    ids = itertools.count(1)

    async def start_worker() -> None:
        wid = f"cw{next(ids)}"
        p = await spawn_worker(
            s, wid, "--concurrency", "16", log=tmp_path / f"{wid}.log", JETGRID_LOG_LEVEL="debug"
        )
        procs.append(p)
        workers[wid] = p

    for _ in range(4):
        await start_worker()
    nc = (await Bus.connect(s, name="chaos-client")).nc
    try:
        js = nc.jetstream()
        done = asyncio.Event()
        kills = {"workers": 0, "nats": 0}

        async def kill_workers() -> None:
            while not done.is_set():
                await asyncio.sleep(rng.uniform(0.5, 1.5))
                victim = rng.choice(list(workers))
                p = workers.pop(victim)
                p.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
                kills["workers"] += 1
                await start_worker()

        async def kill_a_nats_node() -> None:
            await asyncio.sleep(3)
            node = rng.choice(cluster.nodes)
            await asyncio.to_thread(node.kill)
            kills["nats"] += 1
            await asyncio.sleep(3)
            await asyncio.to_thread(node.start)

        t0 = time.monotonic()
        killer = asyncio.create_task(kill_workers())
        node_restart = asyncio.create_task(kill_a_nats_node())
        sem = asyncio.Semaphore(200)

        async def submit(j) -> None:  # type: ignore[no-untyped-def]
            async with sem:
                subject = s.subjects.submit(j.pool, j.model)
                await publish_retrying(
                    js, subject, encode(j, source="chaos", id=j.job_id), j.job_id
                )

        await asyncio.gather(*(submit(j) for j in jobs))
        submitted_in = time.monotonic() - t0

        async def all_terminal() -> bool:
            views = await job_views(js, s)
            return sum(1 for j in jobs if views.get(j.job_id) and views[j.job_id].terminal) == len(
                jobs
            )

        try:
            await until(all_terminal, timeout=60, every=1.0)
        except AssertionError:
            report = await patiently(lambda: explain_stuck(js, s, jobs, tmp_path))
            raise AssertionError(report) from None
        finally:
            done.set()
            killer.cancel()
            # never cancelled: a node killed and not started again would outlive the test
            await asyncio.gather(killer, node_restart, return_exceptions=True)
        drained_in = time.monotonic() - t0
        # stop the survivors cleanly so they report what they suppressed
        duplicates = 0
        for wid, p in workers.items():
            # A replacement started a moment ago may still be importing, before its SIGTERM
            # handler exists: a drain is promised to a worker that has registered.
            subject = s.subjects.worker_event(wid, "registered")
            await until(lambda subject=subject: js.get_last_msg(s.streams.workers, subject), 30)
            if p.returncode is None:  # type: ignore[attr-defined]
                p.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
        slow_exits = 0
        for wid, p in workers.items():
            try:
                await asyncio.wait_for(p.wait(), 45)  # type: ignore[attr-defined]
            except TimeoutError:  # reported below; the guarantees under test are about the jobs
                slow_exits += 1
                p.kill()  # type: ignore[attr-defined]
                await p.wait()  # type: ignore[attr-defined]
                continue
            out = (tmp_path / f"{wid}.log").read_bytes()
            m = re.search(rb"duplicates=(\d+)", out)
            duplicates += int(m.group(1)) if m else 0
            assert p.returncode == 0, out.decode()[-3000:]  # type: ignore[attr-defined]

        # The client may still be reconnecting after the node restart: read once it can.
        views = await patiently(lambda: job_views(js, s))
        events = await patiently(lambda: read_stream(js, s.streams.job_events))
        terminal_events: dict[str, int] = {}
        claims: dict[str, int] = {}
        for m in events:
            job_id, name = s.subjects.parse_job_event(m.subject)
            if name in ("completed", "failed", "cancelled", "dead"):
                terminal_events[job_id] = terminal_events.get(job_id, 0) + 1
            if name == "started":
                claims[job_id] = claims.get(job_id, 0) + 1
        status = {j.job_id: views[j.job_id].status for j in jobs}
        counts = {k: sum(1 for v in status.values() if v == k) for k in set(status.values())}
        redelivered = sum(n - 1 for n in claims.values() if n > 1)
        print(
            f"\nchaos: submitted={len(jobs)} completed={counts.get('completed', 0)} "
            f"failed={counts.get('failed', 0)} dead={counts.get('dead', 0)} "
            f"redelivered={redelivered} jobs_run_twice={sum(1 for n in claims.values() if n > 1)} "
            f"duplicates_suppressed(survivors)={duplicates} worker_kills={kills['workers']} "
            f"nats_kills={kills['nats']} slow_exits_after_sigterm={slow_exits} "
            f"submitted_in={submitted_in:.1f}s "
            f"time_to_drain={drained_in:.1f}s"
        )
        counted = {j.job_id: terminal_events.get(j.job_id, 0) for j in jobs}
        wrong = {job_id: n for job_id, n in counted.items() if n != 1}
        assert not wrong, f"terminal events per job, where not exactly one: {wrong}"
        assert all(views[j.job_id].duplicates == 0 for j in jobs)
        for j in jobs:
            v = views[j.job_id]
            if j.job_id.startswith("jdead"):
                assert v.status == "dead", (j.job_id, v)
            elif j.job_id.startswith("jperm"):
                assert v.status == "failed" and v.error_type == "bad_input", (j.job_id, v)
            else:
                assert v.status == "completed", (j.job_id, v)
                assert v.output == expected_output(j), j.job_id
        assert kills["nats"] == 1 and kills["workers"] >= 1
    finally:
        await nc.close()
