"""A bare job may not take the id of a job claimed in a log written before `claimed` was folded
into `started`: the worker finds that claim under the old `claimed` subject."""

from __future__ import annotations

from typing import Any

import pytest

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobClaimed, JobStarted, decode
from jetgrid.events.addressing import Speaker

pytestmark = pytest.mark.integration


async def test_a_claim_of_an_old_log_still_holds_its_id(
    streams: Settings, nc: Any, start_worker: Any
) -> None:
    old = Speaker.worker("w0", "b0")
    bus = Bus(nc, streams)
    # The old log: JOBS seq 1 was claimed as "report" (claimed, then a `started` with no claim).
    await bus.store(JobClaimed(job_id="report", worker_id="w0", attempt=1, jobs_seq=1), old)
    await bus.store(JobStarted(job_id="report", worker_id="w0", attempt=1), old)
    first = b'{"model": "echo", "prompt": "first"}'
    await nc.jetstream().publish(streams.subjects.submit("standard", "echo"), first)  # JOBS seq 1
    rejected = await nc.subscribe(streams.subjects.job_event("report", "rejected") + ".*")
    await start_worker()
    ack = await nc.jetstream().publish(  # no Nats-Msg-Id: JetStream cannot see the clash
        streams.subjects.submit("standard", "echo"),
        b'{"model": "echo", "prompt": "evil", "id": "report"}',
    )
    refusal = decode((await rejected.next_msg(timeout=20)).data).event
    assert refusal.jobs_seq == ack.seq and "JOBS seq 1" in refusal.reason
