"""Open hours: a rollup is published once WORKERS and JOB_EVENTS are both past its hour, with
the jobs its worker took in it (projections.hours)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from jetgrid.events.lifecycle import MAX_CLAIM_DELAY_S, Claim, JobCompleted, JobStarted
from jetgrid.events.workers import WorkerRollup
from jetgrid.projections.fold import Changes, FoldConfig
from jetgrid.projections.hours import OpenHours, taken
from jetgrid.projections.replay import all_rollups
from jetgrid.projections.runner import Projector
from tests.helpers.waiting import until

H = 3600
T0 = 100 * H  # an hour start


def at(s: float) -> datetime:
    return datetime.fromtimestamp(T0 + s, UTC)


def rollup(wid: str, hour: float) -> WorkerRollup:
    return WorkerRollup(
        worker_id=wid, hour=int(T0 + hour), interval_s=5.0, origin=0.0, first_slot=0, lo=0,
        top=1, bits="", healthy_slots=0, total_slots=0, tier="full",
    )  # fmt: skip


def claim(wid: str, job: str, fallback: bool = False) -> JobStarted:
    return JobStarted(job_id=job, worker_id=wid, attempt=1, jobs_seq=1, fallback=fallback)


def counts(evs: list[object]) -> list[tuple[str, int, int | None, dict[str, int] | None, int]]:
    out = []
    for ev in evs:
        assert isinstance(ev, WorkerRollup)
        out.append(
            (ev.worker_id, ev.hour - T0, ev.jobs_taken, ev.jobs_taken_per_tier,
             ev.jobs_taken_fallback or 0)
        )  # fmt: skip
    return out


def test_only_a_claim_is_a_job_taken() -> None:
    assert taken(claim("w1", "j", fallback=True), at(5)) == ("w1", True, T0 + 5)
    assert taken(JobStarted(job_id="j", worker_id="w1", attempt=1), at(5)) is None
    done = JobCompleted(job_id="j", worker_id="w1", attempt=1, output=None, duration_s=0.0)
    assert taken(done, at(5)) is None  # an outcome without a claim: its run's `started` has it
    carried = done.model_copy(update={"claim": Claim(jobs_seq=4, fallback=True, at=at(3))})
    assert taken(carried, at(5)) == ("w1", True, T0 + 3)  # the claim's time, not the outcome's


def test_a_claim_carried_by_an_outcome_counts_in_the_hour_it_was_taken() -> None:
    """A run over before its worker said `started` carries its claim on its outcome, stored up
    to MAX_CLAIM_DELAY_S later: the hour it was taken in waits that long on JOB_EVENTS."""
    h = OpenHours(keep=True)
    h.took_rollup(rollup("w1", 0))
    done = JobCompleted(
        job_id="a", worker_id="w1", attempt=1, output=None, duration_s=0.5,
        claim=Claim(jobs_seq=1, at=at(H - 0.3)),
    )  # fmt: skip
    h.job_event(claim("w1", "b"), at(H + 0.2), None)  # JOB_EVENTS is past the hour's end...
    assert h.close(at(H + 5)) == []  # ...but not by MAX_CLAIM_DELAY_S: a claim may still come
    h.job_event(done, at(H + 0.4), None)
    h.job_event(claim("w1", "c"), at(H + MAX_CLAIM_DELAY_S + 0.1), None)
    assert counts(h.close(at(H + 5))) == [("w1", 0, 1, {"unseen": 1}, 0)]


def test_an_hour_waits_for_job_events_past_its_end_and_counts_per_tier_at_claim_time() -> None:
    h = OpenHours(keep=True)
    h.tier_changes([("w1", at(-10), "probation"), ("w1", at(1800), "full")])
    h.job_event(claim("w1", "a"), at(100), None)
    h.job_event(claim("w1", "b", fallback=True), at(2000), None)
    h.took_rollup(rollup("w1", 0))
    assert h.close(at(H + 5)) == []  # WORKERS is past the hour, JOB_EVENTS is not
    assert h.waiting(at(H + 5))
    h.job_event(JobStarted(job_id="b", worker_id="w1", attempt=1), at(H + 1), at(H + 1))
    assert counts(h.close(at(H + 5))) == [("w1", 0, 2, {"full": 1, "probation": 1}, 1)]
    assert not h.rollups and not h.claims and not h.waiting(at(H + 5))


def test_an_hour_closes_when_job_events_is_idle() -> None:
    h = OpenHours(keep=True)
    h.took_rollup(rollup("w1", 0))
    assert h.close(at(H)) == []
    h.idle(at(H + 2))  # JOB_EVENTS read to its end after a WORKERS message stored then
    assert counts(h.close(at(H))) == [("w1", 0, 0, {}, 0)]


def test_no_hour_closes_before_workers_is_past_it() -> None:
    h = OpenHours(keep=True)
    h.took_rollup(rollup("w1", 0))
    h.idle(at(5 * H))
    assert h.close(at(H - 1)) == []
    assert len(h.close(at(H))) == 1


def test_a_late_claim_and_one_without_a_rollup_go_to_the_oldest_open_hour() -> None:
    h = OpenHours(keep=True)
    h.job_event(claim("w2", "x"), at(10), None)  # w2 has no rollup in hour 0
    h.took_rollup(rollup("w1", 0))
    h.job_event(claim("w1", "a"), at(H + 10), at(H + 10))
    assert counts(h.close(at(H + 20))) == [("w1", 0, 0, {}, 0)]
    h.job_event(claim("w1", "late"), at(30), at(H + 30))  # its hour is closed already
    h.took_rollup(rollup("w1", H))
    h.took_rollup(rollup("w2", H))
    h.idle(at(2 * H + MAX_CLAIM_DELAY_S))
    got = counts(h.close(at(2 * H)))
    assert got == [
        ("w1", H, 2, {"unseen": 2}, 0),
        ("w2", H, 1, {"unseen": 1}, 0),
    ]  # fmt: skip


@pytest.mark.parametrize("cut", range(9))
def test_saved_and_restored_at_any_point_it_publishes_the_same(cut: int) -> None:
    steps = [
        lambda h: h.tier_changes([("w1", at(0), "full")]),
        lambda h: h.job_event(claim("w1", "a"), at(100), at(100)),
        lambda h: h.took_rollup(rollup("w1", 0)),
        lambda h: h.close(at(H + 1)),
        lambda h: h.job_event(claim("w1", "b"), at(H - 1), at(H - 1)),
        lambda h: h.tier_changes([("w1", at(H + 2), "none")]),
        lambda h: h.job_event(claim("w1", "c"), at(H + 3), at(H + 3)),
        lambda h: h.took_rollup(rollup("w1", H)),
        lambda h: h.idle(at(3 * H)),
    ]

    def run(restart: int | None) -> list[object]:
        h = OpenHours(keep=True)
        saved: dict[str, str] = {}  # what the store holds after each batch
        out: list[object] = []
        for i, step in enumerate(steps):
            if i == restart:
                h = OpenHours.from_rows(saved, keep=True)
            step(h)
            out += h.close(at(2 * H if i >= 7 else H + 1))
            for k, v in h.take_rows().items():
                if v is None:
                    saved.pop(k, None)
                else:
                    saved[k] = v
        assert all(k == "mark" or k.startswith("s:") for k in saved)  # no hour left open
        return out

    want = run(None)
    assert counts(want) == [("w1", 0, 2, {"full": 2}, 0), ("w1", H, 1, {"none": 1}, 0)]
    assert counts(run(cut)) == counts(want)


def test_readers_that_publish_nothing_keep_nothing() -> None:
    h = OpenHours()
    h.took_rollup(rollup("w1", 0))
    h.job_event(claim("w1", "a"), at(1), None)
    assert h.close(at(2 * H)) == [] and not h.rollups and not h.claims


@pytest.mark.integration
async def test_a_projector_publishes_an_hour_while_job_events_is_idle(log, bus, make_store) -> None:
    hour0 = (int(datetime.now(UTC).timestamp()) // H - 3) * H
    log.t0 = datetime.fromtimestamp(hour0, UTC)
    await log.register("w1", 0.0, interval=5.0)
    await log.job("j1", "w1", 600.0)  # its events stop at 600.5 s: JOB_EVENTS then stays idle
    for i in range(1, 730):  # to 1 h 45 s
        await log.ping("w1", i, i * 5.0, interval_s=5.0)
    proj = Projector(log.settings, make_store(), bus)
    await proj.start()
    try:
        got = await until(lambda: _rollups(bus, log.settings))
    finally:
        await proj.stop()
    assert [(e.hour - hour0, e.jobs_taken, e.jobs_taken_per_tier) for e in got] == [
        (0, 1, {"full": 1})  # healthy for ten minutes by then
    ]


async def _rollups(bus, settings) -> list[WorkerRollup]:
    return await all_rollups(bus, settings)


async def test_the_open_hours_are_saved_with_a_batch_and_carried_by_a_snapshot(make_store) -> None:
    store, other = make_store(), make_store()
    await store.open(FoldConfig())
    await other.open(FoldConfig())
    rows: dict[str, str | None] = {"mark": "[1.0, 0]", "c:0:w1": "[[1.0, false]]", "x": None}
    changes = Changes([], [], [], [], {"WORKERS": 1, "JOBS": 0, "JOB_EVENTS": 0}, None, [], rows)
    await store.write(changes, lambda tier: None)
    digest = await store.digest()
    await store.write(replace(changes, hours={"c:0:w1": None, "s:w1": "[]"}), lambda tier: None)
    assert (await store.load()).open_hours == {"mark": "[1.0, 0]", "s:w1": "[]"}
    assert await store.digest() == digest  # working state, not a read model
    tables, digest = await store.dump()
    assert await other.restore(tables, digest)
    assert (await other.load()).open_hours == {"mark": "[1.0, 0]", "s:w1": "[]"}
