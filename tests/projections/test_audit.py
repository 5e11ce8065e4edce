"""The audit's pure core: tier at a time, factor in force with grace, the budget check, latency."""

from __future__ import annotations

import pytest

from jetgrid.projections.audit import (
    BudgetRule,
    Claim,
    Span,
    WorkerInput,
    factor_in_force,
    latency_stats,
    over_budget,
    report_worker,
    tier_at,
)

TL = [Span(0.0, "probation", 0.5), Span(100.0, "full", 1.0), Span(200.0, "none", 0.0)]


@pytest.mark.parametrize(
    ("t", "tier"),
    [(-1.0, "unseen"), (0.0, "probation"), (99.9, "probation"), (100.0, "full"), (250.0, "none")],
)
def test_tier_at(t: float, tier: str) -> None:
    assert tier_at(TL, t).tier == tier


@pytest.mark.parametrize(
    ("t", "factor", "tier"),
    [
        (150.0, 1.0, "full"),
        (205.0, 1.0, "none"),  # 5 s after the drop: the worker may not know yet
        (209.9, 1.0, "none"),
        (210.0, 0.0, "none"),  # grace_s after the drop, the drop counts
        (105.0, 1.0, "full"),  # a rise counts at once
    ],
)
def test_factor_in_force_takes_the_best_within_the_grace(
    t: float, factor: float, tier: str
) -> None:
    got, span = factor_in_force(TL, t, BudgetRule(grace_s=10.0))
    assert (got, span.tier) == (factor, tier)


def _claims(*times: float) -> list[Claim]:
    return [Claim(t, f"j{i}") for i, t in enumerate(times)]


@pytest.mark.parametrize(
    ("rule", "times", "flagged"),
    [
        # Unlimited base rate: only claims in a zero-factor tier (past the grace) are flagged.
        (BudgetRule(), (10, 150, 205, 211, 300), ["j3", "j4"]),
        # rate 1/s, burst 1 (+1 slack = 2 tokens): full tier refills 1 token/s.
        (BudgetRule(rate=1.0), (150, 150, 150, 150.5, 152), ["j2", "j3"]),
        # probation refills at 0.5/s: two tokens at once, then one per 2 s.
        (BudgetRule(rate=1.0), (50, 50, 50, 51, 52), ["j2", "j3"]),
        # a worker that ignores a zero factor is caught on every claim, bucket or not
        (BudgetRule(rate=5.0, burst=10), (215, 216, 300), ["j0", "j1", "j2"]),
        # no tier history at all: the probation default (0.5) applies, nothing flagged at rate 0
        (BudgetRule(), (1, 2, 3), []),
    ],
)
def test_over_budget(rule: BudgetRule, times: tuple[float, ...], flagged: list[str]) -> None:
    timeline = TL if times != (1, 2, 3) else []
    assert [v.job_id for v in over_budget(timeline, _claims(*times), rule)] == flagged


def test_an_honest_worker_at_its_rate_is_never_flagged() -> None:
    # 0.5 jobs/s in probation then 1/s in full, exactly at the budgeted pace.
    times = [*(t * 2.0 for t in range(50)), *(100.0 + t for t in range(100))]
    assert over_budget(TL[:2], _claims(*times), BudgetRule(rate=1.0)) == []


def test_latency_stats_nearest_rank() -> None:
    assert latency_stats([]) == {
        "n": 0,
        "min": None,
        "avg": None,
        "p50": None,
        "p99": None,
        "max": None,
    }
    s = latency_stats(float(x) for x in range(1, 101))
    assert (s["n"], s["min"], s["p50"], s["p99"], s["max"], s["avg"]) == (
        100,
        1.0,
        50.0,
        99.0,
        100.0,
        50.5,
    )


def test_report_restricts_to_the_range_and_counts_per_tier() -> None:
    w = WorkerInput(
        "w1",
        TL,
        _claims(50, 150, 160, 250),
        {"1h": 0.5},
        [(50.5, "completed", 0.5), (150.5, "completed", 1.5), (250.5, "failed", 0.7)],
    )
    r = report_worker(w, BudgetRule(), start=120.0, end=300.0)
    assert r["claims"] == 3
    assert r["claims_per_tier"] == {"full": 2, "none": 1}
    assert r["over_budget"] == 1 and r["violations"][0]["job_id"] == "j3"
    assert [e["tier"] for e in r["tier_timeline"]] == ["full", "none"]
    assert r["outcomes"] == {"completed": 1, "failed": 1}
    assert r["latency_s"]["max"] == 1.5


def test_fallback_claims_count_as_taken_for_want_of_better_not_as_violations() -> None:
    # In tier none (factor 0) from 200 s: a plain claim there is a violation, a claim flagged
    # as a fallback take is counted apart and spends no token.
    claims = [
        Claim(250.0, "plain"),
        Claim(260.0, "spare1", fallback=True),
        Claim(270.0, "spare2", fallback=True),
    ]
    r = report_worker(WorkerInput("w1", TL, claims), BudgetRule())
    assert r["claims"] == 3 and r["claims_per_tier"] == {"none": 3}
    assert r["over_budget"] == 1 and r["violations"][0]["job_id"] == "plain"
    assert r["taken_for_want_of_better"] == 2
    # With a base rate: fallback takes do not drain the bucket the budgeted claims use.
    rule = BudgetRule(rate=1.0, burst=1.0, slack=0.0)
    full = [Span(0.0, "full", 1.0)]
    spare = [Claim(10.0 + i / 100, f"s{i}", fallback=True) for i in range(5)]
    assert over_budget(full, [*spare, Claim(10.5, "budgeted")], rule) == []
    assert report_worker(WorkerInput("w1", full, spare), rule)["taken_for_want_of_better"] == 5
