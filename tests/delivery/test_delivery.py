"""Delivery guarantees against a real nats-server: leases, crashes, retries, dead letters,
duplicates, timeouts."""

from __future__ import annotations

import asyncio
import signal

import pytest
from nats.aio.msg import Msg

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.delivery import GiveUp, after_transient
from jetgrid.events import JobSubmitted
from jetgrid.worker.agent import Worker, WorkerOptions
from jetgrid.worker.backends import EchoBackend, expected_output
from jetgrid.worker.deadletter import DeadLetterWatcher
from jetgrid.worker.outcomes import Outcomes
from tests.helpers import count_subjects, job, job_views, spawn_worker, submit, until, write_pools

pytestmark = pytest.mark.integration


async def test_a_long_job_is_not_redelivered_while_its_worker_lives(
    streams, nc, start_worker, outcomes, tmp_path
) -> None:
    s = streams.replace(pools_file=write_pools(tmp_path / "pools.toml", ack_wait_s=1.0))
    await start_worker(settings=s)
    await submit(nc.jetstream(), s, job(1, prompt=None, input={"sleep": 4}))
    await outcomes.wait_terminal("j1", timeout=20)
    assert outcomes.names("j1") == ["started", "completed"]
    assert outcomes.terminal("j1")[0].event.attempt == 1
    info = await nc.jetstream().consumer_info(s.streams.jobs, "pool-standard-echo")
    assert info.config.ack_wait == 1.0 and info.num_redelivered == 0


async def test_a_worker_killed_mid_job_loses_nothing(
    streams, nc, start_worker, outcomes, tmp_path, procs
) -> None:
    s = streams.replace(pools_file=write_pools(tmp_path / "pools.toml", ack_wait_s=1.0))
    victim = await spawn_worker(s, "victim", "--no-dead-letters")
    procs.append(victim)
    j = job(1, prompt=None, input={"sleep": 2})
    await submit(nc.jetstream(), s, j)
    await outcomes.wait_for(lambda: "started" in outcomes.names("j1"), timeout=30)
    assert outcomes.events["j1"][-1].event.worker_id == "victim"
    victim.send_signal(signal.SIGKILL)
    await victim.wait()
    await start_worker(settings=s, worker_id="heir")
    await outcomes.wait_terminal("j1", timeout=20)
    done = outcomes.terminal("j1")[0].event
    assert (done.worker_id, done.attempt) == ("heir", 2)
    assert done.output == expected_output(j)


async def test_transient_failures_end_dead_exactly_once_with_two_watchers(
    streams, nc, start_worker, outcomes, tmp_path
) -> None:
    s = streams.replace(
        pools_file=write_pools(tmp_path / "p.toml", max_deliver=3, backoff_s=[0.05, 0.1])
    )
    watchers, conns, tasks = [], [], []
    for i in range(2):
        conn = await Bus.connect(s, name=f"watcher-{i}")
        w = DeadLetterWatcher(s, conn, name=f"watcher-{i}")
        conns.append(conn)
        watchers.append(w)
        tasks.append(asyncio.create_task(w.run()))
    await asyncio.gather(*(w.ready.wait() for w in watchers))
    await start_worker(settings=s, dead_letters=False)
    js = nc.jetstream()
    await submit(js, s, job(1, prompt=None, input={"fail": "transient"}))
    ack = await js.publish(
        s.subjects.submit("standard", "echo"),
        b'{"model": "echo", "input": {"fail": "transient"}}',
    )
    bare = f"seq-{ack.seq}"
    await outcomes.wait_terminal("j1", bare, timeout=20)
    # both watchers saw the advisory or shared it; either way the stream holds one dead event
    await until(lambda: sum(w.published for w in watchers) >= 2)
    for job_id in ("j1", bare):
        # `dead` from a watcher (four tokens) or from the worker on the last delivery (under its
        # id): whichever came first, one is stored
        said = await count_subjects(js, s.streams.job_events, s.subjects.job_events(job_id))
        deads = {k: n for k, n in said.items() if s.subjects.parse_job_event(k)[1] == "dead"}
        assert sum(deads.values()) == 1, said
        dead = outcomes.terminal(job_id)[0].event
        assert dead.type == "jetgrid.job.dead" and dead.attempts == 3
        assert "last error: echo: asked to fail transiently" in dead.reason
    # (core NATS shows every publish of `dead`, the duplicates too; the stream kept one)
    names = outcomes.names("j1")
    # each run's claim said once: the first one's on its `retrying` (or its own `started`, if it
    # lasted), a redelivery's by a `started` at once
    assert [n for n in names[: names.index("dead") + 1] if n != "started"] == [
        "retrying", "retrying", "dead"
    ]  # fmt: skip
    assert len(outcomes.claims("j1")) == 3
    views = await job_views(js, s)
    assert views["j1"].status == "dead" and views[bare].status == "dead"
    for w in watchers:
        w.stop()
    await asyncio.gather(*tasks)
    for conn in conns:
        await conn.close()


async def test_deterministic_failures_are_not_retried(streams, nc, start_worker, outcomes):
    await start_worker()
    await submit(nc.jetstream(), streams, job(1, prompt=None, input={"fail": "permanent"}))
    await outcomes.wait_terminal("j1")
    assert outcomes.said("j1") == ["failed"] and len(outcomes.claims("j1")) == 1
    js = nc.jetstream()

    async def acked() -> bool:
        info = await js.consumer_info(streams.streams.jobs, "pool-standard-echo")
        return info.num_ack_pending == 0

    await until(acked)  # the ack follows the stored terminal event
    info = await js.consumer_info(streams.streams.jobs, "pool-standard-echo")
    assert info.num_redelivered == 0


class DiesAfterItsLastRun(Outcomes):
    """Records nothing when a job's last run fails, and does not nak: as if SIGKILLed between
    the run and storing `dead`."""

    async def retry(self, msg: Msg, job: JobSubmitted, attempt: int, reason: str) -> None:
        if isinstance(after_transient(attempt, self.pool), GiveUp):
            return
        await super().retry(msg, job, attempt, reason)


async def test_a_job_given_up_is_dead_even_when_its_worker_and_the_advisory_are_lost(
    streams, nc, outcomes, tmp_path
) -> None:
    """No dead-letter watcher runs (as if the advisory were lost while DEAD_LETTERS elects a
    leader) and the worker dies after the last run: the recording delivery still makes it dead."""
    pools = write_pools(tmp_path / "p.toml", max_deliver=2, ack_wait_s=1.0, backoff_s=[0.05])
    s = streams.replace(pools_file=pools)
    agent = Worker(
        s,
        WorkerOptions(pool="standard", models=("echo",), worker_id="w1", dead_letters=False),
        EchoBackend(),
        outcomes=DiesAfterItsLastRun,
    )
    task = asyncio.create_task(agent.run())
    try:
        await agent.ready.wait()
        js = nc.jetstream()
        await submit(js, s, job(1, prompt=None, input={"fail": "transient"}))
        await outcomes.wait_terminal("j1", timeout=20)
        [dead] = [e.event for e in outcomes.terminal("j1")]
        assert dead.type == "jetgrid.job.dead" and dead.attempts == 2  # two runs, not three
        assert "asked to fail transiently" in dead.reason  # the last error, from `retrying`
        assert len(outcomes.claims("j1")) == 2  # the third delivery never ran it
        info = await js.consumer_info(s.streams.jobs, "pool-standard-echo")
        assert info.config.max_deliver == 3  # the pool's 2 runs, and the recording delivery

        async def settled() -> bool:  # the recording delivery is naked after `dead` is stored
            return (
                await js.consumer_info(s.streams.jobs, "pool-standard-echo")
            ).num_ack_pending == 0

        await until(settled, timeout=10)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 20)


async def lost_keepalives(msg: Msg, period_s: float) -> None:
    """In-progress acks that never arrive (a partition, a stalled event loop)."""
    await asyncio.Event().wait()


async def test_a_job_run_twice_counts_once(streams, nc, start_worker, outcomes, tmp_path):
    s = streams.replace(pools_file=write_pools(tmp_path / "p.toml", ack_wait_s=1.0))
    slow = Worker(
        s,
        WorkerOptions(pool="standard", models=("echo",), worker_id="slow", dead_letters=False),
        EchoBackend(),
        keep_alive=lost_keepalives,
    )
    slow_task = asyncio.create_task(slow.run())
    await slow.ready.wait()
    j = job(1, prompt=None, input={"sleep": 2.5})
    await submit(nc.jetstream(), s, j)
    await outcomes.wait_for(lambda: "started" in outcomes.names("j1"))
    await start_worker(settings=s, worker_id="fast")  # takes the redelivery after AckWait
    await outcomes.wait_for(
        lambda: len([e for e in outcomes.events["j1"] if e.type == "jetgrid.job.started"]) == 2,
        timeout=20,
    )
    await until(lambda: slow.counters.completed == 1, timeout=20)  # the slow one reports too
    await outcomes.wait_terminal("j1")
    js = nc.jetstream()
    subject = s.subjects.job_event("j1", "completed") + ".*"  # said by either worker
    await until(lambda: count_subjects(js, s.streams.job_events, subject))
    assert sum((await count_subjects(js, s.streams.job_events, subject)).values()) == 1
    workers = {e.event.worker_id for e in outcomes.events["j1"] if e.type.endswith("started")}
    assert workers == {"slow", "fast"}
    view = (await job_views(js, s))["j1"]
    assert view.status == "completed" and view.output == expected_output(j)
    assert view.attempts == 2
    slow.stop()
    await slow_task


async def test_a_job_past_its_timeout_is_stopped_and_failed(
    streams, nc, start_worker, outcomes, tmp_path
) -> None:
    s = streams.replace(pools_file=write_pools(tmp_path / "p.toml", job_timeout_cap_s=0.5))
    agent = await start_worker(settings=s)
    js = nc.jetstream()
    await submit(js, s, job(1, prompt=None, input={"sleep": 30}, timeout_s=0.2))
    await submit(js, s, job(2, prompt=None, input={"sleep": 30}, timeout_s=100))  # capped
    await submit(js, s, job(3))
    await outcomes.wait_terminal("j1", "j2", "j3")
    for jid, limit in (("j1", "0.2 s"), ("j2", "0.5 s")):
        failed = outcomes.terminal(jid)[0].event
        assert failed.type == "jetgrid.job.failed" and failed.error_type == "timeout"
        assert limit in failed.reason
    assert outcomes.terminal("j3")[0].type == "jetgrid.job.completed"
    await until(lambda: agent.counters.completed == 1)
    assert agent.counters.timed_out == 2 and not agent.held.runs
