"""The worker against a real nats-server: jobs in, lifecycle events out, bad input recorded."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.js.errors import NotFoundError

from jetgrid.events import InvalidMessage, JobSubmitted, decode
from jetgrid.worker.backends import EchoBackend, Result, RunContext, expected_output
from tests.helpers import job, submit

pytestmark = pytest.mark.integration


async def test_a_job_runs_and_reports_its_lifecycle(streams, nc, start_worker, outcomes) -> None:
    await start_worker()
    j = job(1)
    seq = await submit(nc, streams, j)
    await outcomes.wait_terminal("j1")
    assert outcomes.said("j1") == ["completed"]
    [claim] = outcomes.claims("j1")
    assert (claim.worker_id, claim.attempt, claim.jobs_seq) == ("w1", 1, seq)
    done = outcomes.terminal("j1")[0]
    assert done.event.output == expected_output(j)
    assert done.id == "j1:terminal"


async def test_acks_only_after_the_terminal_event_is_stored(streams, nc, start_worker, outcomes):
    await start_worker()
    await submit(nc, streams, job(1))
    await outcomes.wait_terminal("j1")
    js = nc.jetstream()

    async def stored() -> bytes:
        while True:
            try:
                msg = await js.get_last_msg(
                    streams.streams.job_events,
                    streams.subjects.job_event("j1", "completed", "w1"),
                )
                return msg.data
            except NotFoundError:  # core NATS can show it a moment before the stream has it
                await asyncio.sleep(0.02)

    assert decode(await asyncio.wait_for(stored(), 5)).event.job_id == "j1"

    async def acked() -> None:
        while True:
            info = await js.consumer_info(streams.streams.jobs, "pool-standard-echo")
            if info.num_ack_pending == 0 and info.ack_floor.stream_seq == 1:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(acked(), 5)


async def test_bare_nats_submission_completes_under_its_derived_id(
    streams, nc, start_worker, outcomes
):
    await start_worker()
    ack = await nc.jetstream().publish(
        streams.subjects.submit("standard", "echo"), b'{"model": "echo", "prompt": "plain"}'
    )
    job_id = f"seq-{ack.seq}"
    await outcomes.wait_terminal(job_id)
    assert outcomes.terminal(job_id)[0].event.output["response"] == "plain"


async def test_bad_messages_are_recorded_and_valid_jobs_around_them_complete(
    streams, nc, start_worker, outcomes
) -> None:
    js = nc.jetstream()
    await start_worker(concurrency=2)
    subject = streams.subjects.submit("standard", "echo")
    bad = [b"\xff\x00 not json", b'{"model": "echo"}', b'{"model": "other", "prompt": "x"}',
           b'[1, 2, 3]', b'{"model": "echo", "prompt": 7}']  # fmt: skip
    good = []
    for i, raw in enumerate(bad):
        await submit(nc, streams, job(f"a{i}"))
        await js.publish(subject, raw)
        good.append(f"ja{i}")
    await submit(nc, streams, job("last"))
    good.append("jlast")
    await outcomes.wait_terminal(*good)
    assert all(outcomes.terminal(j)[0].type == "jetgrid.job.completed" for j in good)

    inv = await js.pull_subscribe(streams.subjects.invalid("JOBS"), stream=streams.streams.invalid)
    records: list[InvalidMessage] = []
    while len(records) < len(bad):
        records += [decode(m.data).event for m in await inv.fetch(len(bad), timeout=5)]
    assert sorted(r.original for r in records) == sorted(bad)
    by_original = {r.original: r.reason for r in records}
    assert "not JSON" in by_original[bad[0]]
    assert "prompt" in by_original[bad[1]]
    assert "does not match" in by_original[bad[2]]
    assert "field 'prompt'" in by_original[bad[4]]
    assert all(r.stream == "JOBS" and r.seq for r in records)

    # terminated, so never redelivered: nothing is left pending on the consumer
    info = await js.consumer_info(streams.streams.jobs, "pool-standard-echo")
    assert info.num_pending == 0
    await asyncio.sleep(0.2)
    assert (await js.consumer_info(streams.streams.jobs, "pool-standard-echo")).num_ack_pending == 0


async def test_two_workers_share_one_consumer_and_each_job_runs_once(
    streams, nc, start_worker, outcomes
) -> None:
    a = await start_worker(worker_id="wa", concurrency=2)
    b = await start_worker(worker_id="wb", concurrency=2)
    ids = [f"j{i}" for i in range(60)]
    for i in range(60):
        await submit(nc, streams, job(i))
    await outcomes.wait_terminal(*ids, timeout=30)
    claims = [c for j in ids for c in outcomes.claims(j)]
    assert len(claims) == 60
    by_worker = {w: sum(1 for c in claims if c.worker_id == w) for w in ("wa", "wb")}
    assert by_worker["wa"] > 0 and by_worker["wb"] > 0, by_worker
    # counters move after the ack, a moment after the terminal event is visible
    for _ in range(400):
        if a.counters.completed + b.counters.completed == 60:
            break
        await asyncio.sleep(0.05)
    assert a.counters.completed + b.counters.completed == 60
    ci = await nc.jetstream().consumer_info(streams.streams.jobs, "pool-standard-echo")
    assert ci.num_pending == 0


class Gauge(EchoBackend):
    """Echo that records the most jobs it ever ran at once."""

    def __init__(self) -> None:
        super().__init__(latency_s=0.05)
        self.now = 0
        self.peak = 0

    async def run(self, job: JobSubmitted, ctx: RunContext) -> Result:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            return await super().run(job, ctx)
        finally:
            self.now -= 1


async def test_at_most_concurrency_jobs_in_flight(streams, nc, start_worker, outcomes) -> None:
    gauge = Gauge()
    await start_worker(concurrency=3, backend=gauge)
    ids = [f"j{i}" for i in range(30)]
    for i in range(30):
        await submit(nc, streams, job(i))
    await outcomes.wait_terminal(*ids, timeout=30)
    assert gauge.peak == 3


async def test_one_worker_serves_several_models(streams, nc, start_worker, outcomes) -> None:
    await start_worker("echo", "llama3.2:1b", concurrency=2)
    await submit(nc, streams, job("e"))
    await submit(nc, streams, job("l", model="llama3.2:1b"))
    await outcomes.wait_terminal("je", "jl")
    assert outcomes.terminal("jl")[0].event.output == expected_output(job("l", model="llama3.2:1b"))


async def test_permanent_failure_fails_at_once(streams, nc, start_worker, outcomes) -> None:
    await start_worker()
    await submit(nc, streams, job(1, prompt=None, input={"fail": "permanent"}))
    await outcomes.wait_terminal("j1")
    assert outcomes.said("j1") == ["failed"] and len(outcomes.claims("j1")) == 1
    failed = outcomes.terminal("j1")[0].event
    assert failed.error_type == "bad_input" and "permanently" in failed.reason


async def test_transient_failure_is_retried_with_the_pools_backoff(
    streams, nc, start_worker, outcomes, tmp_path
) -> None:
    pools = tmp_path / "pools.toml"
    pools.write_text('[[pool]]\nname = "standard"\nbackoff_s = [0.1, 0.2]\n')
    await start_worker(settings=streams.replace(pools_file=pools))
    await submit(nc, streams, job(1, prompt=None, input={"fail": "transient"}))
    await outcomes.wait_for(lambda: outcomes.names("j1").count("retrying") >= 2)
    retries = [e.event for e in outcomes.events["j1"] if e.type == "jetgrid.job.retrying"]
    assert [r.attempt for r in retries[:2]] == [1, 2]
    assert [r.delay_s for r in retries[:2]] == [0.1, 0.2]
    assert not outcomes.terminal("j1")


async def test_burst_mode_exits_when_the_pool_is_empty(streams, nc, start_worker, outcomes):
    for i in range(5):
        await submit(nc, streams, job(i))
    agent = await start_worker(burst=True, concurrency=2)
    await outcomes.wait_terminal(*[f"j{i}" for i in range(5)])
    for _ in range(100):
        if (
            agent.counters.completed == 5
            and agent.stopping is False
            and agent.bus
            and agent.bus.nc.is_closed
        ):
            break
        await asyncio.sleep(0.1)
    assert agent.bus is not None and agent.bus.nc.is_closed
    assert "completed=5" in repr(agent)


async def test_registration_heartbeats_and_deregistration_are_events(streams, nc, start_worker):
    js = nc.jetstream()
    agent = await start_worker(worker_id="wh")
    sub = await js.subscribe(streams.subjects.worker_events("wh"), stream=streams.streams.workers)
    seen: list[str] = []
    while seen.count("heartbeat") < 2:
        m = await sub.next_msg(timeout=5)
        seen.append(m.subject.rsplit(".", 1)[-1])
    assert seen[0] == "registered"
    agent.stop()
    while "deregistered" not in seen:
        m = await sub.next_msg(timeout=10)
        seen.append(m.subject.rsplit(".", 1)[-1])
    assert seen[-2:] == ["draining", "deregistered"] or seen.index("draining") < seen.index(
        "deregistered"
    )
    ping = json.loads(
        (
            await js.get_last_msg(
                streams.streams.workers, streams.subjects.worker_event("wh", "heartbeat")
            )
        ).data
    )
    assert ping["data"]["worker_id"] == "wh" and ping["data"]["healthy"] is True


async def test_tokens_stream_on_core_nats_while_the_job_runs(streams, nc, start_worker, outcomes):
    await start_worker(backend=EchoBackend(token_delay_s=0.01))
    chunks: list[dict[str, object]] = []

    async def on_token(msg) -> None:  # type: ignore[no-untyped-def]
        assert streams.subjects.parse_tokens(msg.subject) == ("j1", "w1")  # under its own id
        chunks.append(json.loads(msg.data))

    await nc.subscribe(streams.subjects.token_streams("j1"), cb=on_token)
    await submit(nc, streams, job(1, prompt="one two three four"))
    await outcomes.wait_terminal("j1")
    assert [c["i"] for c in chunks] == list(range(len(chunks)))  # in order, coalesced
    assert {c["attempt"] for c in chunks} == {1}
    assert 1 <= len(chunks) <= 4
    assert "".join(str(c["text"]) for c in chunks) == "one two three four"
    assert outcomes.terminal("j1")[0].event.output["response"] == "one two three four"
