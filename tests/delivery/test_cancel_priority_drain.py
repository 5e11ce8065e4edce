"""Cancels, priorities and graceful drain, against a real nats-server and real processes."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest

from jetgrid.coordinator.bus import Bus
from jetgrid.events import JobCancelRequested, JobSubmitted, encode
from jetgrid.events.addressing import Speaker
from jetgrid.worker.backends import EchoBackend, Result, RunContext
from tests.helpers import (
    JETGRID,
    job,
    job_views,
    spawn_worker,
    submit,
    until,
    worker_env,
    write_pools,
)

pytestmark = pytest.mark.integration


class Watchful(EchoBackend):
    """Echo that remembers whether a job saw its cancel signal before being stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.saw_cancel: dict[str, bool] = {}
        self.started: list[str] = []

    async def run(self, job: JobSubmitted, ctx: RunContext) -> Result:
        self.started.append(job.job_id)
        try:
            return await super().run(job, ctx)
        except asyncio.CancelledError:
            self.saw_cancel[job.job_id] = ctx.cancelled.is_set()
            raise


async def cancel(nc, s, job_id: str, reason: str = "test") -> None:  # type: ignore[no-untyped-def]
    request = JobCancelRequested(job_id=job_id, reason=reason, requested_by="test")
    await Bus(nc, s).store(request, Speaker.service("test"))


async def test_cancelling_a_running_job_stops_it(streams, nc, start_worker, outcomes):
    backend = Watchful()
    agent = await start_worker(backend=backend)
    await submit(nc.jetstream(), streams, job(1, prompt=None, input={"sleep": 30}))
    await until(lambda: backend.started == ["j1"])  # running (`started` precedes that now)
    await cancel(nc, streams, "j1", "changed my mind")
    await outcomes.wait_terminal("j1")
    # its claim: on `cancelled` if that came within started_after_s, else its own `started`
    assert outcomes.said("j1") == ["cancel_requested", "cancelled"]
    assert len(outcomes.claims("j1")) == 1
    done = outcomes.terminal("j1")[0].event
    assert done.worker_id == "w1" and done.reason == "cancel requested"
    assert backend.saw_cancel == {"j1": True}
    await until(lambda: agent.counters.cancelled == 1)
    view = (await job_views(nc.jetstream(), streams))["j1"]
    assert view.status == "cancelled" and view.cancel_requested


async def test_a_job_cancelled_while_queued_never_starts(streams, nc, start_worker, outcomes):
    js = nc.jetstream()
    await submit(js, streams, job(1))
    await submit(js, streams, job(2))
    await cancel(nc, streams, "j1")  # no worker around: only the stored event remembers it
    backend = Watchful()
    await start_worker(backend=backend)
    await outcomes.wait_terminal("j1", "j2")
    assert outcomes.said("j1") == ["cancel_requested", "cancelled"]
    assert len(outcomes.claims("j1")) == 1  # taken, then skipped: the claim is on `cancelled`
    assert outcomes.terminal("j2")[0].type == "jetgrid.job.completed"
    assert backend.started == ["j2"]


async def test_a_cancel_that_arrives_while_the_job_waits_its_turn(
    streams, nc, start_worker, outcomes
) -> None:
    backend = Watchful()
    await start_worker(backend=backend)  # concurrency 1
    js = nc.jetstream()
    await submit(js, streams, job(1, prompt=None, input={"sleep": 0.5}))
    await outcomes.wait_for(lambda: "started" in outcomes.names("j1"))
    await submit(js, streams, job(2))
    await cancel(nc, streams, "j2")
    await outcomes.wait_terminal("j1", "j2")
    assert outcomes.terminal("j2")[0].type == "jetgrid.job.cancelled"
    assert backend.started == ["j1"]


async def test_only_a_job_the_listener_may_have_missed_is_looked_up(
    streams, nc, start_worker, outcomes
) -> None:
    js = nc.jetstream()
    await submit(js, streams, job(1))
    await cancel(nc, streams, "j1")  # before any worker listened: only the stored event knows
    agent = await start_worker(backend=Watchful())
    # judged by the server's clock, taken when the listener went live (one server here: no
    # margin; the default allows two cluster nodes' clocks 0.25 s apart)
    assert agent.cancels.heard_since_server is not None
    agent.cancels.server_margin_s = 0.0
    await outcomes.wait_terminal("j1")
    assert outcomes.terminal("j1")[0].type == "jetgrid.job.cancelled"
    assert agent.counters.cancel_lookups == 1
    # Submitted while the listener was live: any request for it is heard, no lookup.
    await submit(js, streams, job(2))
    await submit(js, streams, job(3, prompt=None, input={"sleep": 2}))
    await cancel(nc, streams, "j3")  # heard before it starts, or while it runs
    await outcomes.wait_terminal("j2", "j3")
    assert outcomes.terminal("j2")[0].type == "jetgrid.job.completed"
    assert outcomes.terminal("j3")[0].type == "jetgrid.job.cancelled"
    assert agent.counters.cancel_lookups == 1


async def test_a_cancel_placed_before_its_job_existed_cancels_nothing(
    streams, nc, start_worker, outcomes
) -> None:
    """A client may request a cancel for any id, also for the `seq-<N>` a later bare job will
    derive; that request is not about the job, stored (looked up) or heard live."""
    js = nc.jetstream()
    model = job(1)
    subject = streams.subjects.submit(model.pool, model.model)
    bare = json.dumps({"model": model.model, "prompt": "mine"}).encode()

    async def next_derived_id() -> str:
        return f"seq-{(await js.stream_info(streams.streams.jobs)).state.last_seq + 1}"

    stored_early = await next_derived_id()
    await cancel(nc, streams, stored_early, "placed in advance")
    assert (await js.publish(subject, bare)).seq == int(stored_early.removeprefix("seq-"))
    agent = await start_worker(backend=Watchful())  # a backlog: only the lookup can find it
    agent.cancels.server_margin_s = 0.0  # one server here (the default allows 0.25 s of skew)
    agent.cancels.clock_margin_s = 0.0  # one clock here (the default allows 2 s of skew)
    await outcomes.wait_terminal(stored_early)
    assert agent.counters.cancel_lookups == 1  # submitted before the listener was live

    heard_early = await next_derived_id()
    await cancel(nc, streams, heard_early, "placed in advance")  # heard live by the listener
    await until(lambda: agent.cancels.reason(heard_early) is not None, timeout=5)
    await js.publish(subject, bare)
    await outcomes.wait_terminal(heard_early)
    for victim in (stored_early, heard_early):
        assert outcomes.terminal(victim)[0].type == "jetgrid.job.completed", victim


async def test_bad_cancel_messages_do_not_stop_the_listener(
    streams, nc, start_worker, outcomes
) -> None:
    await start_worker(backend=Watchful())
    js = nc.jetstream()
    subject = streams.subjects.job_event("j1", "cancel_requested")
    await submit(js, streams, job(1, prompt=None, input={"sleep": 30}))
    await outcomes.wait_for(lambda: "started" in outcomes.names("j1"))
    for junk in (b"\xff", b"{}", b"[]", json.dumps({"job_id": "j1"}).encode()):
        await nc.publish(subject, junk)
    other = encode(JobCancelRequested(job_id="j9"), source="t")
    await nc.publish(subject, other)  # a valid request, but for another job
    await nc.flush()
    await cancel(nc, streams, "j1")
    await outcomes.wait_terminal("j1")
    assert outcomes.terminal("j1")[0].type == "jetgrid.job.cancelled"


async def test_jetgrid_cancel_command(streams, nc, start_worker, outcomes) -> None:
    await start_worker()
    await submit(nc.jetstream(), streams, job(1, prompt=None, input={"sleep": 30}))
    await outcomes.wait_for(lambda: "started" in outcomes.names("j1"))
    proc = await asyncio.create_subprocess_exec(
        JETGRID, "cancel", "j1", "--reason", "from the shell", "--wait", "20",
        env=worker_env(streams), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out
    lines = [json.loads(x) for x in out.decode().splitlines()]
    assert lines[0]["cancel_requested"] is True and lines[-1]["status"] == "cancelled"
    requested = [e for e in outcomes.events["j1"] if e.type.endswith("cancel_requested")]
    assert requested[0].event.reason == "from the shell"


async def test_a_backlog_starts_high_then_normal_then_low(
    streams, nc, start_worker, outcomes
) -> None:
    js = nc.jetstream()
    order = ["low", "normal", "high"] * 4
    for i, p in enumerate(order):
        await submit(js, streams, job(i, priority=p))
    backend = Watchful()
    await start_worker(backend=backend)  # one slot: the backlog drains in start order
    ids = [f"j{i}" for i in range(len(order))]
    await outcomes.wait_terminal(*ids)
    started = [order[int(j[1:])] for j in backend.started]
    assert started == ["high"] * 4 + ["normal"] * 4 + ["low"] * 4
    # within a priority, submission order holds
    assert [j for j in backend.started if order[int(j[1:])] == "low"] == ["j0", "j3", "j6", "j9"]


async def test_priority_jobs_reach_an_idle_pool(streams, nc, start_worker, outcomes):
    await start_worker()
    js = nc.jetstream()
    for i, p in enumerate(("high", "low", "normal")):
        await submit(js, streams, job(i, priority=p))
    await outcomes.wait_terminal("j0", "j1", "j2")
    assert all(outcomes.terminal(j)[0].type == "jetgrid.job.completed" for j in ("j0", "j1"))


async def test_sigterm_drains_a_worker_process(streams, nc, outcomes, tmp_path, procs):
    s = streams.replace(pools_file=write_pools(tmp_path / "p.toml", ack_wait_s=1.0))
    js = nc.jetstream()
    seen: list[str] = []

    async def on_worker_event(msg) -> None:  # type: ignore[no-untyped-def]
        seen.append(msg.subject.rsplit(".", 1)[-1])

    await nc.subscribe(s.subjects.worker_events("drainee"), cb=on_worker_event)
    # two slots: while one job runs, a long poll is open for the other when draining begins
    worker = await spawn_worker(s, "drainee", "--drain-grace", "20", "--concurrency", "2")
    procs.append(worker)
    await until(lambda: "registered" in seen, timeout=30)
    await submit(js, s, job(1, prompt=None, input={"sleep": 1.5}))
    await outcomes.wait_for(lambda: "started" in outcomes.names("j1"))
    worker.send_signal(signal.SIGTERM)
    await until(lambda: "draining" in seen)
    await submit(js, s, job(2))  # after draining began: not for this worker
    out, _ = await asyncio.wait_for(worker.communicate(), 30)
    assert worker.returncode == 0, out
    assert outcomes.terminal("j1")[0].event.worker_id == "drainee"
    assert outcomes.terminal("j1")[0].type == "jetgrid.job.completed"
    assert not outcomes.events["j2"]  # never claimed
    assert seen.index("draining") < seen.index("deregistered")
    assert b"completed=1" in out


async def test_a_drain_past_its_grace_hands_the_job_back(
    streams, nc, start_worker, outcomes, tmp_path, procs
) -> None:
    s = streams.replace(pools_file=write_pools(tmp_path / "p.toml", ack_wait_s=30.0))
    worker = await spawn_worker(s, "hasty", "--drain-grace", "0.5")
    procs.append(worker)
    await submit(nc.jetstream(), s, job(1, prompt=None, input={"sleep": 3}))
    await outcomes.wait_for(lambda: "started" in outcomes.names("j1"), timeout=30)
    worker.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(worker.communicate(), 30)
    assert worker.returncode == 0, out
    # handed back with a nak, so it is redelivered at once (not after the 30 s AckWait)
    await start_worker(settings=s, worker_id="heir")
    await outcomes.wait_terminal("j1", timeout=20)
    done = outcomes.terminal("j1")[0].event
    assert (done.worker_id, done.attempt) == ("heir", 2)


async def test_the_gateway_submits_on_the_priority_subject(gateway, start_worker) -> None:
    import httpx

    await start_worker()
    async with httpx.AsyncClient(base_url=gateway) as http:
        r = await http.post(
            "/v1/jobs?wait=10", json={"model": "echo", "prompt": "hi", "priority": "high"}
        )
    assert r.status_code == 200 and r.json()["status"] == "completed"
    assert r.json()["subject"].endswith(".jobs.standard.echo.high")
    assert r.json()["priority"] == "high"


def test_the_subject_command_prints_priority_subjects() -> None:
    from click.testing import CliRunner

    from jetgrid.cli import main

    args = ["subject", "--pool", "fast", "--model", "m", "--priority", "low"]
    assert CliRunner().invoke(main, args).output.strip() == "jetgrid.jobs.fast.m.low"
