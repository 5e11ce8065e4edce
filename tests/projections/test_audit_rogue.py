"""The audit catches a worker that ignores its tier: a real worker pulling while in `none`."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from jetgrid.events import JobSubmitted, encode
from jetgrid.projections.audit import BudgetRule, report_worker
from jetgrid.projections.audit_log import gather
from jetgrid.projections.fold import fold_config

pytestmark = pytest.mark.integration


async def test_audit_flags_the_rogue_worker_and_not_the_honest_one(
    log, nc, bus, start_worker, outcomes
) -> None:
    s = log.settings.replace(heartbeat_interval_s=1.0)
    # The rogue's history: an hour ago it answered every other ping for five minutes, then went
    # silent, so its 1 h uptime is a few percent: tier `none`, factor 0.
    await log.register("rogue")
    await log.pings("rogue", 1, 300, miss=set(range(0, 300, 2)))
    # An honest worker: healthy for the last 150 s, so `full`; it takes three jobs while full.
    await log.register("honest", t=3440)
    await log.pings("honest", 3450, 148)
    for k in range(3):
        await log.job(f"h{k}", "honest", 3560 + k, pool="fast")  # not the rogue's pool
    # The rogue comes back with a worker that pulls whatever its tier says (this agent does not
    # read the tiers bucket at all), and takes real jobs.
    await start_worker("echo", worker_id="rogue", settings=s)
    ids = [f"r{k}" for k in range(4)]
    for job_id in ids:
        job = JobSubmitted(job_id=job_id, model="echo", pool="standard", prompt="hi")
        await nc.jetstream().publish(
            s.subjects.submit("standard", "echo"), encode(job, source="t", id=job_id)
        )
    await outcomes.wait_terminal(*ids)

    audit = await gather(s, bus, fold_config(s))
    reports = {w.worker_id: report_worker(w, BudgetRule()) for w in audit.workers()}
    rogue, honest = reports["rogue"], reports["honest"]
    assert rogue["claims_per_tier"] == {"none": 4}
    assert rogue["over_budget"] == 4
    assert {v["job_id"] for v in rogue["violations"]} == set(ids)
    assert rogue["uptime"]["1h"] < 0.1
    assert [e["tier"] for e in rogue["tier_timeline"]] == ["probation", "none"]
    assert rogue["outcomes"] == {"completed": 4} and rogue["latency_s"]["n"] == 4
    assert honest["over_budget"] == 0 and honest["claims_per_tier"] == {"full": 3}

    # The same through the command line, which exits 2 on a violation when asked to.
    proc = await asyncio.create_subprocess_exec(
        os.path.join(os.path.dirname(os.sys.executable), "jetgrid"), "audit", "--json",
        "--fail-on-violation",
        env={**os.environ, "JETGRID_NATS_URL": s.nats_url, "JETGRID_SUBJECT_PREFIX":
             s.subject_prefix, "JETGRID_STREAM_PREFIX": s.stream_prefix},
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 2
    by_id = {w["worker_id"]: w for w in json.loads(out)["workers"]}
    assert by_id["rogue"]["over_budget"] == 4 and by_id["honest"]["over_budget"] == 0
