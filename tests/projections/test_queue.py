"""Queue figures as plain data: percentiles, drain rate, ETA, position, and the live index."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from jetgrid.projections.jobs import JobView
from jetgrid.projections.queue import (
    NO_TENANT,
    QueueIndex,
    drain_rate,
    eta_s,
    percentile,
    positions,
)

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("values", "q", "want"),
    [
        ([], 50, None),
        ([3.0], 50, 3.0),
        ([3.0], 95, 3.0),
        ([1.0, 2.0], 50, 1.0),
        ([2.0, 1.0], 95, 2.0),
        ([float(i) for i in range(1, 11)], 50, 5.0),
        ([float(i) for i in range(1, 11)], 95, 10.0),
        ([float(i) for i in range(1, 101)], 95, 95.0),
        ([float(i) for i in range(1, 101)], 100, 100.0),
        ([5.0, 5.0, 5.0, 9.0], 50, 5.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, want: float | None) -> None:
    assert percentile(values, q) == want


@pytest.mark.parametrize("q", [0, -1, 101])
def test_percentile_refuses_a_rank_outside_0_100(q: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], q)


@pytest.mark.parametrize(
    ("starts", "now", "window", "since", "want"),
    [
        ([], 100.0, 60.0, 0.0, 0.0),
        ([50.0, 60.0, 70.0], 100.0, 60.0, 0.0, 3 / 60),
        ([30.0, 40.0, 50.0], 100.0, 60.0, 0.0, 1 / 60),  # 40.0 is on the window's open edge
        ([95.0, 101.0], 100.0, 60.0, 0.0, 1 / 60),  # a start after now does not count
        ([91.0, 92.0], 100.0, 60.0, 90.0, 2 / 10),  # began 10 s ago: over 10 s, not 60
        ([1.0], 100.0, 60.0, 100.0, 0.0),  # no time has passed
    ],
)
def test_drain_rate_counts_starts_in_the_window(
    starts: list[float], now: float, window: float, since: float, want: float
) -> None:
    assert drain_rate(starts, now, window, since) == pytest.approx(want)


@pytest.mark.parametrize(
    ("position", "rate", "want"), [(1, 2.0, 0.5), (10, 0.5, 20.0), (3, 0.0, None), (1, -1.0, None)]
)
def test_eta_is_position_over_drain_rate(position: int, rate: float, want: float | None) -> None:
    assert eta_s(position, rate) == want


def view(job_id: str, seq: int, **fields: object) -> JobView:
    base = JobView(
        job_id=job_id,
        status="queued",
        model="m",
        pool="p",
        priority="normal",
        jobs_seq=seq,
        submitted_at=s(seq),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_position_is_priority_then_stream_order() -> None:
    queued = [
        view("n5", 5),
        view("l1", 1, priority="low"),
        view("h9", 9, priority="high"),
        view("n2", 2),
        view("h7", 7, priority="high"),
    ]
    assert positions(queued) == {"h7": 1, "h9": 2, "n2": 3, "n5": 4, "l1": 5}


def index() -> QueueIndex:
    return QueueIndex(since=T0.timestamp(), window_s=60.0)


def feed(q: QueueIndex, *views: JobView) -> None:
    last: dict[str, JobView] = {}
    for v in views:
        q.observe(last.get(v.job_id), v)
        last[v.job_id] = v


def test_the_index_follows_a_job_from_queued_to_running_to_ended() -> None:
    q = index()
    a = view("a", 1, submitter="acme")
    feed(q, a)
    assert q.backlog("p", "m", s(11)) == (1, 10.0)
    assert q.place(a, s(11)) == (1, None)  # nothing drains yet: no ETA
    running = replace(a, status="running", started_at=s(4), worker_id="w1")
    feed(q, a, running)
    assert q.backlog("p", "m", s(11)) == (0, None)
    assert q.place(running, s(11)) is None
    (row,) = q.figures(s(10))
    assert (row["queued"], row["running"], row["wait_p50_s"], row["wait_p95_s"]) == (0, 1, 3.0, 3.0)
    assert row["drain_per_s"] == pytest.approx(1 / 10, abs=1e-4)  # 1 start in 10 s since began
    assert row["tenants"] == [
        {"tenant": "acme", "queued": 0, "running": 1, "oldest_wait_s": None, "wait_p50_s": 3.0,
         "wait_p95_s": 3.0, "drain_per_s": 0.1, "share": 1.0}
    ]  # fmt: skip
    feed(q, running, replace(running, status="completed", finished_at=s(5)))
    assert q.keys() == [] and q.running == {}
    assert q.figures(s(10))[0]["running"] == 0  # its start still counts in the window
    assert q.figures(s(70)) == []  # and leaves it after window_s


def test_tenants_share_the_line_and_each_has_its_own_figures() -> None:
    q = index()
    jobs = [view(f"b{i}", i, submitter="big") for i in range(1, 5)]
    jobs.append(view("s1", 5, submitter="small"))
    jobs.append(view("anon", 6))
    for v in jobs:
        q.observe(None, v)
    for v in jobs[:3]:  # big's first three start
        q.observe(v, replace(v, status="running", claimed_at=s(20)))
    q.observe(jobs[4], replace(jobs[4], status="running", claimed_at=s(30)))  # small's one
    (row,) = q.figures(s(40))
    assert (row["queued"], row["running"], row["oldest_wait_s"]) == (2, 4, 36.0)
    by = {t["tenant"]: t for t in row["tenants"]}
    assert sorted(by) == [NO_TENANT, "big", "small"]
    assert (by["big"]["queued"], by["big"]["running"], by["big"]["share"]) == (1, 3, 0.75)
    assert (by["small"]["running"], by["small"]["share"]) == (1, 0.25)
    assert by["big"]["wait_p50_s"] == 18.0 and by["big"]["wait_p95_s"] == 19.0
    assert by["small"]["wait_p50_s"] == 25.0
    assert (by[NO_TENANT]["queued"], by[NO_TENANT]["share"]) == (1, 0.0)
    assert row["drain_per_s"] == pytest.approx(4 / 40, abs=1e-4)
    # b4 (seq 4) is ahead of anon (seq 6) whoever submitted them; ETA = position / drain
    assert q.place(jobs[3], s(40)) == (1, pytest.approx(10.0))
    assert q.place(jobs[5], s(40)) == (2, pytest.approx(20.0))


def test_in_a_fair_share_pool_each_tenant_queue_is_its_own_line() -> None:
    q = index()
    big = [view(f"b{i}", i, submitter="big", tenant="big") for i in range(1, 9)]
    small = [view(f"s{i}", 10 + i, submitter="small", tenant="small") for i in range(1, 3)]
    shared = view("anon", 20)  # no tenant token: the pool's shared queue
    for v in (*big, *small, shared):
        q.observe(None, v)
    for v in big[:4]:  # big drains 4 in 40 s, small 1
        q.observe(v, replace(v, status="running", claimed_at=s(30)))
    q.observe(small[0], replace(small[0], status="running", claimed_at=s(35)))
    # small's next job waits behind its own queue only, not big's flood; ETA from its drain
    assert q.place(small[1], s(40)) == (1, pytest.approx(40.0))
    assert q.place(big[7], s(40)) == (4, pytest.approx(40.0))
    assert q.place(shared, s(40)) == (1, None)  # the shared queue has drained nothing
    assert q.drain("p", "m", s(40)) == pytest.approx(5 / 40)  # the (pool, model) counts all


def test_a_retried_job_is_queued_again_and_counts_one_start() -> None:
    q = index()
    a = view("a", 1)
    run = replace(a, status="running", started_at=s(2))
    again = replace(run, status="queued", retries=1)
    feed(q, a, run, again)
    assert q.backlog("p", "m", s(5)) == (1, 4.0)
    assert len(q.starts) == 1


def test_a_start_folded_with_its_outcome_counts_once() -> None:
    """A short run's claim rides on its outcome (events.Claim): the job goes from queued to
    completed in one fold step, and that is still a start, with its wait."""
    q = index()
    a = view("a", 1)
    done = replace(a, status="completed", claimed_at=s(4), started_at=s(4), finished_at=s(4.1))
    feed(q, a, done, replace(done, duplicates=1))
    (row,) = q.figures(s(10))
    assert (row["queued"], row["running"], row["wait_p50_s"]) == (0, 0, 3.0)
    assert row["drain_per_s"] == pytest.approx(1 / 10, abs=1e-4)
    retried = replace(a, claimed_at=s(4), started_at=s(4), retries=1)  # `retrying` with a claim
    feed(q, view("b", 2), replace(retried, job_id="b", jobs_seq=2, submitted_at=s(2)))
    assert q.figures(s(10))[0]["drain_per_s"] == pytest.approx(2 / 10, abs=1e-4)


def test_only_what_is_live_is_kept() -> None:
    q = QueueIndex(since=T0.timestamp(), window_s=60.0, max_starts=3)
    for i in range(10):
        v = view(f"j{i}", i)
        q.observe(None, v)
        q.observe(v, replace(v, status="running", started_at=s(i + 1)))
        q.observe(None, replace(v, status="completed", started_at=s(i + 1)))
    assert len(q.starts) == 3 and q.queued == {} and q.running == {}
    q.figures(s(100))
    assert len(q.starts) == 0  # pruned once the window passed them


def test_a_view_without_its_submission_is_not_tracked() -> None:
    q = index()
    q.observe(None, JobView(job_id="x", status="running", worker_id="w1"))
    assert q.keys() == [] and not q.starts


def test_overdue_lists_queued_jobs_past_their_deadline_and_grace() -> None:
    q = index()
    a = view("a", 1, deadline=s(10))
    b = view("b", 2, deadline=s(30))
    c = view("c", 3)
    d = view("d", 4, deadline=s(10))
    for v in (a, b, c, d):
        q.observe(None, v)
    q.observe(d, replace(d, status="running", started_at=s(9)))
    assert q.overdue(s(11), grace_s=2) == []
    assert [v.job_id for v in q.overdue(s(12.5), grace_s=2)] == ["a"]
    assert [v.job_id for v in q.overdue(s(40), grace_s=2)] == ["a", "b"]


@pytest.mark.parametrize("max_starts", [3, 10_000])
def test_the_drain_a_submit_reads_is_the_drain_of_the_figures(max_starts: int) -> None:
    q = QueueIndex(since=T0.timestamp(), window_s=60.0, max_starts=max_starts)
    for i, at in enumerate([5.0, 1.0, 30.0, 62.0, 61.0, 90.0, 95.0]):  # out of order, as folded
        v = view(f"j{i}", i + 1, submitted_at=s(0))
        q.observe(None, v)
        q.observe(v, replace(v, status="running", started_at=s(at)))
    for now in (0.0, 10.0, 61.5, 65.0, 100.0, 200.0):
        rows = q.figures(s(now))
        want = rows[0]["drain_per_s"] if rows else 0.0
        assert round(q.drain("p", "m", s(now)), 4) == want, now
