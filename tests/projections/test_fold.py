"""The projector's pure fold: cross-stream order independence, WORKERS message rules, ticks."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from jetgrid.events import (
    JOB_EVENTS,
    JOBS,
    WORKERS,
    JobClaimed,
    JobCompleted,
    JobDead,
    JobRejected,
    JobStarted,
    JobSubmitted,
    Subjects,
    WorkerHeartbeat,
    decode,
    encode,
)
from jetgrid.projections.fold import (
    MAX_TICKS,
    Fold,
    check_job_event_speaker,
    check_worker_message,
    ticks,
)

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SUBJ = Subjects("jg")


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def _job_messages() -> tuple[list[tuple], list[tuple]]:
    sub = JobSubmitted(job_id="j1", model="echo", pool="standard", prompt="hi")
    jobs = [
        (JOBS, 1, SUBJ.submit("standard", "echo"), encode(sub, source="t", id="j1", time=at(0)))
    ]
    events = []
    for seq, (ev, name) in enumerate(
        [
            (JobClaimed(job_id="j1", worker_id="w1", attempt=1, jobs_seq=1), "claimed"),
            (JobStarted(job_id="j1", worker_id="w1", attempt=1), "started"),
            (
                JobCompleted(job_id="j1", worker_id="w1", attempt=1, output="x", duration_s=1.0),
                "completed",
            ),
        ],
        start=1,
    ):
        events.append(
            (JOB_EVENTS, seq, SUBJ.job_event("j1", name), encode(ev, source="t", time=at(seq)))
        )
    return jobs, events


def _interleavings(a: list, b: list):
    for picks in itertools.combinations(range(len(a) + len(b)), len(a)):
        out, ia, ib = [], iter(a), iter(b)
        for i in range(len(a) + len(b)):
            out.append(next(ia) if i in picks else next(ib))
        yield out


def test_job_views_do_not_depend_on_how_jobs_and_job_events_interleave() -> None:
    jobs, events = _job_messages()
    views = []
    for order in _interleavings(jobs, events):
        fold = Fold(SUBJ)
        for stream, seq, subject, data in order:
            if stream == JOBS:
                fold.submission(seq, subject, data, at(0))
            else:
                fold.job_event(seq, subject, data)
        views.append(fold.jobs["j1"])
    assert len(views) == 4 and all(v == views[0] for v in views)
    view = views[0]
    assert (view.status, view.model, view.pool, view.jobs_seq) == (
        "completed",
        "echo",
        "standard",
        1,
    )


def test_positions_skip_what_was_applied() -> None:
    _, events = _job_messages()
    fold = Fold(SUBJ)
    _, seq, subject, data = events[0]
    assert fold.job_event(seq, subject, data) is True
    assert fold.job_event(seq, subject, data) is False
    assert fold.positions[JOB_EVENTS] == 1 and fold.counts["skipped"] == 1


def _completed(job_id: str = "j1", worker_id: str = "w1") -> bytes:
    ev = JobCompleted(job_id=job_id, worker_id=worker_id, attempt=1, output="x", duration_s=1.0)
    return encode(ev, source="t", time=at(1))


@pytest.mark.parametrize(
    ("subject", "data", "counts"),
    [
        (SUBJ.job_event("j1", "completed", "w1"), _completed(), True),
        (SUBJ.job_event("j1", "completed"), _completed(), True),  # a service, or an old log
        (SUBJ.job_event("j1", "dead", "w2"), encode(
            JobDead(job_id="j1", attempts=3, jobs_seq=1), source="t", time=at(1)), True),
        (SUBJ.job_event("j1", "completed", "w2"), _completed(), False),  # w2 speaks for w1
        (SUBJ.job_event("j2", "completed", "w1"), _completed(), False),  # about another job
    ],
)  # fmt: skip
def test_a_job_event_counts_only_as_said_by_the_worker_it_names(
    subject: str, data: bytes, counts: bool
) -> None:
    fold = Fold(SUBJ)
    assert fold.job_event(5, subject, data) is True
    assert fold.positions[JOB_EVENTS] == 5  # a refused event is still consumed, once
    if counts:
        assert fold.jobs["j1"].terminal and fold.invalid == []
    else:
        assert fold.jobs == {} and fold.counts["invalid"] == 1
        [inv] = fold.invalid
        assert (inv.stream, inv.seq, inv.subject) == (JOB_EVENTS, 5, subject)
        assert "worker" in inv.reason or "job" in inv.reason


def test_the_reason_names_both_workers() -> None:
    env = decode(_completed(worker_id="w1"))
    why = check_job_event_speaker(SUBJ, SUBJ.job_event("j1", "completed", "w2"), env)
    assert why is not None and "'w1'" in why and "'w2'" in why
    assert check_job_event_speaker(SUBJ, SUBJ.job_event("j1", "completed", "w1"), env) is None


def _ping(wid: str = "w1", t: float = 0.0) -> bytes:
    ev = WorkerHeartbeat(worker_id=wid, n=1, healthy=True, interval_s=1.0, in_flight=0)
    return encode(ev, source="t", time=at(t))


@pytest.mark.parametrize(
    ("subject", "data", "stream_t", "reason"),
    [
        (SUBJ.worker_event("w1", "heartbeat"), b"{", 0, "not JSON"),
        (SUBJ.worker_event("w1", "heartbeat"), _ping("w2"), 0, "names worker 'w1'"),
        (SUBJ.worker_event("w1", "registered"), _ping("w1"), 0, "Subject says 'registered'"),
        (SUBJ.worker_event("w1", "heartbeat"), _ping("w1", 301), 0, "ahead of the stream"),
        ("jg.worker.w1", _ping("w1"), 0, "does not have the form"),
        (
            SUBJ.worker_event("w1", "heartbeat"),
            encode(JobStarted(job_id="j", worker_id="w1", attempt=1), source="t"),
            0,
            "does not belong on the WORKERS stream",
        ),
    ],
)
def test_invalid_worker_messages(subject: str, data: bytes, stream_t: float, reason: str) -> None:
    got = check_worker_message(SUBJ, subject, data, at(stream_t), 300.0)
    assert isinstance(got, str) and reason in got
    fold = Fold(SUBJ)
    fold.worker_message(7, subject, data, at(stream_t))
    assert fold.workers == {} and fold.positions[WORKERS] == 7
    assert [i.seq for i in fold.invalid] == [7]


def test_a_valid_ping_a_little_ahead_of_the_stream_is_fine() -> None:
    got = check_worker_message(
        SUBJ, SUBJ.worker_event("w1", "heartbeat"), _ping("w1", 299), at(0), 300.0
    )
    assert not isinstance(got, str)


@pytest.mark.parametrize(
    ("prev", "now", "step", "want"),
    [
        (None, 10.0, 1.0, []),
        (10.0, 10.0, 1.0, []),
        (10.2, 12.5, 1.0, [11.0, 12.0]),
        (10.0, 12.0, 1.0, [11.0, 12.0]),
        (0.0, 1.0e7, 1.0, [1.0e7]),  # a jump over more than MAX_TICKS: its last tick only
    ],
)
def test_ticks(prev, now, step, want) -> None:
    base = T0.timestamp()
    got = ticks(None if prev is None else at(prev), at(now), step)
    assert [round(t.timestamp() - base, 6) for t in got] == want
    assert len(got) <= MAX_TICKS


def test_a_silent_worker_decays_at_ticks_and_a_pinging_one_is_judged_at_its_pings() -> None:
    fold = Fold(SUBJ)
    for n in range(1, 121):
        for wid in ("quiet", "busy"):
            if wid == "quiet" and n > 110:
                continue
            ev = WorkerHeartbeat(
                worker_id=wid, n=n, healthy=True, interval_s=1.0, in_flight=0, boot_id="b"
            )
            fold.worker_message(
                len(fold.invalid) + n * 2 + (wid == "busy"),
                SUBJ.worker_event(wid, "heartbeat"),
                encode(ev, source="t", time=at(n)),
                at(n),
            )
    quiet, busy = fold.workers["quiet"], fold.workers["busy"]
    assert busy.tier == "full"
    assert quiet.tier != "full" and quiet.tier_since is not None
    assert quiet.tier_since.timestamp() == int(quiet.tier_since.timestamp())  # at a whole tick


def test_a_rejection_shows_on_its_job_and_never_ends_another_submission_of_that_id() -> None:
    jobs, events = _job_messages()
    refused = JobRejected(job_id="j1", jobs_seq=2, reason="field 'prompt': missing", worker_id="w1")
    jobs.append((JOBS, 2, SUBJ.submit("standard", "echo"), b'{"model": "echo", "id": "j1"}'))
    said = (JOB_EVENTS, 0, SUBJ.job_event("j1", "rejected", "w1"),
            encode(refused, source="t", time=at(0.5)))  # fmt: skip
    # The refusal comes first in JOB_EVENTS: sequences 1-4.
    events = [(st, n, subj, data) for n, (st, _, subj, data) in enumerate([said, *events], 1)]
    for order in _interleavings(jobs, events):
        fold = Fold(SUBJ)
        for stream, seq, subject, data in order:
            if stream == JOBS:
                fold.submission(seq, subject, data, at(0))
            else:
                fold.job_event(seq, subject, data)
        assert (fold.jobs["j1"].status, fold.jobs["j1"].jobs_seq) == ("completed", 1)
    alone = Fold(SUBJ)
    alone.job_event(1, SUBJ.job_event("j2", "rejected", "w1"),
                    encode(refused.model_copy(update={"job_id": "j2"}), source="t"))  # fmt: skip
    assert (alone.jobs["j2"].status, alone.jobs["j2"].error) == ("rejected", refused.reason)
