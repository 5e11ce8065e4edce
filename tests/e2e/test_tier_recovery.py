"""A worker in the lowest tier pulls nothing, keeps pinging, and climbs back as its uptime
recovers: real worker, real projector, real KV bucket."""

from __future__ import annotations

import pytest

from jetgrid.coordinator.provision import ensure_tiers_bucket
from jetgrid.events import JobSubmitted, encode
from jetgrid.projections.fold import fold_config
from jetgrid.projections.runner import open_projector
from tests.helpers import until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POLICY = """
[tiers]
probation_slots = 20
[[tiers.tier]]
name = "full"
min_uptime = 0.99
factor = 1.0
[[tiers.tier]]
name = "half"
min_uptime = 0.95
factor = 0.5
[[tiers.tier]]
name = "tenth"
min_uptime = 0.90
factor = 0.1
[[tiers.tier]]
name = "none"
min_uptime = 0.0
factor = 0.0
"""


async def test_a_worker_at_factor_0_climbs_back_when_its_pings_recover(
    streams, nc, start_worker, outcomes, tmp_path
) -> None:
    policy = tmp_path / "tiers.toml"
    policy.write_text(POLICY)
    # 0.05 s pings over a 4 s window: 80 slots, so recovery takes seconds, not an hour.
    s = streams.replace(
        heartbeat_interval_s=0.05, uptime_windows="4s", tier_policy_file=policy, pull_rate=20.0
    )
    await ensure_tiers_bucket(nc.jetstream(), s.tiers_bucket)
    projector = await open_projector(s, fold_config(s, tick_s=0.25))
    try:
        w = await start_worker(settings=s, worker_id="flaky", simulate_uptime=0.8)
        seen: list[str] = []
        await until(lambda: w.tier_watch is not None, timeout=5)
        assert w.tier_watch is not None
        on_tier = w.tier_watch.on_update

        def record(update):  # the tiers the worker is told, in order
            on_tier(update)
            if not seen or seen[-1] != w.gate.tier:
                seen.append(w.gate.tier)

        w.tier_watch.on_update = record
        await until(lambda: w.gate.tier == "none", timeout=20)
        job = JobSubmitted(job_id="waits", model="echo", pool="standard", prompt="later")
        await nc.jetstream().publish(
            s.subjects.submit("standard", "echo"), encode(job, source="test", id="waits")
        )
        pings = w.pinger.counters.sent
        await until(lambda: w.pinger.counters.sent >= pings + 10, timeout=10)
        assert not outcomes.events["waits"]  # factor 0: not taken, while it pings on

        fixed_at = len(seen) - 1  # while flaky, the tier may bounce between none and tenth
        w.pinger.schedule = None  # the machine is fixed: every ping healthy from now on
        await until(lambda: w.gate.tier == "full", timeout=30)
        await outcomes.wait_terminal("waits")
    finally:
        await projector.close()
    climb = seen[fixed_at:]
    assert climb[-1] == "full"
    assert climb == sorted(climb, key=["none", "tenth", "half", "full"].index)
    claimed = outcomes.claims("waits")[0]
    assert claimed.tier_factor and claimed.tier_factor > 0
