"""Deadlines as plain data: the deadline of a job, when a start is late, when a sweep expires it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jetgrid.coordinator.deadlines import (
    SWEEP_GRACE_S,
    deadline_of,
    expired_event,
    late_start,
    sweep_due,
)
from jetgrid.events import MAX_CLAIM_DELAY_S, JobSubmitted

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(**fields: object) -> JobSubmitted:
    return JobSubmitted(job_id="j", model="m", pool="p", prompt="x", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "deadline"),
    [
        ({}, None),
        ({"ttl_s": 30}, s(30)),
        ({"start_by": s(10)}, s(10)),
        ({"start_by": s(10), "ttl_s": 30}, s(10)),  # the earlier of the two
        ({"start_by": s(60), "ttl_s": 30}, s(30)),
        ({"ttl_s": 0.25}, s(0.25)),
    ],
)
def test_the_deadline_is_the_earlier_of_start_by_and_ttl(
    fields: dict[str, object], deadline: datetime | None
) -> None:
    assert deadline_of(job(**fields), T0) == deadline


def test_start_by_with_another_offset_is_the_same_instant() -> None:
    from datetime import timezone

    paris = T0.astimezone(timezone(timedelta(hours=1))) + timedelta(seconds=5)
    assert deadline_of(job(start_by=paris, ttl_s=10), T0) == s(5)


@pytest.mark.parametrize("bad", [{"ttl_s": 0}, {"ttl_s": -1}, {"start_by": "2026-12-05T12:00:00"}])
def test_a_ttl_must_be_positive_and_start_by_must_name_its_offset(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        job(**bad)


@pytest.mark.parametrize(
    ("deadline", "now", "late"),
    [(None, s(999), False), (s(10), s(9), False), (s(10), s(10), False), (s(10), s(10.001), True)],
)
def test_a_start_is_late_only_after_the_deadline(
    deadline: datetime | None, now: datetime, late: bool
) -> None:
    assert late_start(deadline, now) is late


@pytest.mark.parametrize(
    ("now", "due"),
    [
        (s(9), False),
        (s(10), False),
        (s(10 + SWEEP_GRACE_S), False),
        (s(10.01 + SWEEP_GRACE_S), True),
    ],
)
def test_a_sweep_expires_a_queued_job_only_after_the_grace(now: datetime, due: bool) -> None:
    assert sweep_due(s(10), now) is due
    assert sweep_due(None, now) is False
    assert sweep_due(s(10), now, grace_s=0) is (now > s(10))


def test_the_expired_event_names_the_deadline_and_how_late() -> None:
    ev = expired_event("j", s(10), s(12.5), worker_id="w1", attempt=2)
    assert (ev.job_id, ev.deadline, ev.worker_id, ev.attempt) == ("j", s(10), "w1", 2)
    assert ev.reason == (
        "no worker started it by its deadline 2026-12-05T12:00:10+00:00 (checked 2.500 s after it)"
    )


def test_the_sweep_grace_outlasts_the_longest_unsaid_claim() -> None:
    # A worker says `started` at most MAX_CLAIM_DELAY_S after taking a job: a gateway must not
    # expire a job that a worker holds but has not said yet.
    assert SWEEP_GRACE_S > MAX_CLAIM_DELAY_S
