"""The projector against a real nats-server and real SQLite: fold, checkpoints, KV, bad input."""

from __future__ import annotations

import base64
import json

import pytest
from nats.aio.client import Client as NATS

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.settings import Settings
from jetgrid.events import INVALID, JOB_EVENTS, JOBS, WORKERS, decode
from jetgrid.projections.runner import Projector

pytestmark = pytest.mark.integration


async def _start(settings: Settings, bus: Bus, store, **kw) -> Projector:
    proj = Projector(settings, store, bus, **kw)
    await proj.start()
    return proj


async def _kv(nc: NATS, settings: Settings, wid: str) -> dict:
    kv = await nc.jetstream().key_value(settings.tiers_bucket)
    return json.loads((await kv.get(wid)).value)


async def test_folds_workers_and_jobs_and_publishes_tiers(log, nc, bus, make_store) -> None:
    await log.register("w1")
    await log.pings("w1", 1, 150)  # 150 healthy slots: past probation, uptime 100%
    await log.register("w2")
    await log.pings("w2", 1, 150, miss=set(range(10, 150, 8)))  # ~88% -> none
    await log.job("j1", "w1", 50)
    await log.job("j2", "w1", 60, outcome="failed")
    store = make_store()
    proj = await _start(log.settings, bus, store)
    try:
        await proj.wait_caught_up()
        rows = {r["worker_id"]: r for r in await store.worker_rows()}
        assert rows["w1"]["tier"] == "full" and rows["w1"]["tier_factor"] == 1.0
        assert rows["w2"]["tier"] == "none" and rows["w2"]["tier_factor"] == 0.0
        hist = [(h["n"], h["tier"]) for h in await store.tier_history("w1")]
        assert hist == [(1, "probation"), (2, "full")]
        assert await store.job_counts("w1") == {"w1": {"completed": 1, "failed": 1}}
        kv1, kv2 = await _kv(nc, log.settings, "w1"), await _kv(nc, log.settings, "w2")
        assert (kv1["tier"], kv1["factor"], kv2["tier"], kv2["factor"]) == (
            "full",
            1.0,
            "none",
            0.0,
        )
        assert kv1["observed_slots"] >= 100 and kv1["uptime"]["1h"] == pytest.approx(1.0)
        assert set(kv1) == {
            "worker_id", "tier", "factor", "uptime", "observed_slots", "since", "log_time",
            "jobs_seq",
        }  # fmt: skip
        puts = proj.stats.kv_puts
        await log.ping("w1", 150, 151)  # no tier change: no KV put
        await proj.wait_caught_up()
        assert proj.stats.kv_puts == puts
    finally:
        await proj.stop()


async def test_tier_puts_reuse_the_bucket_opened_at_start(log, bus, make_store) -> None:
    """A put per new worker, and no bucket lookup per put (a round trip each)."""
    store = make_store()
    proj = await _start(log.settings, bus, store)
    opened = 0
    key_value = bus.js.key_value

    async def counting(bucket: str):  # type: ignore[no-untyped-def]
        nonlocal opened
        opened += 1
        return await key_value(bucket)

    bus.js.key_value = counting  # type: ignore[method-assign]
    try:
        for i in range(5):
            await log.register(f"w{i}")
        await proj.wait_caught_up()
        assert proj.stats.kv_puts == 5 and opened == 0
    finally:
        bus.js.key_value = key_value  # type: ignore[method-assign]
        await proj.stop()


async def test_tier_puts_of_one_batch_are_in_flight_together(log, nc, bus, make_store) -> None:
    """A batch that changes many tiers puts them concurrently, not one round trip at a time."""
    for i in range(5):
        await log.register(f"w{i}")
    store = make_store()
    proj = await _start(log.settings, bus, store)
    try:
        await proj.wait_caught_up()
        real, flying, most = proj._kv, 0, 0

        class Counting:
            async def put(self, key: str, value: bytes) -> int:
                nonlocal flying, most
                flying += 1
                most = max(most, flying)
                try:
                    return int(await real.put(key, value))
                finally:
                    flying -= 1

        proj._kv, proj._published = Counting(), {}
        await proj._put_changed(list(proj.fold.workers.values()))
        assert most == 5 and proj._published.keys() == {f"w{i}" for i in range(5)}
        assert (await _kv(nc, log.settings, "w4"))["tier"] == "probation"
    finally:
        await proj.stop()


async def test_invalid_worker_messages_are_recorded_and_change_nothing(
    log, nc, bus, make_store
) -> None:
    s = log.settings
    await log.register("w1")
    await log.pings("w1", 1, 5)
    store = make_store()
    proj = await _start(s, bus, store)
    try:
        await proj.wait_caught_up()
        before = await store.worker_rows()
        bad = [
            await log.raw(s.subjects.worker_event("w1", "heartbeat"), b"not json"),
            await log.raw(s.subjects.worker_event("w1", "heartbeat"), b'{"specversion": "1.0"}'),
        ]
        # w2 forging a ping for w1: the subject names w1, the body says w2.
        from jetgrid.events import WorkerHeartbeat, encode

        forged = WorkerHeartbeat(worker_id="w2", n=9, healthy=True, interval_s=1.0, in_flight=0)
        bad.append(
            await log.raw(s.subjects.worker_event("w1", "heartbeat"), encode(forged, source="x"))
        )
        # A ping from far in the future would drag the log clock along.
        bad.append(await log.ping("w1", 99, 10 * 3600))
        await proj.wait_caught_up()
        assert await store.worker_rows() == before
        assert (await store.positions())[WORKERS] == bad[-1]
        sub = await nc.jetstream().subscribe(s.subjects.invalid(WORKERS), stream=s.streams(INVALID))
        records = [decode((await sub.next_msg(timeout=5)).data).event for _ in bad]
        await sub.unsubscribe()
        assert [r.seq for r in records] == bad
        assert records[0].original == b"not json" and "JSON" in records[0].reason
        assert "worker 'w1'" in records[2].reason and "'w2'" in records[2].reason
        assert "ahead of the stream" in records[3].reason
        assert base64.b64decode(records[1].original_b64) == b'{"specversion": "1.0"}'
    finally:
        await proj.stop()


async def test_every_subject_form_is_folded(log, nc, bus, make_store) -> None:
    """Priority submissions (a fifth token) and worker-said events (a fifth token) count too."""
    from jetgrid.events import JobSubmitted, encode

    s = log.settings
    for prio in ("high", "normal", "low"):
        job = JobSubmitted(job_id=f"p-{prio}", model="echo", pool="standard", prompt="x",
                           priority=prio)  # fmt: skip
        await log.raw(s.subjects.submit("standard", "echo", prio), encode(job, source="t"))
    await log.job("j1", "w1", 10)  # its claimed/started/completed end in `.w1`
    store = make_store()
    proj = await _start(s, bus, store)
    try:
        await proj.wait_caught_up()
        views = {v.job_id: v for v in await store.jobs()}
        assert {views[f"p-{p}"].priority for p in ("high", "normal", "low")} == {
            "high", "normal", "low"
        }  # fmt: skip
        assert all(views[f"p-{p}"].status == "queued" for p in ("high", "normal", "low"))
        assert views["j1"].status == "completed" and views["j1"].worker_id == "w1"
    finally:
        await proj.stop()


async def test_a_job_event_said_for_another_worker_is_recorded_and_changes_nothing(
    log, nc, bus, make_store
) -> None:
    """NATS holds a worker to its own id in the subject; the payload must name the same one."""
    from jetgrid.events import JobCompleted, encode

    s = log.settings
    await log.job("j1", "w1", 10, outcome="failed")
    forged = JobCompleted(job_id="j2", worker_id="w1", attempt=1, output="x", duration_s=0.1)
    bad = await log.raw(s.subjects.job_event("j2", "completed", "w2"), encode(forged, source="x"))
    store = make_store()
    proj = await _start(s, bus, store)
    try:
        await proj.wait_caught_up()
        assert (await store.positions())[JOB_EVENTS] == bad
        assert await store.job_counts("w1") == {"w1": {"failed": 1}}  # the forgery did not count
        sub = await nc.jetstream().subscribe(
            s.subjects.invalid(JOB_EVENTS), stream=s.streams(INVALID)
        )
        record = decode((await sub.next_msg(timeout=5)).data).event
        await sub.unsubscribe()
        assert (record.stream, record.seq) == (JOB_EVENTS, bad)
        assert "worker 'w1'" in record.reason and "worker 'w2'" in record.reason
    finally:
        await proj.stop()


async def test_duplicates_out_of_order_and_unknown_workers_by_rule(
    log, nc, bus, make_store
) -> None:
    await log.register("w1")
    await log.ping("w1", 1, 1, id="p1")
    await log.ping("w1", 1, 1, id="p1")  # the same event again (a re-publish)
    await log.ping("w1", 3, 3)
    await log.ping("w1", 2, 2)  # out of order: counts, but is not the last ping
    await log.ping("w1", 2, 2)  # the same counter again from the same boot: a duplicate
    await log.ping("ghost", 1, 2)  # never registered
    store = make_store()
    proj = await _start(log.settings, bus, store)
    try:
        await proj.wait_caught_up()
        rows = {r["worker_id"]: json.loads(r["view"]) for r in await store.worker_rows()}
        w1 = rows["w1"]
        assert (w1["pings"], w1["late_pings"], w1["last_ping"]["n"]) == (3, 1, 3)
        ghost = rows["ghost"]
        assert ghost["registered"] is False and ghost["pings"] == 1
        assert ghost["tier"] == "probation"
        assert proj.fold.counts["duplicates"] == 2
        assert (await _kv(nc, log.settings, "ghost"))["tier"] == "probation"
    finally:
        await proj.stop()


async def test_restart_resumes_from_the_checkpoint(log, nc, bus, make_store) -> None:
    await log.register("w1")
    await log.pings("w1", 1, 20)
    await log.job("j1", "w1", 5)
    store = make_store("live")
    proj = await _start(log.settings, bus, store)
    await proj.wait_caught_up()
    await proj.stop()
    await log.pings("w1", 21, 5)
    await log.job("j2", "w1", 22)
    proj = await _start(log.settings, bus, store)
    try:
        targets = await proj.wait_caught_up()
        assert proj.fold.counts["skipped"] == 0  # nothing delivered twice reached the fold
        assert await store.positions() == targets
        view = json.loads((await store.worker_row("w1"))["view"])
        assert view["pings"] == 25
        assert {j.job_id: j.status for j in await store.jobs()} == {
            "j1": "completed",
            "j2": "completed",
        }
        assert set(targets) == {WORKERS, JOBS, JOB_EVENTS}
    finally:
        await proj.stop()


async def test_missing_streams_are_a_clear_error(settings, nc, bus, make_store) -> None:
    from jetgrid.events import ConfigError

    proj = Projector(settings, make_store(), bus)
    with pytest.raises(ConfigError, match="jetgrid provision"):
        await proj.start()


async def test_the_tiers_bucket_is_provisioned_once(streams, nc) -> None:
    from jetgrid.coordinator.provision import ensure_tiers_bucket

    js = nc.jetstream()
    assert await ensure_tiers_bucket(js, streams.tiers_bucket) is True
    assert await ensure_tiers_bucket(js, streams.tiers_bucket) is False
    status = await (await js.key_value(streams.tiers_bucket)).status()
    assert status.history == 5


async def test_a_queued_job_that_ages_out_of_jobs_ends_dead(log, bus, make_store) -> None:
    from datetime import timedelta

    from jetgrid.events import JobSubmitted, encode
    from jetgrid.projections.jobs import AGED_OUT

    subj = log.settings.subjects
    sub = JobSubmitted(job_id="waits", model="echo", pool="standard", prompt="hi")
    await log.raw(subj.submit("standard", "echo"), encode(sub, source="t", id="waits",
                                                          time=log.at(0)))  # fmt: skip
    await log.job("done", "w1", 1)
    store = make_store()
    proj = await _start(log.settings, bus, store)
    try:
        await proj.wait_caught_up()
        max_age = log.settings.retention[JOBS].max_age_s
        assert await proj.end_aged_out(log.at(max_age - 1)) == 0  # a worker may still take it
        assert await proj.end_aged_out(log.at(max_age + 1)) == 0  # checked a minute ago
        assert await proj.end_aged_out(log.at(max_age + 61)) == 1
        await proj.wait_caught_up()
        views = {v.job_id: v for v in await store.jobs()}
        assert (views["waits"].status, views["waits"].error) == ("dead", AGED_OUT)
        assert views["done"].status == "completed"
        assert await proj.end_aged_out(log.at(max_age) + timedelta(days=1)) == 0  # ended
    finally:
        await proj.stop()


async def test_an_hour_rollup_is_published_once_and_folds_to_the_raw_tracker(
    log, nc, bus, make_store
) -> None:
    from jetgrid.events import Envelope, WorkerHeartbeat, WorkerRegistered
    from jetgrid.events.workers import WorkerRollup
    from jetgrid.projections import workers as wr
    from jetgrid.projections.fold import fold_config
    from jetgrid.projections.rollup import apply_rollup

    miss = set(range(100, 3500, 7))
    await log.register("w1")
    await log.pings("w1", 1, 3590, miss=miss)  # across the hour boundary inside the last hour
    end = (int(log.at(0).timestamp()) // 3600 + 1) * 3600
    store = make_store()
    proj = await _start(log.settings, bus, store)
    try:
        await proj.wait_caught_up()
    finally:
        await proj.stop()
    stream = log.settings.streams.rollups
    got = await bus.last_message(stream, log.settings.subjects.rollup("w1"))
    assert got is not None and got.headers["Nats-Msg-Id"] == f"w1:rollup:{end - 3600}"
    ev = decode(got.data).event
    assert isinstance(ev, WorkerRollup) and ev.hour == end - 3600 and ev.total_slots > 0

    # The raw pings of that hour, folded by the pure reducer, give the tracker the rollup gives.
    windows = fold_config(log.settings).windows
    reg = WorkerRegistered(worker_id="w1", pools=["standard"], models=["echo"], backend="echo",
                           concurrency=2, heartbeat_interval_s=1.0, boot_id="b1")  # fmt: skip
    view = wr.apply(None, Envelope(id="r", source="t", time=log.at(0), event=reg), windows=windows)
    for i in range(3590):
        t = log.at(1 + i)
        if i in miss or t.timestamp() >= end:
            continue
        ping = WorkerHeartbeat(worker_id="w1", n=1 + i, healthy=True, interval_s=1.0,
                               in_flight=0, boot_id="b1")  # fmt: skip
        view = wr.apply(view, Envelope(id=f"p{i}", source="t", time=t, event=ping),
                        windows=windows)  # fmt: skip
    folded = apply_rollup(None, ev, windows=windows)
    assert folded.uptime == view.uptime
    assert folded.uptime is not None and view.uptime is not None
    assert folded.uptime.windows(end) == view.uptime.windows(end)

    # A second projector over the same log publishes the same id: still one rollup stored.
    again = await _start(log.settings, bus, make_store())
    try:
        await again.wait_caught_up()
    finally:
        await again.stop()
    info = await nc.jetstream().stream_info(stream)
    assert info.state.messages == 1
