"""Projector snapshots: published periodically with their positions; a fresh projector starts
from the newest one and reaches the digest of a full replay; a snapshot it cannot trust is
refused with the reason and it replays from sequence 1."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest

from jetgrid.coordinator.provision import ensure_snapshot_bucket
from jetgrid.events import JOB_EVENTS, JOBS, WORKERS
from jetgrid.projections import ended, snapshot
from jetgrid.projections.errors import SnapshotError
from jetgrid.projections.fold import fold_config
from jetgrid.projections.replay import replay
from jetgrid.projections.runner import Projector

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("since", "now_s", "every", "every_s", "due"),
    [(0, 10**6, 1, 1.0, False), (99, 0, 100, 0.0, False), (100, 0, 100, 0.0, True),
     (5, 3599, 0, 3600.0, False), (5, 3600, 0, 3600.0, True), (5, 10**6, 0, 0.0, False),
     (5, 3600, 100, 3600.0, True)],
)  # fmt: skip
def test_a_snapshot_is_due_by_count_or_by_stream_time(
    since: int, now_s: float, every: int, every_s: float, due: bool
) -> None:
    assert snapshot.due(since, T0 + timedelta(seconds=now_s), T0, every, every_s) is due


def _body(settings, config, **changes) -> bytes:
    snap = snapshot.Snapshot({WORKERS: 1}, "d", {"workers": {"columns": [], "rows": []}})
    body = json.loads(gzip.decompress(snapshot.encode(settings, config, snap)))
    body.update(changes)
    return gzip.compress(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("change", "says"),
    [({"format": "other/9"}, "has format 'other/9'"),
     ({"stream_prefix": "OTHER_"}, "belongs to the deployment with stream_prefix 'OTHER_'"),
     ({"meta": {"schema_version": "1"}}, "was built under config"),
     ({"positions": None}, "is incomplete"),
     ({}, "is incomplete")],  # only one of the tables
)  # fmt: skip
def test_foreign_or_incomplete_snapshots_are_refused(settings, change, says) -> None:
    config = fold_config(settings)
    with pytest.raises(SnapshotError, match=says):
        snapshot.decode(_body(settings, config, **change), settings, config)
    with pytest.raises(SnapshotError, match="does not decode"):
        snapshot.decode(b"not gzip", settings, config)


async def _history(log, start: int, workers: int = 3, pings: int = 50, jobs: int = 5) -> None:
    for w in range(workers):
        if start == 0:
            await log.register(f"w{w}")
        await log.pings(f"w{w}", start + 1, pings, miss=set(range(2, pings, 4 + w)))
    for j in range(jobs):
        await log.job(f"j{start}-{j}", f"w{j % workers}", start + 3 + j)


async def _fresh(s, bus, store) -> Projector:
    proj = Projector(s, store, bus, batch_max=40)
    await proj.start()
    await proj.wait_caught_up()
    await proj.stop()
    return proj


async def test_a_fresh_projector_starts_from_the_newest_snapshot_after_retention(
    log, nc, bus, make_store
) -> None:
    js = nc.jetstream()
    s = log.settings.replace(snapshot_every=60)
    await ensure_snapshot_bucket(js, s.snapshot_bucket)
    await _history(log, 0)
    first = await _fresh(s, bus, make_store("first"))
    assert first.stats.snapshots >= 2 and first.stats.restored is None
    await _history(log, 100)  # the log moves on after the last snapshot
    full = await replay(s, make_store(), bus)

    obs = await js.object_store(s.snapshot_bucket)
    newest = snapshot.decode((await obs.get(snapshot.OBJECT)).data, s, fold_config(s))
    assert 0 < newest.positions[WORKERS] < full.positions[WORKERS]
    for logical, stream in ((WORKERS, s.streams.workers), (JOBS, s.streams.jobs),
                            (JOB_EVENTS, s.streams.job_events)):  # fmt: skip
        await js.purge_stream(stream, seq=newest.positions[logical] + 1)  # as retention would
    assert (await replay(s, make_store(), bus)).digest != full.digest

    second = await _fresh(s.replace(snapshot_every=0, snapshot_every_s=0), bus, make_store("2"))
    assert second.stats.restored == newest.positions and second.stats.refused is None
    assert second.stats.messages < full.messages
    assert await second.store.positions() == full.positions
    assert await second.store.digest() == full.digest


@pytest.mark.parametrize(
    ("damage", "says"),
    [("garbage", "does not decode"), ("foreign", "belongs to the deployment"),
     ("rows", "do not match its digest")],
)  # fmt: skip
async def test_a_corrupt_or_foreign_snapshot_is_refused_and_the_projector_replays(
    log, nc, bus, make_store, damage, says
) -> None:
    js = nc.jetstream()
    s = log.settings
    await ensure_snapshot_bucket(js, s.snapshot_bucket)
    await _history(log, 0, workers=2, pings=20, jobs=3)
    full = await replay(s, make_store(), bus)
    store = make_store()
    await replay(s, store, bus)
    good = snapshot.Snapshot(full.positions, full.digest, (await store.dump())[0])
    if damage == "garbage":
        data = b"\x1f\x8bnot a snapshot"
    elif damage == "foreign":
        data = snapshot.encode(s.replace(subject_prefix="other"), fold_config(s), good)
    else:
        good.tables["jobs"]["rows"][0][1] = "failed"
        data = snapshot.encode(s, fold_config(s), good)
    await (await js.object_store(s.snapshot_bucket)).put(snapshot.OBJECT, data)

    proj = await _fresh(s, bus, make_store("fresh"))
    assert proj.stats.restored is None and says in (proj.stats.refused or "")
    assert await proj.store.digest() == full.digest


async def test_a_snapshot_leaves_out_old_ended_jobs_and_a_restore_keeps_digest_and_counts(
    log, nc, bus, make_store, monkeypatch
) -> None:
    monkeypatch.setattr(ended, "KEEP_ENDED", 2)
    monkeypatch.setattr(ended, "KEEP_ENDED_S", 60.0)
    s, config = log.settings, fold_config(log.settings)
    await ensure_snapshot_bucket(nc.jetstream(), s.snapshot_bucket)
    for w in ("w1", "w2"):
        await log.register(w)
    for i in range(8):
        await log.job(f"old{i}", f"w{1 + i % 2}", 10 + i, "failed" if i % 3 == 0 else "completed")
    await log.pings("w1", 1, 300)  # the worker log clock reaches 300 s: cut-off 240 s
    await log.job("recent", "w2", 290)

    async def caught_up(store, snapshots: bool) -> Projector:
        proj = Projector(s, store, bus, config, publish=False, snapshots=snapshots)
        await proj.start()
        await proj.wait_caught_up()
        await proj.stop()
        return proj

    first = await caught_up(make_store("first"), False)
    snap = await snapshot.publish(bus, first.store, s, config)
    assert [r[0] for r in snap.tables["jobs"]["rows"]] == ["old7", "recent"]
    second = await caught_up(make_store("second"), True)
    assert second.stats.restored == snap.positions
    assert len(await second.store.jobs()) == 2  # bounded by what is live and recent
    full = await replay(s, make_store(), bus)
    assert await first.store.digest() == await second.store.digest() == full.digest
    counts = await first.store.job_counts()
    assert counts == {"w1": {"completed": 2, "failed": 2}, "w2": {"completed": 4, "failed": 1}}
    assert await second.store.job_counts() == counts
    assert await second.store.job_counts("w2") == {"w2": counts["w2"]}

    await log.job("later", "w1", 400)  # the log moves on; both follow it
    await log.pings("w1", 301, 200)
    for proj in (first, second):
        await caught_up(proj.store, False)
    full = await replay(s, make_store(), bus)
    assert await first.store.digest() == await second.store.digest() == full.digest
