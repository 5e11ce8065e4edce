"""Rollups stand in for aged-out pings: a log whose raw pings before a cut were purged (standing
in for retention) replays, projects and audits to the same tiers and uptime as the full log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jetgrid.events import (
    Subjects,
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    decode,
    encode,
)
from jetgrid.events.workers import WorkerRegistered, WorkerRollup
from jetgrid.projections.archive import ArchiveDir
from jetgrid.projections.archiver import archive_streams
from jetgrid.projections.audit import BudgetRule, report_worker, tier_at
from jetgrid.projections.audit_log import gather
from jetgrid.projections.fold import Fold, fold_config
from jetgrid.projections.prelude import before_cut, fold_rollups
from jetgrid.projections.replay import all_rollups, replay
from jetgrid.projections.rollup import encode_bits
from jetgrid.projections.runner import Projector
from tests.helpers.waiting import until

pytestmark = pytest.mark.integration
H = 3600
LATER = datetime(2100, 1, 1, tzinfo=UTC)
STEP = 5.0  # heartbeat interval


def _events() -> list[tuple[float, Any, str]]:
    """Three workers over four hours: a steady one; one with an absence and unhealthy spells;
    one that drains, leaves, and comes back after the cut (at 3 h) with a new boot."""
    out: list[tuple[float, Any, str]] = []

    def reg(wid: str, t: float, boot: str) -> None:
        ev = WorkerRegistered(
            worker_id=wid, pools=["standard"], models=["echo"], backend="echo", concurrency=2,
            heartbeat_interval_s=STEP, boot_id=boot,
        )  # fmt: skip
        out.append((t, ev, "registered"))

    def pings(wid: str, start: float, end: float, boot: str, sick: list[tuple[float, float]]):
        t = start
        while t < end:
            healthy = not any(a <= t < b for a, b in sick)
            n = int(t / STEP)  # the ping counter of a boot only grows
            ev = WorkerHeartbeat(
                worker_id=wid, n=n, healthy=healthy, interval_s=STEP, in_flight=0, boot_id=boot
            )
            out.append((t, ev, "heartbeat"))
            t += STEP

    for wid in ("w1", "w2", "w3"):
        reg(wid, 0.0, "b1")
    pings("w1", STEP, 4 * H + 300, "b1", [])
    sick = [(2 * H + 600, 2 * H + 1800), (3 * H + 1200, 3 * H + 1500)]
    pings("w2", STEP, 1 * H, "b1", [])
    pings("w2", 1 * H + 2400, 4 * H + 300, "b1", sick)  # silent for 40 min, then unhealthy spells
    pings("w3", STEP, 2 * H + 1800, "b1", [(1 * H + 300, 1 * H + 900)])
    out.append((2 * H + 1200, WorkerDraining(worker_id="w3", reason="upgrade"), "draining"))
    out.append((2 * H + 1800, WorkerDeregistered(worker_id="w3"), "deregistered"))
    reg("w3", 3 * H + 1200, "b2")
    pings("w3", 3 * H + 1200 + STEP, 4 * H + 300, "b2", [])
    out.sort(key=lambda e: e[0])
    return out


async def _publish(
    log, events: list[tuple[float, Any, str]], start: int = 0
) -> list[tuple[float, int]]:
    """Publish in time order; returns (time offset, WORKERS seq) of each."""
    subj = log.settings.subjects
    futures = []
    for i, (t, ev, name) in enumerate(events, start):
        data = encode(ev, source="t", id=f"e{i}", time=log.at(t))
        futures.append(await log.js.publish_async(subj.worker_event(ev.worker_id, name), data))
    await log.js.publish_async_completed()
    return [(t, (await f).seq) for (t, _, _), f in zip(events, futures, strict=True)]


def _views_at(views: dict[str, Any], end: float) -> dict[str, Any]:
    return {
        wid: (v.tier, [(w.label, w.healthy, w.slots) for w in v.uptime.windows(end)])
        for wid, v in views.items()
    }


def _after(rows: list[dict[str, Any]], cut: str) -> list[tuple[str, str, str]]:
    return [(r["worker_id"], r["since"], r["tier"]) for r in rows if r["since"] > cut]


def _audit(log, rule: BudgetRule, start: float | None, end: datetime) -> dict[str, dict[str, Any]]:
    out = {}
    for w in log.workers(end):
        r = report_worker(w, rule, start)
        if start is not None:
            r["tier_timeline"] = [e for e in r["tier_timeline"] if e["since"] > _iso(start)]
        out[w.worker_id] = r
    return out


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize(
    "cut_s", [3 * H, 3 * H + 1300], ids=["at-an-hour-end", "inside-a-sick-spell-after-a-return"]
)
async def test_a_log_whose_raw_pings_aged_out_replays_to_the_same_tiers_and_audit(
    log, nc, bus, make_store, cut_s: int
) -> None:
    hour0 = (int(datetime.now(UTC).timestamp()) // H - 5) * H
    log.t0 = datetime.fromtimestamp(hour0, UTC)
    s = log.settings
    seqs = await _publish(log, _events())
    for i, (wid, t) in enumerate([("w1", 1800), ("w2", 2 * H + 900), ("w1", 3 * H + 600),
                                  ("w2", 3 * H + 1300), ("w3", 3 * H + 2400), ("w1", 4 * H + 100),
                                  ("w2", 4 * H + 120)]):  # fmt: skip
        await log.job(f"j{i}", wid, t)

    proj = Projector(s, make_store(), bus)  # publishes the hour rollups
    await proj.start()
    try:
        await proj.wait_caught_up()
    finally:
        await proj.stop()
    full_store = make_store()
    await replay(s, full_store, bus)
    full_audit = await gather(s, bus, fold_config(s))
    _check_jobs_taken(await all_rollups(bus, s), full_audit, hour0)

    cut_seq = next(q for t, q in seqs if t >= cut_s)  # the first retained ping is at the cut
    cut_at = hour0 + 4 * H  # known from rollups until the end of the hour that holds the cut
    if cut_s == 3 * H:
        cut_at = hour0 + 3 * H
    await nc.jetstream().purge_stream(s.streams.workers, seq=cut_seq)
    part_store = make_store()
    await replay(s, part_store, bus)
    part_audit = await gather(s, bus, fold_config(s))
    fresh = Projector(s, make_store(), bus)
    await fresh.start()
    try:
        await fresh.wait_caught_up()
        fresh_views = dict(fresh.fold.workers)
    finally:
        await fresh.stop()

    end = log.at(4 * H + 300)
    full = await full_store.load()
    part = await part_store.load()
    want = _views_at(full.workers, end.timestamp())
    assert want["w1"][0] == "full" and want["w2"][0] != "full"  # the log is not trivial
    assert _views_at(part.workers, end.timestamp()) == want
    assert _views_at(fresh_views, end.timestamp()) == want
    cut = _iso(cut_at)
    assert _after(await part_store.tier_history(), cut) == _after(
        await full_store.tier_history(), cut
    )

    for rule in (BudgetRule(), BudgetRule(rate=0.001, burst=1.0, grace_s=10.0)):
        a = _audit(full_audit, rule, cut_at, end)
        b = _audit(part_audit, rule, cut_at, end)
        assert set(a) == set(b) == {"w1", "w2", "w3"}
        for wid in a:
            assert a[wid].pop("from_rollups_until") is None
            assert b[wid].pop("from_rollups_until") == cut
            assert b[wid] == a[wid]
        assert sum(r["claims"] for r in a.values()) == (5 if cut_s == 3 * H else 2)

    # JOB_EVENTS' old part goes too: the claims of those hours come from the rollups' counts.
    events_cut = await _first_job_event_at(log, cut_s)
    await nc.jetstream().purge_stream(s.streams.job_events, seq=events_cut)
    gone_audit = await gather(s, bus, fold_config(s))
    claims_to = _iso(hour0 + 4 * H)  # to the end of the hour of the first retained event
    rule = BudgetRule()
    for wid, a in _audit(full_audit, rule, None, end).items():
        b = report_worker(next(w for w in gone_audit.workers(end) if w.worker_id == wid), rule)
        assert b["claims_from_rollups_until"] == claims_to
        figures = ("claims", "claims_per_tier", "taken_for_want_of_better")
        assert {k: b[k] for k in figures} == {k: a[k] for k in figures}, wid
    assert len(gone_audit.claims["w1"]) < len(full_audit.claims["w1"])  # claims were purged


def _check_jobs_taken(rollups: list[WorkerRollup], full: Any, hour0: int) -> None:
    """Each rollup counts the claims of its worker and hour in the full log, per tier at the
    claim's time; every hour before the last is closed, and each claim in it counted."""
    claims: dict[tuple[str, int], list[Any]] = {}
    for wid, cs in full.claims.items():
        for c in cs:
            claims.setdefault((wid, int(c.time // H) * H), []).append(c)
    timelines = {w.worker_id: w.timeline for w in full.workers()}
    seen = set()
    for ev in rollups:
        assert ev.jobs_taken is not None
        got = claims.get((ev.worker_id, ev.hour), [])
        per_tier: dict[str, int] = {}
        for c in got:
            tier = tier_at(timelines[ev.worker_id], c.time).tier
            per_tier[tier] = per_tier.get(tier, 0) + 1
        assert ev.jobs_taken == len(got), (ev.worker_id, ev.hour)
        assert ev.jobs_taken_per_tier == per_tier and ev.jobs_taken_fallback == 0
        seen.add((ev.worker_id, ev.hour))
    assert {(w, h - hour0) for w, h in seen} >= {
        (w, h) for w in ("w1", "w2") for h in (0, H, 2 * H, 3 * H)
    }
    closed = {k for k in claims if k[1] < hour0 + 4 * H}  # WORKERS' clock stops at 4 h 5 m
    assert closed <= seen, closed - seen  # every claim of a closed hour is in a rollup


async def _first_job_event_at(log: Any, cut_s: float) -> int:
    """The JOB_EVENTS sequence of the first event at or after `cut_s` (event time)."""
    js, name = log.js, log.settings.streams.job_events
    seq = 1
    while True:
        msg = await js.get_msg(name, seq=seq)
        if decode(msg.data).time >= log.at(cut_s):
            return seq
        seq += 1


def test_only_rollups_of_hours_that_start_before_the_cut_are_used_once_each_in_hour_order() -> None:
    def ev(wid: str, hour: int, tier: str = "full") -> WorkerRollup:
        return WorkerRollup(
            worker_id=wid, hour=hour, interval_s=5.0, origin=0.0, first_slot=0, lo=0, top=1,
            bits="", healthy_slots=0, total_slots=0, tier=tier,
        )  # fmt: skip

    cut = datetime.fromtimestamp(3 * H, UTC)
    got = before_cut([ev("b", 2 * H), ev("a", 2 * H), ev("a", H), ev("a", H, "none"),
                      ev("a", 3 * H)], cut)  # fmt: skip
    assert [(e.worker_id, e.hour, e.tier) for e in got] == [
        ("a", H, "full"), ("a", 2 * H, "full"), ("b", 2 * H, "full")
    ]  # fmt: skip
    assert len(before_cut([ev("a", 3 * H)], None)) == 1
    assert before_cut([ev("a", 3 * H)], cut) == []  # the retained log starts that hour
    assert len(before_cut([ev("a", 2 * H)], cut - timedelta(seconds=1))) == 1  # its purged part


def test_a_rollup_whose_bitmap_does_not_decode_is_skipped_and_counted() -> None:
    def ev(hour: int, bits: str) -> WorkerRollup:
        return WorkerRollup(
            worker_id="w1", hour=hour, interval_s=5.0, origin=0.0, first_slot=0, lo=0,
            top=hour // 5 + 719, bits=bits, healthy_slots=0, total_slots=0, tier="full",
        )  # fmt: skip

    fold = Fold(Subjects())
    until = fold_rollups(fold, [ev(0, "not a bitmap!"), ev(H, encode_bits((1 << 720) - 1))])
    assert fold.counts["invalid"] == 1
    assert until == {"w1": datetime.fromtimestamp(2 * H, UTC)}
    assert fold.workers["w1"].tier == "full" and fold.clock == until["w1"]


async def test_a_replay_to_a_time_and_one_from_an_archive_read_the_rollups_too(
    log, nc, bus, make_store, tmp_path
) -> None:
    hour0 = (int(datetime.now(UTC).timestamp()) // H - 5) * H
    log.t0 = datetime.fromtimestamp(hour0, UTC)
    s, js = log.settings, nc.jetstream()
    events = _events()
    early = [e for e in events if e[0] <= 2 * H]
    seqs = await _publish(log, early)
    proj = Projector(s, make_store(), bus)
    await proj.start()
    try:
        await proj.wait_caught_up()
        hours = await until(lambda: _published(bus, s, hour0, {0, H}))  # JOB_EVENTS is idle
        # the log at 2 h (a millisecond later: the two timestamp parsers round differently)
        mid = (await js.get_msg(s.streams.rollups, seq=hours)).time + timedelta(milliseconds=1)
        seqs += await _publish(log, events[len(early) :], len(early))
        await proj.wait_caught_up()
        await until(lambda: _published(bus, s, hour0, {0, H, 2 * H, 3 * H}))
    finally:
        await proj.stop()
    full_mid = make_store()
    await replay(s, full_mid, bus, until_time=mid)
    cut_seq = next(q for t, q in seqs if t >= 3 * H)
    await js.purge_stream(s.streams.workers, seq=cut_seq)
    part = await replay(s, make_store(), bus)
    part_mid = make_store()
    await replay(s, part_mid, bus, until_time=mid)  # every hour it reaches was purged

    at = hour0 + 2 * H  # the hour end the rollups stored by `mid` reach
    want = _views_at((await full_mid.load()).workers, at)
    assert want["w2"][0] != want["w1"][0]  # w2 was silent for 40 minutes
    assert _views_at((await part_mid.load()).workers, at) == want

    # Archived after the purge, then purged further: the archive starts at the cut, so the
    # hours before it still come from the rollups.
    archive = ArchiveDir(tmp_path / "arch", s, create=True)
    await archive_streams(s, bus, archive, now=datetime.now(UTC), before=LATER)
    await js.purge_stream(s.streams.workers, seq=cut_seq + 500)
    rebuilt = await replay(s, make_store(), bus, archive=archive)
    assert (rebuilt.positions, rebuilt.digest) == (part.positions, part.digest)
    audit = await gather(s, bus, fold_config(s), archive=archive)
    assert set(audit.rollups_until) == {"w1", "w2", "w3"}


async def _published(bus, settings, hour0: int, hours: set[int]) -> int:
    """The last ROLLUPS sequence once every worker's rollups of `hours` are there, else 0."""
    got = await all_rollups(bus, settings)
    have = {(e.worker_id, e.hour - hour0) for e in got}
    return len(got) if all((w, h) in have for w in ("w1", "w2") for h in hours) else 0
