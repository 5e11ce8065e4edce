"""Replay: deterministic digests, live == replay at the same positions, kill -9 and resume."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys

import pytest
from sqlalchemy import select

from jetgrid.events import JOB_EVENTS, JOBS, WORKERS
from jetgrid.projections.replay import collector_paused, replay
from jetgrid.projections.runner import Projector
from jetgrid.projections.schema import checkpoints_t
from jetgrid.projections.store import Store

pytestmark = pytest.mark.integration


async def _history(log, workers: int = 4, pings: int = 130, jobs: int = 12) -> None:
    for w in range(workers):
        await log.register(f"w{w}")
        await log.pings(f"w{w}", 1, pings, miss=set(range(3, pings, 3 + 4 * w)))
    for j in range(jobs):
        await log.job(f"j{j}", f"w{j % workers}", 5 + j, "failed" if j % 5 == 0 else "completed")


async def test_two_replays_give_the_same_digest(log, nc, bus, make_store) -> None:
    await _history(log)
    a = await replay(log.settings, make_store(), bus)
    b = await replay(log.settings, make_store(), bus)
    assert a.digest == b.digest and a.positions == b.positions
    assert a.positions[WORKERS] == 4 * 130 + 4 - sum(
        len(range(3, 130, 3 + 4 * w)) for w in range(4)
    )
    shorter = await replay(log.settings, make_store(), bus, until_seq={WORKERS: 100})
    assert shorter.positions[WORKERS] == 100 and shorter.digest != a.digest
    again = await replay(log.settings, make_store(), bus, until_seq={WORKERS: 100})
    assert again.digest == shorter.digest


async def test_a_replay_pauses_the_cyclic_collector_and_leaves_it_as_it_found_it(
    log, nc, bus, make_store
) -> None:
    await _history(log)
    seen: list[bool] = []

    def progress(stream: str, done: int, total: int) -> None:
        seen.append(gc.isenabled())

    assert gc.isenabled()
    a = await replay(log.settings, make_store(), bus, progress=progress)
    assert seen and not any(seen) and gc.isenabled()
    gc.disable()
    try:
        b = await replay(log.settings, make_store(), bus)
        assert not gc.isenabled()  # a caller's own pause is its own
    finally:
        gc.enable()
    assert a.digest == b.digest


def test_the_collector_comes_back_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()


async def test_replay_refuses_a_database_with_read_models(log, nc, bus, make_store) -> None:
    await _history(log, workers=1, pings=3, jobs=1)
    store = make_store()
    await replay(log.settings, store, bus)
    with pytest.raises(Exception, match="fresh database"):
        await replay(log.settings, store, bus)


async def test_live_equals_replay_at_the_same_positions_while_traffic_continues(
    log, nc, bus, make_store
) -> None:
    await _history(log, workers=3, pings=40, jobs=4)
    live_store = make_store("live")
    live = Projector(log.settings, live_store, bus, batch_max=37)  # odd batches on purpose
    await live.start()

    async def traffic() -> None:
        for k in range(40, 400):
            for w in range(3):
                if (k + w) % 7:
                    await log.ping(f"w{w}", k, k)
            if k % 10 == 0:
                await log.job(f"late{k}", f"w{k % 3}", k)

    feeding = asyncio.create_task(traffic())
    try:
        await live.wait_for({WORKERS: 300, JOB_EVENTS: 14})
        await live.stop()  # mid-traffic: its database holds some positions P
        positions = await live_store.positions()
        live_digest = await live_store.digest()
        assert 0 < positions[WORKERS]
        mid = await replay(log.settings, make_store(), bus, until_seq=positions)
        assert mid.positions == positions
        assert mid.digest == live_digest
        live = Projector(log.settings, live_store, bus, batch_max=500)
        await live.start()
        await feeding
        await live.wait_caught_up()
        await live.stop()
        full = await replay(log.settings, make_store(), bus)
        assert full.positions == await live_store.positions()
        assert full.digest == await live_store.digest()
    finally:
        feeding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeding
        await live.stop()


@pytest.mark.slow
async def test_projector_killed_mid_batch_resumes_to_the_clean_replay_digest(
    log, nc, bus, make_store, tmp_path
) -> None:
    s = log.settings
    for w in range(10):
        await log.register(f"w{w}")
        await log.pings(f"w{w}", 1, 700, miss=set(range(5, 700, 11 + w)))
    for j in range(30):
        await log.job(f"j{j}", f"w{j % 10}", 10 + j)
    db = tmp_path / "killed.db"
    env = {
        **os.environ,
        "JETGRID_NATS_URL": s.nats_url,
        "JETGRID_SUBJECT_PREFIX": s.subject_prefix,
        "JETGRID_STREAM_PREFIX": s.stream_prefix,
        "JETGRID_DB_URL": f"sqlite+aiosqlite:///{db}",
    }
    proc = await asyncio.create_subprocess_exec(
        os.path.join(os.path.dirname(sys.executable), "jetgrid"), "projector", "--batch-max", "150",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    store = Store(f"sqlite+aiosqlite:///{db}")
    total = (await nc.jetstream().stream_info(s.streams.workers)).state.last_seq
    try:
        seq = 0
        for _ in range(600):
            with contextlib.suppress(Exception):
                async with store.engine.connect() as conn:
                    res = await conn.execute(
                        select(checkpoints_t.c.seq).where(checkpoints_t.c.stream == WORKERS)
                    )
                    seq = res.scalar() or 0
            if seq > 0:
                break
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        killed_at = (await store.positions())[WORKERS]
        assert 0 < killed_at < total, "the projector was not killed mid-log"
        live = Projector(s, store, bus)
        await live.start()
        await live.wait_caught_up()
        await live.stop()
        clean = await replay(s, make_store(), bus)
        assert clean.positions == await store.positions()
        assert {JOBS, JOB_EVENTS} <= set(clean.positions)
        assert clean.digest == await store.digest()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await store.close()


async def _cli(settings, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "JETGRID_NATS_URL": settings.nats_url,
        "JETGRID_SUBJECT_PREFIX": settings.subject_prefix,
        "JETGRID_STREAM_PREFIX": settings.stream_prefix,
    }
    proc = await asyncio.create_subprocess_exec(
        os.path.join(os.path.dirname(sys.executable), "jetgrid"), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.slow
async def test_replay_command_prints_the_digest(log, nc, bus, make_store, tmp_path) -> None:
    await _history(log, workers=2, pings=30, jobs=3)
    want = await replay(log.settings, make_store(), bus, until_seq={WORKERS: 40, JOBS: 2})
    rc, out, err = await _cli(
        log.settings, "replay", "--db", str(tmp_path / "a.db"), "--until-seq", "WORKERS=40,JOBS=2"
    )
    assert rc == 0, err
    assert f"digest sha256:{want.digest}" in out and "WORKERS=40" in out
    rc, out, _ = await _cli(log.settings, "replay", "--db", str(tmp_path / "a.db"))
    assert rc == 1 and "exists" in out + _
    rc, _, err = await _cli(
        log.settings, "replay", "--db", str(tmp_path / "b.db"), "--until-seq", "NOPE=3"
    )
    assert rc == 2 and "names no stream" in err
