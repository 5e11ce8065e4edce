"""The delivery rules, as tables: retries, timeouts, pull sweeps, advisories, cancel requests."""

from __future__ import annotations

import json

import pytest

from jetgrid.coordinator.consumers import consumer_name, pool_consumer
from jetgrid.coordinator.delivery import (
    GiveUp,
    MaxDeliveries,
    Pull,
    Retry,
    after_transient,
    cancel_heard_live,
    cancel_is_for,
    consumer_max_deliver,
    dead_reason,
    is_recording_delivery,
    keepalive_period,
    next_pull,
    parse_max_deliveries,
    runs_before,
)
from jetgrid.coordinator.pools import PoolConfig
from jetgrid.events import InvalidSubject, Subjects

POOL = PoolConfig("p", max_deliver=4, backoff_s=(0.5, 2.0), job_timeout_cap_s=60.0)


@pytest.mark.parametrize(
    ("attempt", "decision"),
    [(1, Retry(0.5)), (2, Retry(2.0)), (3, Retry(2.0)), (4, GiveUp()), (9, GiveUp())],
)
def test_transient_failures_back_off_then_give_up_at_max_deliver(attempt, decision) -> None:
    assert after_transient(attempt, POOL) == decision


def test_a_pool_without_backoff_retries_at_once() -> None:
    assert after_transient(1, PoolConfig("p", backoff_s=())) == Retry(0.0)


@pytest.mark.parametrize(
    ("requested", "cap", "expected"),
    [(None, 60.0, 60.0), (5.0, 60.0, 5.0), (600.0, 60.0, 60.0), (0.5, 0.2, 0.2)],
)
def test_job_timeout_is_its_own_capped_by_the_pool(requested, cap, expected) -> None:
    assert PoolConfig("p", job_timeout_cap_s=cap).timeout_for(requested) == expected


@pytest.mark.parametrize(("ack_wait", "period"), [(30.0, 10.0), (1.0, 1 / 3), (0.01, 0.05)])
def test_in_progress_acks_come_three_times_per_ack_wait(ack_wait, period) -> None:
    assert keepalive_period(ack_wait) == pytest.approx(period)


@pytest.mark.parametrize(
    ("free", "swept", "got_any", "expected"),
    [
        (0, [], False, None),
        (3, [], False, Pull("high", 3, wait=False)),
        (2, ["high"], False, Pull("normal", 2, wait=False)),
        (1, ["high", "normal"], True, Pull("low", 1, wait=False)),
        (2, ["high", "normal", "low"], False, Pull("normal", 2, wait=True)),
        (2, ["high", "normal", "low"], True, None),
        (0, ["high"], True, None),
    ],
)
def test_a_pull_sweep_asks_high_then_normal_then_low(free, swept, got_any, expected) -> None:
    assert next_pull(free, swept, got_any) == expected


def _advisory(**over: object) -> bytes:
    body = {
        "type": "io.nats.jetstream.advisory.v1.max_deliver",
        "id": "x",
        "timestamp": "2026-11-22T13:05:29.756609825Z",
        "stream": "JOBS",
        "consumer": "pool-standard-echo",
        "stream_seq": 7,
        "deliveries": 5,
    }
    body.update(over)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (_advisory(), MaxDeliveries("JOBS", "pool-standard-echo", 7, 5)),
        (_advisory(type="io.nats.jetstream.advisory.v1.terminated"), None),
        (_advisory(stream_seq=0), None),
        (_advisory(stream_seq="7"), None),
        (_advisory(deliveries=None), None),
        (_advisory(stream=None), None),
        (b"not json", None),
        (b"[1, 2]", None),
        (b"\xff\xfe", None),
    ],
)
def test_max_deliveries_advisories_are_read_strictly(raw, expected) -> None:
    assert parse_max_deliveries(raw) == expected


def test_dead_reasons() -> None:
    assert dead_reason(5) == "gave up after 5 deliveries (MaxDeliver reached)"
    assert dead_reason(3, "oom").endswith("; last error: oom")


@pytest.mark.parametrize(
    ("priority", "subject", "consumer"),
    [
        ("normal", "jetgrid.jobs.fast.llama3_2E2_3A1b", "pool-fast-llama3_2E2_3A1b"),
        ("high", "jetgrid.jobs.fast.llama3_2E2_3A1b.high", "pool-fast-llama3_2E2_3A1b_high"),
        ("low", "jetgrid.jobs.fast.llama3_2E2_3A1b.low", "pool-fast-llama3_2E2_3A1b_low"),
    ],
)
def test_each_priority_has_its_subject_and_consumer(priority, subject, consumer) -> None:
    s = Subjects()
    assert s.submit("fast", "llama3.2:1b", priority) == subject
    assert s.parse_submit_priority(subject) == ("fast", "llama3.2:1b", priority)
    assert s.parse_submit(subject) == ("fast", "llama3.2:1b")
    spec = pool_consumer(
        s, "JOBS", "fast", "llama3.2:1b", ack_wait_s=1, max_deliver=1, max_ack_pending=1,
        priority=priority,
    )  # fmt: skip
    assert (spec.name, spec.filter_subject) == (consumer, subject)
    assert consumer_name("fast", "llama3.2:1b", priority) == consumer


@pytest.mark.parametrize(
    "subject", ["jetgrid.jobs.fast.m.normal", "jetgrid.jobs.fast.m.urgent", "jetgrid.jobs.f.m.h.x"]
)
def test_only_high_and_low_are_priority_tokens(subject) -> None:
    with pytest.raises(InvalidSubject):
        Subjects().parse_submit_priority(subject)
    with pytest.raises(InvalidSubject):
        Subjects().submit("fast", "m", "urgent")


def test_the_stream_takes_every_priority_form() -> None:
    assert Subjects("jg").submission_subjects() == (
        "jg.jobs.*.*",
        "jg.jobs.*.*.high",
        "jg.jobs.*.*.low",
        "jg.jobs.*.*.*.*",
        "jg.jobs.*.*.*.*.*",
    )


def test_a_pool_consumer_allows_one_recording_delivery_after_the_last_run() -> None:
    assert consumer_max_deliver(POOL.max_deliver) == POOL.max_deliver + 1
    runs = [a for a in range(1, 7) if not is_recording_delivery(a, POOL)]
    assert runs == [1, 2, 3, 4]  # the pool's max_deliver
    assert is_recording_delivery(POOL.max_deliver + 1, POOL)
    assert isinstance(after_transient(POOL.max_deliver, POOL), GiveUp)
    # the advisory counts every delivery; the dead event counts runs
    assert runs_before(consumer_max_deliver(POOL.max_deliver)) == POOL.max_deliver
    assert runs_before(1) == 1


@pytest.mark.parametrize(
    ("submitted", "since", "heard"),
    [
        (100.0, 90.0, True),  # submitted 10 s after the listener went live
        (100.0, 98.5, False),  # within the clock margin: look it up
        (100.0, 100.0, False),
        (100.0, 120.0, False),  # submitted before (a backlog, a redelivery): look it up
        (100.0, float("inf"), False),  # the connection is down
    ],
)
def test_a_stored_cancel_is_looked_up_unless_the_listener_heard_it(submitted, since, heard) -> None:
    assert cancel_heard_live(submitted, since) is heard
    assert cancel_heard_live(100.0, 99.5, margin_s=0.0)


@pytest.mark.parametrize(
    ("requested", "submitted", "margin", "applies"),
    [
        (101.0, 100.0, 0.0, True),  # after the submission: about this job
        (100.0, 100.0, 0.0, True),
        (99.0, 100.0, 0.0, False),  # placed before the job existed
        (99.0, 100.0, 2.0, True),  # within the clock margin: taken as meant
        (97.9, 100.0, 2.0, False),
    ],
)
def test_a_cancel_made_before_the_submission_is_not_about_it(
    requested, submitted, margin, applies
) -> None:
    assert cancel_is_for(requested, submitted, margin) is applies
