"""The one subject and Nats-Msg-Id rule, for every event type in the catalogue."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jetgrid.events import (
    EVENT_TYPES,
    Event,
    InvalidMessage,
    JobCancelled,
    JobCancelRequested,
    JobClaimed,
    JobCompleted,
    JobDead,
    JobExpired,
    JobFailed,
    JobProgress,
    JobRejected,
    JobRetrying,
    JobStarted,
    JobSubmitted,
    Subjects,
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
    WorkerRollup,
)
from jetgrid.events.addressing import Address, Speaker, address, event_name, message_id

S = Subjects("jg")
W1 = Speaker.worker("w1", "boot1")
GATEWAY = Speaker.service("gateway")

# (event, speaker, subject, msg id); None: a fresh random id.
ROWS: list[tuple[Event, Speaker, str, str | None]] = [
    (JobSubmitted(job_id="j1", model="llama3.2:1b", pool="fast", prompt="hi"), GATEWAY,
     "jg.jobs.fast.llama3_2E2_3A1b", "j1"),
    (JobSubmitted(job_id="j2", model="m", pool="fast", prompt="hi", priority="high"), GATEWAY,
     "jg.jobs.fast.m.high", "j2"),
    (JobClaimed(job_id="j1", worker_id="w1", attempt=2, jobs_seq=7), W1,
     "jg.job.j1.claimed.w1", "j1:claimed:2"),
    (JobStarted(job_id="j1", worker_id="w1", attempt=2, jobs_seq=7), W1, "jg.job.j1.started.w1",
     "j1:started:2"),
    (JobRetrying(job_id="j1", worker_id="w1", attempt=3, reason="x", delay_s=1), W1,
     "jg.job.j1.retrying.w1", "j1:retrying:3"),
    (JobProgress(job_id="j1", worker_id="w1", attempt=1, fraction=0.5), W1,
     "jg.job.j1.progress.w1", None),
    (JobCompleted(job_id="j1", worker_id="w1", attempt=1, output={}, duration_s=0.1), W1,
     "jg.job.j1.completed.w1", "j1:terminal"),
    (JobFailed(job_id="j1", reason="bad"), W1, "jg.job.j1.failed.w1", "j1:terminal"),
    (JobCancelled(job_id="j1"), W1, "jg.job.j1.cancelled.w1", "j1:terminal"),
    (JobDead(job_id="j1", attempts=5, jobs_seq=3), Speaker.service("deadletter"),
     "jg.job.j1.dead", "j1:terminal"),
    (JobRejected(job_id="j1", jobs_seq=4, reason="bad", worker_id="w1"), W1,
     "jg.job.j1.rejected.w1", "j1:rejected:4"),
    (JobExpired(job_id="j1", deadline=datetime(2026, 1, 1, tzinfo=UTC), reason="late",
                worker_id="w1", attempt=1), W1, "jg.job.j1.expired.w1", "j1:terminal"),
    (JobExpired(job_id="j1", deadline=datetime(2026, 1, 1, tzinfo=UTC), reason="late"),
     GATEWAY, "jg.job.j1.expired", "j1:terminal"),
    (JobCancelRequested(job_id="j1", requested_by="cli"), Speaker.service("cli"),
     "jg.job.j1.cancel_requested", "j1:cancel_requested"),
    (WorkerRegistered(worker_id="w1", pools=["fast"], models=["m"], backend="echo",
                      concurrency=1, heartbeat_interval_s=5, boot_id="boot1"), W1,
     "jg.worker.w1.registered", "w1:boot1:registered"),
    (WorkerHeartbeat(worker_id="w1", n=42, healthy=True, interval_s=5, in_flight=0,
                     boot_id="boot1"), W1, "jg.worker.w1.heartbeat", "w1:boot1:hb:42"),
    (WorkerDraining(worker_id="w1"), W1, "jg.worker.w1.draining", "w1:boot1:draining"),
    (WorkerDeregistered(worker_id="w1"), W1, "jg.worker.w1.deregistered",
     "w1:boot1:deregistered"),
    (WorkerRollup(worker_id="w1", hour=7200, interval_s=5, origin=1.5, first_slot=0, lo=0,
                  top=719, bits="", healthy_slots=720, total_slots=720, tier="gold"),
     Speaker.service("projector"), "jg.rollup.w1", "w1:rollup:7200"),
    (InvalidMessage.of(b"x", stream="JOBS", subject="jg.jobs.fast.m", seq=9, reason="r"),
     Speaker.service("projector"), "jg.invalid.JOBS", "invalid:JOBS:9"),
    (InvalidMessage.of(b"x", stream="JOBS", subject="jg.jobs.fast.m", reason="r"),
     Speaker.service("projector"), "jg.invalid.JOBS", None),
]  # fmt: skip


@pytest.mark.parametrize(("event", "speaker", "subject", "msg_id"), ROWS)
def test_every_event_has_one_subject_and_id(
    event: Event, speaker: Speaker, subject: str, msg_id: str | None
) -> None:
    got = address(event, S, speaker)
    assert got.subject == subject
    if msg_id is None:
        assert len(got.msg_id) == 32 and got.msg_id != message_id(event, speaker)
    else:
        assert got == Address(subject, msg_id)


def test_the_table_covers_the_whole_catalogue() -> None:
    # JobClaimed is retired (old logs only: it decodes as a JobStarted) but keeps its address.
    assert {type(row[0]) for row in ROWS} == set(EVENT_TYPES) | {JobClaimed}


def test_a_worker_says_job_events_under_its_id_and_a_service_without() -> None:
    done = JobFailed(job_id="j1", reason="bad")
    assert address(done, S, W1).subject == "jg.job.j1.failed.w1"
    assert address(done, S, GATEWAY).subject == "jg.job.j1.failed"
    watcher_in_w1 = Speaker("jetgrid/worker/w1/deadletter", "w1")
    assert address(JobDead(job_id="j1", attempts=2, jobs_seq=1), S, watcher_in_w1).subject == (
        "jg.job.j1.dead.w1"
    )


def test_speakers_name_their_source() -> None:
    assert W1.source == "jetgrid/worker/w1" and GATEWAY.source == "jetgrid/gateway"
    assert event_name(JobCancelRequested(job_id="j1")) == "cancel_requested"
