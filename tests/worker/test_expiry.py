"""A worker never starts a job past its deadline: it says `expired` and acks it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from jetgrid.events import now
from tests.helpers import job, submit, until

pytestmark = pytest.mark.integration


async def test_a_job_taken_past_its_start_by_expires_without_running(
    streams, nc, start_worker, outcomes
) -> None:
    past = now() - timedelta(seconds=30)
    seq1 = await submit(nc, streams, job(1, start_by=past))
    await submit(nc, streams, job(2, start_by=now() + timedelta(hours=1)))
    await start_worker()
    await outcomes.wait_for(lambda: "expired" in outcomes.names("j1"))
    await outcomes.wait_terminal("j2")
    assert outcomes.names("j1") == ["expired"]  # never started
    assert outcomes.said("j2") == ["completed"]
    assert [c.worker_id for c in outcomes.claims("j2")] == ["w1"]
    (ev,) = outcomes.events["j1"]
    assert (ev.event.worker_id, ev.event.attempt, ev.event.deadline) == ("w1", 1, past)
    assert ev.event.jobs_seq == seq1  # what reads the submission back from it (webhooks) needs
    assert ev.id == "j1:terminal"

    async def settled() -> bool:  # both acked: neither is redelivered
        info = await nc.jetstream().consumer_info(streams.streams.jobs, "pool-standard-echo")
        return info.num_ack_pending == 0 and info.num_pending == 0 and info.num_redelivered == 0

    await until(settled)


async def test_a_bare_nats_job_with_a_ttl_expires_from_its_stream_time(
    streams, nc, start_worker, outcomes
) -> None:
    # The payload a `nats pub` sends: no id, no time; the deadline counts from the stream time.
    subject = streams.subjects.submit("standard", "echo")
    body = json.dumps({"model": "echo", "prompt": "hi", "ttl_s": 0.001}).encode()
    ack = await nc.jetstream().publish(subject, body)
    job_id = f"seq-{ack.seq}"
    await start_worker()
    await outcomes.wait_for(lambda: bool(outcomes.names(job_id)))
    assert outcomes.names(job_id) == ["expired"]


def test_jetgrid_submit_names_a_start_by_without_an_offset() -> None:
    from click.testing import CliRunner

    from jetgrid.cli import main

    args = ["submit", "--model", "echo", "--prompt", "x", "--start-by", "2026-12-05T12:00:00"]
    got = CliRunner().invoke(main, [*args, "--nats-url", "nats://127.0.0.1:1"])
    assert got.exit_code == 2 and "--start-by" in got.output and "timezone" in got.output
