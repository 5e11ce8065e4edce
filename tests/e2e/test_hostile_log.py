"""No message stops a consumer: hostile messages in every stream, between valid events, on a
real nats-server. Workers (echo backend), the projector, replay, audit, the gateway's folds and
a dead-letter watcher all reach the end of the log; every valid job completes; the read models
equal those of the log without the hostile messages; what cannot be used is recorded once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jetgrid.events import JOB_EVENTS, JOBS, WORKERS
from tests.e2e.hostile import DEEP, run_consumers
from tests.helpers import job, submit

pytestmark = pytest.mark.integration


async def test_a_deeply_nested_message_in_every_stream_stops_no_consumer(
    streams: Any, nc: Any, bus: Any, start_worker: Any, outcomes: Any, tmp_path: Path
) -> None:
    s = streams
    js = nc.jetstream()
    await start_worker(concurrency=2)
    hostile: dict[str, set[int]] = {JOBS: set(), JOB_EVENTS: set(), WORKERS: set()}
    await submit(js, s, job(1))
    # 2 KB nested 1,000 deep on the echo subject: the worker pulls it
    hostile[JOBS].add((await js.publish(s.subjects.submit("standard", "echo"), DEEP)).seq)
    # a model token that no model name encodes to (`_65cho` for `echo`): no worker pulls it
    bad_token = "jetgrid.jobs.standard._65cho".replace("jetgrid", s.subjects.prefix, 1)
    body = b'{"model": "echo", "prompt": "x"}'
    hostile[JOBS].add((await js.publish(bad_token, body)).seq)
    hostile[WORKERS].add((await js.publish(s.subjects.worker_event("w9", "heartbeat"), DEEP)).seq)
    hostile[JOB_EVENTS].add(
        (await js.publish(s.subjects.job_event("j1", "completed", "w1"), DEEP)).seq
    )
    await submit(js, s, job(2))
    await outcomes.wait_terminal("j1", "j2", timeout=30)
    assert [outcomes.terminal(j)[0].type for j in ("j1", "j2")] == ["jetgrid.job.completed"] * 2

    got = await run_consumers(s, nc, bus, tmp_path, hostile, ["j1", "j2"])
    assert all(got.consumers.values()), got.consumers
    for stream, seqs in hostile.items():
        assert seqs <= got.recorded.get(stream, set()), (stream, got.recorded)
