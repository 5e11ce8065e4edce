"""The usage fold (projections.usage) and price tables (projections.prices), as plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jetgrid.events import (
    ConfigError,
    Envelope,
    GpuTelemetry,
    JobCompleted,
    JobDead,
    JobRetrying,
    JobStarted,
    JobSubmitted,
    WorkerHeartbeat,
    WorkerRegistered,
)
from jetgrid.projections.prices import parse_prices
from jetgrid.projections.usage import UsageFold, totals

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def env(s: float, event: Any, seq: int = 1) -> Envelope:
    return Envelope(id=f"e{s}", source="test", time=at(s), event=event, seq=seq)


def ping(wid: str, s: float, *powers: float | None) -> Envelope:
    gpus = [GpuTelemetry(index=i, power_w=p) for i, p in enumerate(powers)]
    return env(s, WorkerHeartbeat(worker_id=wid, n=0, healthy=True, interval_s=1, in_flight=0,
                                  gpus=gpus))  # fmt: skip


def registered(wid: str, s: float, concurrency: int) -> Envelope:
    return env(s, WorkerRegistered(worker_id=wid, pools=["p"], models=["m"], backend="echo",
                                   concurrency=concurrency, heartbeat_interval_s=1))  # fmt: skip


def submitted(job: str, s: float, key: str | None = "alice", model: str = "m") -> Envelope:
    return env(s, JobSubmitted(job_id=job, model=model, pool="p", prompt="x", submitter=key), 7)


def started(job: str, wid: str, s: float, attempt: int = 1) -> list[Envelope]:
    return [env(s, JobStarted(job_id=job, worker_id=wid, attempt=attempt))]


def completed(job: str, wid: str, s: float, attempt: int = 1, tokens: int = 0) -> Envelope:
    return env(s, JobCompleted(job_id=job, worker_id=wid, attempt=attempt, output="ok",
                               usage={"total_tokens": tokens}, duration_s=1))  # fmt: skip


def fold(*items: Envelope | list[Envelope]) -> UsageFold:
    f = UsageFold()
    for item in items:
        for e in item if isinstance(item, list) else [item]:
            f.apply(e)
    return f


def test_a_run_is_run_time_times_the_gpus_over_the_concurrency() -> None:
    f = fold(registered("w", 0, 2), ping("w", 0, 100.0, 100.0), submitted("j", 0),
             started("j", "w", 10), completed("j", "w", 40, tokens=30))  # fmt: skip
    (run,) = f.runs(at(0), at(60))
    assert (run.key, run.model, run.worker_id, run.run_s) == ("alice", "m", "w", 30.0)
    assert run.gpu_s == 30.0 * 2 / 2 and run.tokens == 30
    assert run.energy_j == 200.0 * 30  # alone on the worker: all its power


def test_energy_is_shared_among_concurrent_runs_and_follows_each_ping() -> None:
    f = fold(registered("w", 0, 2), ping("w", 0, 100.0), ping("w", 20, 300.0),
             submitted("a", 0), submitted("b", 0, key="bob"),
             started("a", "w", 10), started("b", "w", 15),
             completed("a", "w", 30), completed("b", "w", 40))  # fmt: skip
    runs = {r.job_id: r for r in f.runs(at(0), at(60))}
    # a: 10-15 alone at 100 W, 15-20 shared at 100 W, 20-30 shared at 300 W
    assert runs["a"].energy_j == pytest.approx(500 + 250 + 1500)
    # b: 15-20 shared at 100 W, 20-30 shared at 300 W, 30-40 alone at 300 W
    assert runs["b"].energy_j == pytest.approx(250 + 1500 + 3000)
    assert runs["a"].gpu_s == 20 * 1 / 2


def test_energy_is_unknown_without_power_and_gpu_seconds_zero_without_gpus() -> None:
    f = fold(ping("w", 0, None), started("j", "w", 1), completed("j", "w", 3),
             ping("cpu", 0), started("k", "cpu", 1), completed("k", "cpu", 2))  # fmt: skip
    runs = {r.job_id: r for r in f.runs(at(0), at(10))}
    assert runs["j"].energy_j is None and runs["j"].gpu_s == 2.0
    assert runs["k"].gpu_s == 0.0 and runs["k"].run_s == 1.0 and runs["k"].key == "-"


def test_each_attempt_is_a_run_and_a_run_without_an_outcome_is_not_counted() -> None:
    f = fold(ping("w", 0, 50.0), submitted("j", 0),
             started("j", "w", 1), env(4, JobRetrying(job_id="j", worker_id="w", attempt=1,
                                                      reason="stalled", delay_s=1, stall_s=3)),
             started("j", "x", 6, attempt=2),  # x dies: no outcome
             started("j", "w", 20, attempt=3), completed("j", "w", 22, attempt=3),
             env(23, JobDead(job_id="j", attempts=3, jobs_seq=7)))  # fmt: skip
    runs = f.runs(at(0), at(60))
    assert [(r.attempt, r.worker_id, r.run_s) for r in runs] == [(1, "w", 3.0), (3, "w", 2.0)]


def test_a_run_belongs_to_the_period_its_end_falls_in() -> None:
    f = fold(started("j", "w", 50), completed("j", "w", 70))
    assert f.runs(at(0), at(60)) == [] and len(f.runs(at(60), at(120))) == 1
    assert f.runs(at(70), at(80))[0].run_s == 20.0  # whole, from its start before the period
    assert f.runs(at(0), at(70)) == []  # the end is exclusive


def test_totals_by_key_model_and_worker() -> None:
    f = fold(ping("w", 0, 10.0), ping("v", 0, 10.0),
             submitted("a", 0), submitted("b", 0, key="bob", model="n"), submitted("c", 0),
             started("a", "w", 0), completed("a", "w", 1, tokens=5),
             started("b", "v", 0), completed("b", "v", 2, tokens=7),
             started("c", "v", 3), completed("c", "v", 4, tokens=1))  # fmt: skip
    runs = f.runs(at(0), at(10))
    by_key = {t.name: (t.jobs, t.run_s, t.tokens) for t in totals(runs, "key")}
    assert by_key == {"alice": (2, 2.0, 6), "bob": (1, 2.0, 7)}
    assert [t.name for t in totals(runs, "model")] == ["m", "n"]
    assert {t.name: t.runs for t in totals(runs, "worker")} == {"v": 2, "w": 1}


def test_a_price_table_applies_per_model_to_any_period() -> None:
    prices = parse_prices(
        'currency = "USD"\nper_gpu_second = 0.01\nper_kj = 1.0\n'
        '[model."n"]\nper_1k_tokens = 100.0\n'
    )
    f = fold(ping("w", 0, 1000.0), submitted("a", 0), submitted("b", 0, model="n"),
             started("a", "w", 0), completed("a", "w", 10, tokens=10),
             started("b", "w", 20), completed("b", "w", 30, tokens=10))  # fmt: skip
    (total,) = totals(f.runs(at(0), at(60)), "key")
    # a: 10 gpu_s * 0.01 + 10 kJ * 1; b: the same plus 10 tokens at 100 per 1k
    assert prices.cost(total) == pytest.approx(2 * (0.1 + 10.0) + 1.0)
    assert prices.currency == "USD" and prices.rate("n").per_kj == 1.0


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("per_gpu_second = -1", "per_gpu_second has value -1"),
        ("per_second = 1", "unknown price 'per_second'"),
        ("per_kj = 'x'", "per_kj has value 'x'"),
        ("[model]\nm = 3", "model 'm' must be a table"),
        ("= 1", "not valid TOML"),
    ],
)
def test_a_bad_prices_file_is_named(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_prices(text)


def test_a_run_still_open_at_the_periods_end_takes_its_share_of_the_power() -> None:
    f = fold(ping("w", 0, 100.0), started("a", "w", 0), started("b", "w", 5),
             completed("a", "w", 10))  # fmt: skip
    (run,) = f.runs(at(0), at(20))
    assert run.job_id == "a" and run.energy_j == pytest.approx(500 + 250)
