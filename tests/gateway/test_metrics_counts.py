"""The gateway's job metrics, counted in plain numbers by the fold and added to the registry at
scrape, read exactly as prometheus_client's own counters and histograms fed one by one."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from jetgrid.gateway import metrics as m
from jetgrid.projections.jobs import JobView

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Waits and run times on, between and past the bucket bounds (0 s, a bound exactly, +Inf).
SECONDS = [0.0, 0.004, 0.005, 0.0051, 0.3, 1.0, 29.99, 30.0, 899.0, 900.0, 1234.5]


def views() -> list[tuple[JobView | None, JobView]]:
    """(before, after) pairs of jobs submitted, started and ended, as the board folds them."""
    out: list[tuple[JobView | None, JobView]] = []
    for i, s in enumerate(SECONDS):
        pool, model = ("standard", "echo") if i % 3 else ("gpu", "llama3:8b")
        queued = JobView(job_id=f"j{i}", status="queued", pool=pool, model=model,
                         submitted_at=T0, jobs_seq=i + 1)  # fmt: skip
        started = replace(queued, status="running", started_at=T0 + timedelta(seconds=s))
        ended = replace(
            started,
            status="completed" if i % 4 else "failed",
            finished_at=T0 + timedelta(seconds=2 * s),
        )
        out += [(None, queued), (queued, started), (started, ended), (started, ended)]
    return out


def _samples(registry: CollectorRegistry) -> list[str]:
    return sorted(
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("jetgrid_job") and "_created" not in line
    )


def test_scraped_job_series_equal_prometheus_clients_fed_event_by_event() -> None:
    metrics = m.Metrics()
    ref = CollectorRegistry()
    labels = ["pool", "model"]
    doc = "x"
    jobs = {f: Counter(f"jetgrid_jobs_{f}", doc, labels, registry=ref) for f in m._FACTS}
    wait = Histogram("jetgrid_job_queue_seconds", doc, labels, buckets=m._BUCKETS, registry=ref)
    run = Histogram("jetgrid_job_run_seconds", doc, labels, buckets=m._BUCKETS, registry=ref)
    for before, view in views():
        metrics.observe(before, view)
    for i, s in enumerate(SECONDS):
        lbl = ("standard", "echo") if i % 3 else ("gpu", "llama3:8b")
        for fact in ("submitted", "started", "completed" if i % 4 else "failed"):
            jobs[fact].labels(*lbl).inc()
        wait.labels(*lbl).observe(s)
        run.labels(*lbl).observe(s)
    assert all(line.endswith(" 0.0") for line in _samples(metrics.registry))  # until a scrape
    metrics.flush()
    assert _samples(metrics.registry) == _samples(ref)
    metrics.flush()  # a second scrape adds nothing new
    assert _samples(metrics.registry) == _samples(ref)
