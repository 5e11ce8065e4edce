from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jetgrid.events import (
    Envelope,
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
    decode,
    encode,
)
from jetgrid.events.addressing import Speaker, message_id
from jetgrid.projections.jobs import (
    AGED_OUT,
    AGED_OUT_RETRY,
    JobView,
    aged_out_dead,
    ages_out,
    apply,
)

T0 = datetime(2026, 11, 22, tzinfo=UTC)


def decoded(event: Any) -> Any:
    """The event as the reducers get it from the log: through the codec (and its upcasters)."""
    return decode(encode(event, source="t")).event


def env(event: Any, seq: int, dt: float = 0.0) -> Envelope:
    return Envelope(id=f"e{seq}", source="t", time=T0 + timedelta(seconds=dt), event=event, seq=seq)


SUB = JobSubmitted(job_id="j", model="m", pool="fast", prompt="hi")
# An old log's pair (`claimed`, then a version 1 `started`), and the one `started` of today.
CLAIM = decoded(JobClaimed(job_id="j", worker_id="w1", attempt=1, jobs_seq=1))
START = JobStarted(job_id="j", worker_id="w1", attempt=1)
TAKE = JobStarted(job_id="j", worker_id="w1", attempt=1, jobs_seq=1, tier_factor=1.0)
DONE = JobCompleted(job_id="j", worker_id="w1", attempt=1, output={"r": 1}, duration_s=0.5)
DONE2 = JobCompleted(job_id="j", worker_id="w2", attempt=2, output={"r": 2}, duration_s=0.1)
FAIL = JobFailed(job_id="j", worker_id="w1", attempt=1, reason="bad input", error_type="bad_input")


def fold(*envs: Envelope) -> JobView:
    view: JobView | None = None
    for e in envs:
        view = apply(view, e)
    assert view is not None
    return view


def test_happy_path() -> None:
    v = fold(env(SUB, 1), env(CLAIM, 1, 1), env(START, 2, 2), env(DONE, 3, 3))
    assert v.status == "completed" and v.output == {"r": 1} and v.worker_id == "w1"
    assert v.submitted_at == T0 and v.finished_at == T0 + timedelta(seconds=3)
    assert (v.jobs_seq, v.terminal_seq, v.attempts, v.duplicates) == (1, 3, 1, 0)


@pytest.mark.parametrize(
    ("events", "status"),
    [
        ([SUB], "queued"),
        ([SUB, CLAIM], "running"),  # an old log's lone `claimed` reads as taken and running
        ([SUB, CLAIM, START], "running"),
        ([SUB, TAKE], "running"),
        ([SUB, TAKE, DONE], "completed"),
        ([SUB, DONE], "completed"),  # a `started` that never landed
        ([SUB, START, CLAIM], "running"),  # never backwards
        ([SUB, CLAIM, START, FAIL], "failed"),
        ([SUB, JobCancelled(job_id="j")], "cancelled"),
        ([SUB, JobDead(job_id="j", attempts=5, jobs_seq=1)], "dead"),
        (
            [
                SUB,
                CLAIM,
                START,
                JobRetrying(job_id="j", worker_id="w1", attempt=1, reason="x", delay_s=1),
            ],
            "queued",
        ),
    ],
)
def test_status_table(events: list[Any], status: str) -> None:
    assert fold(*(env(e, i + 1) for i, e in enumerate(events))).status == status


def test_first_terminal_in_log_order_wins() -> None:
    v = fold(env(SUB, 1), env(DONE, 2), env(DONE2, 3), env(FAIL, 4))
    assert v.status == "completed" and v.output == {"r": 1} and v.worker_id == "w1"
    assert v.duplicates == 2 and v.terminal_seq == 2


def test_late_non_terminal_events_do_not_reopen_a_job() -> None:
    retry = JobRetrying(job_id="j", worker_id="w2", attempt=2, reason="x", delay_s=1)
    v = fold(env(SUB, 1), env(DONE, 2), env(CLAIM, 3), env(START, 4), env(retry, 5))
    assert v.status == "completed" and v.worker_id == "w1"


def test_lifecycle_seen_before_the_submission() -> None:
    v = fold(env(START, 5), env(DONE, 6), env(SUB, 1))
    assert v.status == "completed" and v.model == "m" and v.jobs_seq == 1


def test_resubmission_of_the_same_id_keeps_the_first() -> None:
    again = JobSubmitted(job_id="j", model="m", pool="fast", prompt="different")
    v = fold(env(SUB, 1), env(again, 9))
    assert v.jobs_seq == 1


def test_cancel_request_and_progress() -> None:
    p = JobProgress(job_id="j", worker_id="w1", attempt=1, fraction=0.25)
    v = fold(env(SUB, 1), env(START, 2), env(p, 3), env(JobCancelRequested(job_id="j"), 4))
    assert v.cancel_requested and v.progress == 0.25 and v.status == "running"


def test_replaying_the_same_events_gives_equal_views() -> None:
    log = [env(SUB, 1), env(CLAIM, 2), env(START, 3), env(DONE, 4), env(DONE2, 5)]
    assert fold(*log) == fold(*log)


# -- rejected: the end of one refused submission (issue 11, finding 8) ------------------------

REJ = JobRejected(job_id="j", jobs_seq=5, reason="field 'prompt': missing", worker_id="w1")


def test_a_refused_submission_is_rejected_with_its_reason() -> None:
    v = fold(env(REJ, 9))
    assert (v.status, v.error, v.error_type, v.jobs_seq, v.terminal) == (
        "rejected", REJ.reason, "rejected", 5, True
    )  # fmt: skip


def test_a_refusal_of_another_submission_does_not_end_an_accepted_job() -> None:
    sub = env(SUB, 1)  # the accepted job j is JOBS seq 1; the refused one was seq 5
    for order in ([sub, env(REJ, 9)], [env(REJ, 9), sub]):
        v = fold(*order, env(CLAIM, 10), env(DONE, 11))
        assert v.status == "completed" and v.jobs_seq == 1, order
    v = fold(env(REJ, 9), env(CLAIM, 10), env(DONE, 11))  # claim of seq 1 seen first
    assert v.status == "completed" and v.jobs_seq == 1


DAY = 86400.0
RETRY = JobRetrying(job_id="j", worker_id="w1", attempt=1, reason="oom", delay_s=0)


@pytest.mark.parametrize(
    ("events", "age_s", "max_age_s", "reason"),
    [
        ([SUB], 30 * DAY, 30 * DAY, AGED_OUT),  # at the limit: JetStream drops it now
        ([SUB], 31 * DAY, 30 * DAY, AGED_OUT),  # a projector that was down catches up
        ([SUB], 30 * DAY - 1, 30 * DAY, None),  # a worker may still take it
        ([SUB], 365 * DAY, 0.0, None),  # kept forever
        ([SUB, CLAIM], 31 * DAY, 30 * DAY, None),  # taken: its worker decides
        ([SUB, CLAIM, START], 31 * DAY, 30 * DAY, None),
        ([SUB, CLAIM, RETRY], 31 * DAY, 30 * DAY, AGED_OUT_RETRY),  # queued again, then dropped
        ([SUB, DONE], 31 * DAY, 30 * DAY, None),  # ended
        ([CLAIM, RETRY], 31 * DAY, 30 * DAY, None),  # no submission seen: nothing in JOBS
    ],
)
def test_a_queued_job_ends_dead_when_it_ages_out_of_jobs(
    events: list[Any], age_s: float, max_age_s: float, reason: str | None
) -> None:
    view = fold(*(env(e, i + 1) for i, e in enumerate(events)))
    now = T0 + timedelta(seconds=age_s)
    assert ages_out(view, now, max_age_s) is (reason is not None)
    if reason is not None:
        dead = aged_out_dead(view)
        assert (dead.reason, dead.jobs_seq, dead.attempts) == (reason, 1, view.attempts)
        assert message_id(dead, Speaker.service("projector")) == "j:terminal"
        after = apply(view, env(dead, 99, age_s))
        assert after.status == "dead" and after.error == reason
        assert not ages_out(after, now, max_age_s)


# -- deadlines: `expired` ------------------------------------------------------------------------
def test_a_submission_carries_its_tenant_and_deadline() -> None:
    sub = JobSubmitted(job_id="j", model="m", pool="fast", prompt="hi", submitter="acme", ttl_s=30)
    v = fold(env(sub, 1, 5))
    assert v.submitter == "acme"
    assert v.deadline == T0 + timedelta(seconds=35)  # its submission's event time + ttl_s
    assert fold(env(SUB, 1)).deadline is None


def test_expired_is_terminal_and_the_first_terminal_event_counts() -> None:
    late = JobExpired(job_id="j", deadline=T0, reason="no worker started it by its deadline")
    v = fold(env(SUB, 1), env(late, 2, 9), env(CLAIM, 3, 10), env(DONE, 4, 11))
    assert (v.status, v.error_type, v.terminal, v.duplicates) == ("expired", "expired", True, 1)
    assert v.error == "no worker started it by its deadline" and v.output is None
    assert v.finished_at == T0 + timedelta(seconds=9) and v.deadline == T0
    v = fold(env(SUB, 1), env(CLAIM, 2, 1), env(DONE, 3, 2), env(late, 4, 9))
    assert (v.status, v.duplicates) == ("completed", 1)  # ran in time: a late sweep loses


# -- `claimed` folded into `started` (issue 13) -------------------------------------------------


def test_an_old_claimed_and_started_pair_folds_to_the_view_it_always_gave() -> None:
    v = fold(env(SUB, 1), env(CLAIM, 1, 1), env(START, 2, 2), env(DONE, 3, 3))
    assert v == JobView(
        job_id="j", status="completed", model="m", pool="fast", kind="generate",
        priority="normal", jobs_seq=1, submitted_at=T0, worker_id="w1", attempts=1,
        claimed_at=T0 + timedelta(seconds=1), started_at=T0 + timedelta(seconds=2),
        finished_at=T0 + timedelta(seconds=3), output={"r": 1}, usage={}, terminal_seq=3,
    )  # fmt: skip


def test_the_one_started_records_the_claim_and_the_start() -> None:
    v = fold(env(TAKE, 1, 1))
    assert (v.status, v.worker_id, v.attempts, v.jobs_seq) == ("running", "w1", 1, 1)
    assert v.claimed_at == v.started_at == T0 + timedelta(seconds=1)


def test_a_started_stored_after_the_outcome_changes_nothing() -> None:
    # The worker stores a `started` whose ack never came again, after the terminal event.
    assert fold(env(SUB, 1), env(DONE, 2, 2), env(TAKE, 3, 1)) == fold(env(SUB, 1), env(DONE, 2, 2))


def test_a_retried_job_is_claimed_again_by_each_started() -> None:
    again = JobStarted(job_id="j", worker_id="w2", attempt=2, jobs_seq=1)
    v = fold(env(SUB, 1), env(TAKE, 2, 1), env(RETRY, 3, 2), env(again, 4, 3))
    assert (v.status, v.worker_id, v.attempts, v.retries) == ("running", "w2", 2, 1)
    assert v.claimed_at == v.started_at == T0 + timedelta(seconds=3)


def test_the_reducers_replace_matches_dataclasses_replace() -> None:
    import dataclasses

    from jetgrid.projections.jobs import _replace

    view = JobView(job_id="j", status="running", attempts=2, output={"a": 1}, duplicates=1)
    for f in dataclasses.fields(JobView):
        value = object()
        assert _replace(view, **{f.name: value}) == dataclasses.replace(view, **{f.name: value})
    assert _replace(view) == view and _replace(view) is not view
    with pytest.raises(AttributeError):
        _replace(view, no_such_field=1)
