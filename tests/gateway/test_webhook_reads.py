"""The webhook service reads a job's submission back from JOBS only for jobs its tail of JOBS
did not see: a job submitted while it runs costs no read, with or without a webhook, and one
submitted before it started is still read back and delivered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import provision_batches
from jetgrid.coordinator.roles import WEBHOOK_CONSUMER
from jetgrid.coordinator.settings import Settings
from jetgrid.events import JobSubmitted
from jetgrid.events.addressing import Speaker
from jetgrid.webhooks import PLAIN, TWICE, SubmissionTail
from tests.gateway.test_webhooks import SECRET, Receiver, hook_settings, receiving, webhook_service
from tests.helpers import job, until

pytestmark = pytest.mark.integration


async def _all_handled(bus: Bus, settings: Settings, n: int) -> None:
    """Until the webhook consumer has acked `n` terminal events and holds none."""

    async def done() -> bool:
        info = await bus.consumer_info(settings.streams.job_events, WEBHOOK_CONSUMER)
        return (
            info.ack_floor.stream_seq > 0
            and info.num_ack_pending == 0
            and (info.num_pending == 0 and info.delivered.consumer_seq >= n)
        )

    await until(done, timeout=30)


async def test_jobs_seen_by_the_tail_are_not_read_back_and_others_are(
    streams: Settings, bus: Bus, start_worker: Callable[..., Awaitable[Any]]
) -> None:
    settings = hook_settings(streams, webhook_secret=SECRET)
    receiver = Receiver(SECRET)
    speaker = Speaker.service("test")
    await start_worker(concurrency=4)
    async with receiving(receiver):
        await provision_batches(bus.js, settings)  # the webhook consumer holds its outcome
        early = job("early", webhook=f"{receiver.url}/early")
        await bus.store(early, speaker)  # before the service: its tail cannot see it
        async with webhook_service(settings) as service:
            plain = [job(i) for i in range(5)]
            hooked = job("late", webhook=f"{receiver.url}/late")
            for j in [*plain, hooked]:
                await bus.store(j, speaker)
            await until(lambda: {"/early", "/late"} <= receiver.got.keys(), timeout=30)
            await _all_handled(bus, settings, 7)
            read_back = service.read_back
    assert read_back == 1  # only the job submitted before the service started
    for path, job_id in (("/early", early.job_id), ("/late", hooked.job_id)):
        ((headers, _, ok),) = receiver.got[path]  # delivered once, signed
        assert ok and headers["webhook-id"] == f"job_{job_id}"


def test_the_tail_keeps_only_what_a_terminal_event_needs() -> None:
    tail = SubmissionTail(Settings(), None, limit=3)  # type: ignore[arg-type]
    hooked = job("h", webhook="https://hooks.example.com/x", prompt="a long prompt")
    tail.add(hooked)
    tail.add(plain := job("p"))
    kept = tail.take(hooked.job_id)
    assert isinstance(kept, JobSubmitted) and kept.webhook == hooked.webhook
    assert kept.prompt is None and kept.model == hooked.model  # not the work itself
    assert tail.take(hooked.job_id) is None  # taken once
    assert tail.take(plain.job_id) == PLAIN
    twice = job("t")
    tail.add(twice)
    tail.add(twice)
    assert tail.take(twice.job_id) == TWICE  # which one ended? read it back
    for i in range(4):
        tail.add(job(i))
    assert len(tail.jobs) == 3  # the oldest are forgotten (and then read back)
