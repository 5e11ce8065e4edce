"""A broker outage is not the workers' downtime, and `jetgrid up` brings its nats-server back.

Real nats-server processes (the test's own, so they can be stopped and killed), real workers,
a real projector. Time is scaled down: 0.05 s heartbeats, so a 3 s outage is 60 heartbeats (what
60 s is to 1 s heartbeats); over the 20 s uptime window of the first test, a skipped tick on a
busy machine (0.25% a slot) leaves a worker in tier full, the outage would not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

import httpx
import pytest

from jetgrid.coordinator.backoff import NATS_RESTART
from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import ensure_tiers_bucket
from jetgrid.natsserver import NatsServer, keep_running
from jetgrid.projections.fold import fold_config
from jetgrid.projections.runner import open_projector
from tests.delivery.test_resilience import own_settings, provision
from tests.e2e.test_tier_recovery import POLICY
from tests.helpers import patiently, until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_a_nats_restart_under_running_workers_moves_no_tier(
    own_server: NatsServer, start_worker, tmp_path
) -> None:
    policy = tmp_path / "tiers.toml"
    policy.write_text(POLICY)
    s = own_settings(own_server.url, tmp_path).replace(
        heartbeat_interval_s=0.05, uptime_windows="20s", tier_policy_file=policy
    )
    await provision(s)
    bus = await Bus.connect(s, name="test-setup")
    await ensure_tiers_bucket(bus.js, s.tiers_bucket)
    await bus.close()
    projector = await open_projector(s, fold_config(s, tick_s=0.25))
    try:
        workers = [await start_worker(settings=s, worker_id=w) for w in ("wa", "wb")]
        views = projector.fold.workers
        await until(lambda: all(views.get(w.id) and views[w.id].tier == "full" for w in workers),
                    timeout=30)  # fmt: skip
        # 80 more pings in tier full before the outage
        sent = [w.pinger.counters.sent for w in workers]
        await until(
            lambda: all(
                w.pinger.counters.sent >= n + 80 for w, n in zip(workers, sent, strict=True)
            )
        )
        before = {w: (v.tier, len(v.tier_history)) for w, v in views.items()}

        own_server.stop()  # the broker is down for everyone
        loop = asyncio.get_running_loop()
        down_at = loop.time()
        failed = [w.pinger.counters.failed for w in workers]
        # The outage is the scenario, not a measurement: 60 heartbeats long (3 s), felt by both
        # workers (a ping of each was not stored).
        await until(
            lambda: (
                loop.time() >= down_at + 60 * s.heartbeat_interval_s
                and all(w.pinger.counters.failed > n for w, n in zip(workers, failed, strict=True))
            ),
            timeout=30,
        )
        own_server.start()

        sent = [w.pinger.counters.sent for w in workers]
        more = lambda k: all(  # noqa: E731
            w.pinger.counters.sent >= n + k for w, n in zip(workers, sent, strict=True)
        )
        await until(lambda: more(100), timeout=30)
        last = {w.id: views[w.id].last_seen for w in workers}
        await until(lambda: all(views[w].last_seen > t for w, t in last.items()), timeout=10)
        after = {w: (v.tier, len(v.tier_history)) for w, v in views.items()}
        assert after == before, [views[w].tier_history for w in views]
        for w in workers:
            up = views[w.id].uptime
            assert up is not None and up.away is None  # counting again, not paused
    finally:
        await projector.close()


async def test_keep_running_restarts_a_killed_nats_server_with_back_off(
    own_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    waits: list[float] = []

    async def sleep(s: float) -> None:  # the back-off is an input: record it, do not wait
        waits.append(s)

    caplog.set_level(logging.WARNING, logger="jetgrid.nats")
    keeper = asyncio.create_task(keep_running(own_server, sleep=sleep))
    try:
        for n in (1, 2):
            pid = own_server.proc.pid
            os.kill(pid, signal.SIGKILL)
            await until(lambda p=pid: own_server.running() and own_server.proc.pid != p, timeout=20)
            nc = (await Bus.connect(own_server_settings(own_server), name="probe")).nc
            await nc.close()
            assert waits == [NATS_RESTART.delay(k) for k in range(1, n + 1)]
        lines = [r.getMessage() for r in caplog.records if r.name == "jetgrid.nats"]
        assert len(lines) == 2 and all("exited (code -9); starting it again" in x for x in lines)
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
    assert own_server.running()  # cancelling the keeper leaves the server alone


def own_server_settings(server: NatsServer):  # type: ignore[no-untyped-def]
    from jetgrid.coordinator.settings import Settings

    return Settings(nats_url=server.url)


def test_the_restart_back_off_grows_to_a_cap() -> None:
    assert [NATS_RESTART.delay(k) for k in range(1, 8)] == [0.5, 1, 2, 4, 8, 16, 30]
    assert NATS_RESTART.delay(10**6) == 30.0


async def test_jetgrid_up_restarts_its_nats_server_when_it_is_killed(tmp_path) -> None:
    from jetgrid.credentials import PID_NAME
    from jetgrid.natsserver import free_port
    from tests.e2e.test_cli import _read_until, _spawn

    data = tmp_path / "data"
    gw_port, nats_port = free_port(), free_port()
    proc = await _spawn("up", "--data-dir", str(data), "--gateway-port", str(gw_port),
                        "--nats-port", str(nats_port), "--no-auth")  # fmt: skip
    try:
        await _read_until(proc, "Ctrl-C")
        pid_file = data / PID_NAME
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        said = await _read_until(proc, "starting it again")
        assert f"nats-server on port {nats_port} exited (code -9)" in said
        await until(
            lambda: pid_file.exists() and pid_file.read_text().strip() not in ("", str(pid))
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw_port}") as http:
            try:
                r = await patiently(
                    lambda: http.post("/v1/jobs?wait=20", json={"model": "echo", "prompt": "again"})
                )
            except httpx.ConnectError:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                assert proc.stdout is not None
                rest = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
                raise AssertionError(f"the gateway is gone; `jetgrid up` said:\n{rest}") from None
            assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have stopped on its own
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
async def test_a_worker_back_under_its_id_is_judged_for_unplanned_absence_only(
    stop: str, streams, nc, start_worker, procs, tmp_path
) -> None:
    """Stopped cleanly (SIGTERM: `deregistered`) for twice the uptime window, a worker comes
    back in the tier it left in; SIGKILLed for as long, it comes back judged for the silence."""
    from tests.helpers import spawn_worker

    policy = tmp_path / "tiers.toml"
    policy.write_text(POLICY)
    s = streams.replace(heartbeat_interval_s=0.05, uptime_windows="4s", tier_policy_file=policy)
    await ensure_tiers_bucket(nc.jetstream(), s.tiers_bucket)
    projector = await open_projector(s, fold_config(s, tick_s=0.25))
    try:
        steady = await start_worker(settings=s, worker_id="steady")  # the log clock moves on
        views = projector.fold.workers
        proc = await spawn_worker(s, "vm", JETGRID_HEARTBEAT_INTERVAL_S="0.05")
        procs.append(proc)
        await until(lambda: "vm" in views and views["vm"].tier == "full", timeout=30)
        left = views["vm"].tier_history

        proc.send_signal(getattr(signal, stop))
        await asyncio.wait_for(proc.wait(), 20)
        if stop == "SIGTERM":
            await until(lambda: views["vm"].lifecycle == "deregistered")
        # twice the window passes on the log clock ("an hour" at 1 s pings over a 1 h window)
        gone = views["steady"].last_seen
        await until(lambda: (views["steady"].last_seen - gone).total_seconds() > 8, timeout=30)
        assert steady.pinger.counters.sent > 0

        proc = await spawn_worker(s, "vm", JETGRID_HEARTBEAT_INTERVAL_S="0.05")
        procs.append(proc)
        await until(lambda: views["vm"].registrations == 2 and views["vm"].pings > 0)
        back = views["vm"].pings
        await until(lambda: views["vm"].pings >= back + 5)
        if stop == "SIGTERM":
            assert views["vm"].tier == "full"
            assert views["vm"].tier_history == left  # not one change while it was away
        else:
            assert views["vm"].tier == "none"
            up = views["vm"].uptime
            assert up is not None and up.away is None
    finally:
        await projector.close()
