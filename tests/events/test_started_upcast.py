"""`claimed` folded into `started`: old logs' events upcast at decode, fed frozen fixtures (the
exact bytes a worker wrote before JobStarted version 2)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jetgrid.events import InvalidEvent, JobClaimed, JobStarted, decode, encode

T = datetime(2026, 11, 22, 12, tzinfo=UTC)

OLD_CLAIMED = (
    b'{"specversion":"1.0","id":"j1:claimed:2","source":"jetgrid/worker/w1",'
    b'"type":"jetgrid.job.claimed","time":"2026-11-22T12:00:00.000000Z",'
    b'"datacontenttype":"application/json","dataversion":1,"data":{"job_id":"j1",'
    b'"worker_id":"w1","attempt":2,"jobs_seq":7,"tier_factor":0.5,"fallback":true}}'
)
OLD_STARTED = (
    b'{"specversion":"1.0","id":"j1:started:2","source":"jetgrid/worker/w1",'
    b'"type":"jetgrid.job.started","time":"2026-11-22T12:00:00.000000Z",'
    b'"datacontenttype":"application/json","dataversion":1,"data":{"job_id":"j1",'
    b'"worker_id":"w1","attempt":2}}'
)


def test_an_old_claimed_decodes_as_the_started_that_records_the_claim() -> None:
    env = decode(OLD_CLAIMED)
    assert env.event == JobStarted(
        job_id="j1", worker_id="w1", attempt=2, jobs_seq=7, tier_factor=0.5, fallback=True
    )
    assert env.type == "jetgrid.job.started" and env.id == "j1:claimed:2" and env.time == T


def test_an_old_started_decodes_without_a_claim() -> None:
    ev = decode(OLD_STARTED).event
    assert ev == JobStarted(job_id="j1", worker_id="w1", attempt=2)
    assert ev.jobs_seq is None and ev.tier_factor is None and ev.fallback is False


def test_the_retired_model_still_writes_the_old_bytes() -> None:
    old = JobClaimed(job_id="j1", worker_id="w1", attempt=2, jobs_seq=7, tier_factor=0.5,
                     fallback=True)  # fmt: skip
    assert encode(old, source="jetgrid/worker/w1", id="j1:claimed:2", time=T) == OLD_CLAIMED


def test_a_started_of_today_is_version_2_and_round_trips() -> None:
    ev = JobStarted(job_id="j1", worker_id="w1", attempt=1, jobs_seq=3, tier_factor=1.0)
    raw = encode(ev, source="s", time=T)
    assert b'"dataversion":2' in raw
    assert decode(raw).event == ev


def test_a_version_1_started_may_not_claim() -> None:
    forged = OLD_STARTED.replace(b'"attempt":2}', b'"attempt":2,"jobs_seq":3}')
    with pytest.raises(InvalidEvent, match="cannot be upcast"):
        decode(forged)
