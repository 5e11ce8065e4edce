"""The whole loop, for real: four simulated workers ping, the projector turns their pings into
tiers in the KV bucket, the workers budget their pulls by those tiers, and over a saturated
queue the share of jobs each completes follows the tier factors (1.0 : 0.5 : 0.1 : 0)."""

from __future__ import annotations

import pytest

from jetgrid.coordinator.provision import ensure_tiers_bucket
from jetgrid.demo import Fleet, FleetOptions, expected_shares
from jetgrid.projections.fold import fold_config
from jetgrid.projections.runner import open_projector
from tests.helpers import until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIERS = ["full", "half", "tenth", "none"]


async def test_job_shares_follow_the_tier_factors(streams, nc, capsys) -> None:
    # 0.1 s pings: probation (100 slots) ends after 10 s, when 99.5% reads 99-100 of 100 slots
    # (full) and 98% reads 98 (half); the simulated schedules spread their misses evenly.
    # 5 pulls/s at factor 1, a rate a starved machine still keeps (10/s once fell behind).
    s = streams.replace(heartbeat_interval_s=0.1, uptime_windows="30s")
    await ensure_tiers_bucket(nc.jetstream(), s.tiers_bucket)
    projector = await open_projector(s, fold_config(s, tick_s=0.5))
    fleet = Fleet(s, FleetOptions(pull_rate=5.0, pull_burst=1.0, backlog=30, job_latency_s=0.0,
                                  fail_share=0.0, transient_share=0.0))  # fmt: skip
    try:
        await fleet.start()
        await until(lambda: [w.gate.tier for w in fleet.workers] == TIERS, timeout=45)
        base = {w.id: fleet.stats[w.id].succeeded for w in fleet.workers}
        done = lambda: sum(fleet.stats[w].succeeded - n for w, n in base.items())  # noqa: E731
        await until(lambda: done() >= 160, timeout=40)
        tiers = [w.gate.tier for w in fleet.workers]
        factors = [w.gate.factor for w in fleet.workers]
        counts = [fleet.stats[w.id].succeeded - base[w.id] for w in fleet.workers]
    finally:
        await fleet.stop()
        await projector.close()

    total = sum(counts)
    expected = expected_shares(factors)
    with capsys.disabled():
        print("\nsimulated uptime  tier   factor  expected share  actual share  jobs")
        rows = zip(fleet.options.uptimes, tiers, factors, expected, counts, strict=True)
        for u, t, f, e, c in rows:
            print(f"{u:>16.1%}  {t:<5}  {f:>6g}  {e:>14.1%}  {c / total:>12.1%}  {c:>4}")
    assert tiers == TIERS and factors == [1.0, 0.5, 0.1, 0.0]
    assert counts[3] == 0  # factor 0: nothing at all
    for e, c in zip(expected[:3], counts[:3], strict=True):
        assert abs(c / total - e) < 0.06, (counts, expected)
