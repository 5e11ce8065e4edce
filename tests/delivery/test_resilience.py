"""NATS restarts, crashes and clusters: nothing acknowledged is lost, every component resumes."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import provision_streams, wait_for_jetstream
from jetgrid.coordinator.settings import Settings
from jetgrid.events import dead_letter_spec, stream_specs
from jetgrid.worker.agent import Worker, WorkerOptions
from jetgrid.worker.backends import EchoBackend, expected_output
from tests.helpers import job, job_views, patiently, run_gateway, submit, until, write_pools

pytestmark = pytest.mark.integration
_n = itertools.count(1)


def own_settings(url: str, tmp_path, replicas: int = 1, **kw) -> Settings:  # type: ignore[no-untyped-def]
    n = next(_n)
    return Settings(
        nats_url=url,
        subject_prefix=f"r{n}",
        stream_prefix=f"R{n}_",
        data_dir=tmp_path / "data",
        heartbeat_interval_s=0.5,
        stream_replicas=replicas,
        **kw,
    )


async def provision(s: Settings) -> None:
    nc = (await Bus.connect(s, name="provision")).nc
    js = nc.jetstream()
    await wait_for_jetstream(js)
    specs = stream_specs(s.subjects, s.streams, replicas=s.stream_replicas)
    await provision_streams(js, [*specs, dead_letter_spec(s.streams, replicas=s.stream_replicas)])
    await nc.close()


async def test_every_component_resumes_after_a_nats_restart(own_server, tmp_path) -> None:
    s = own_settings(own_server.url, tmp_path).replace(
        pools_file=write_pools(tmp_path / "p.toml", max_deliver=2, backoff_s=[0.1])
    )
    await provision(s)
    agent = Worker(s, WorkerOptions(pool="standard", models=("echo",), concurrency=2),
                   EchoBackend())  # fmt: skip
    worker_task = asyncio.create_task(agent.run())
    await agent.ready.wait()
    gw, gw_task, base = await run_gateway(s)
    nc = (await Bus.connect(s, name="test-client")).nc
    js = nc.jetstream()
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            r = await http.post("/v1/jobs?wait=10", json={"model": "echo", "prompt": "before"})
            assert r.json()["status"] == "completed"
            # a job in flight across the restart
            await patiently(lambda: submit(js, s, job("inflight", prompt=None, input={"sleep": 1})))
            await until(lambda: agent.held.contexts)
            await asyncio.to_thread(own_server.stop)
            await asyncio.to_thread(own_server.start)
            jobs = [job(i) for i in range(5)]
            jobs.append(job("doomed", prompt=None, input={"fail": "transient"}))
            for j in jobs:
                await patiently(lambda j=j: submit(js, s, j))

            async def all_done() -> bool:
                views = await job_views(js, s)
                return all(
                    views.get(j.job_id) and views[j.job_id].terminal
                    for j in [*jobs, job("inflight")]
                )

            await until(all_done, timeout=60, every=0.25)
            views = await job_views(js, s)
            for j in jobs[:-1]:
                assert views[j.job_id].status == "completed"
                assert views[j.job_id].output == expected_output(j)
            assert views["jinflight"].status == "completed"
            assert views["jdoomed"].status == "dead"  # the dead-letter watcher resumed too

            async def gateway_knows() -> bool:  # the gateway's board resumed following the log
                r = await http.get("/v1/jobs/jdoomed")
                return r.status_code == 200 and r.json()["status"] == "dead"

            await until(gateway_knows, timeout=30, every=0.25)
            r = await http.post("/v1/jobs?wait=10", json={"model": "echo", "prompt": "after"})
            assert r.json()["status"] == "completed" and r.json()["output"]["response"] == "after"
    finally:
        gw.should_exit = True
        await asyncio.wait_for(gw_task, 10)
        agent.stop()
        await asyncio.wait_for(worker_task, 20)
        await nc.close()


async def test_acknowledged_jobs_survive_kill_9_of_nats(own_server, tmp_path) -> None:
    s = own_settings(own_server.url, tmp_path)
    await provision(s)
    nc = (await Bus.connect(s, name="submitter")).nc
    js = nc.jetstream()
    jobs = [job(i) for i in range(200)]
    acks = await asyncio.gather(*(submit(js, s, j) for j in jobs))
    assert sorted(acks) == list(range(1, 201))  # every one acknowledged by the stream
    await nc.close()
    await asyncio.to_thread(own_server.kill)  # SIGKILL: no shutdown, no flush
    await asyncio.to_thread(own_server.start)
    nc = (await Bus.connect(s, name="after-crash")).nc
    js = nc.jetstream()
    try:
        info = await js.stream_info(s.streams.jobs)
        assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (200, 1, 200)
        agent = Worker(s, WorkerOptions(pool="standard", models=("echo",), concurrency=4,
                                         burst=True), EchoBackend())  # fmt: skip
        await asyncio.wait_for(agent.run(), 60)
        views = await job_views(js, s)
        assert all(views[j.job_id].status == "completed" for j in jobs)
        assert all(views[j.job_id].output == expected_output(j) for j in jobs)
    finally:
        await nc.close()


async def test_the_server_config_fsyncs_every_write(tmp_path) -> None:
    from jetgrid.natsserver import NatsServer, free_port

    monitor = free_port()
    with NatsServer(tmp_path / "s", extra_args=("-m", str(monitor))):
        async with httpx.AsyncClient() as http:
            varz = (await http.get(f"http://127.0.0.1:{monitor}/varz")).json()
    assert varz["jetstream"]["config"]["sync_always"] is True
