"""The read models of a fixed log, pinned by digest: a speed-up of the decoder, the reducers or
the store must not change a byte of what they write.

The log is built in memory (no NATS; event times fixed) and folded through `Folder`, the same
code a projector and a replay run, into a real SQLite database, in batches of two sizes (a
replay's few large batches, a live projector's many small ones). It exercises what the hot path
touches: pings with GPU telemetry, healthy and unhealthy, missed pings (so tiers move), a late
ping, a duplicate, a reboot, draining and deregistration, an invalid WORKERS message, bare and
enveloped submissions, completed and failed jobs. If a change is meant to alter the views,
update EXPECTED and say why in the commit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jetgrid.coordinator.settings import Settings
from jetgrid.events import (
    JOB_EVENTS,
    JOBS,
    WORKERS,
    GpuTelemetry,
    JobClaimed,
    JobCompleted,
    JobFailed,
    JobStarted,
    JobSubmitted,
    WorkerDeregistered,
    WorkerDraining,
    WorkerHeartbeat,
    WorkerRegistered,
    encode,
)
from jetgrid.projections.fold import Fold, fold_config
from jetgrid.projections.folder import Folder
from jetgrid.projections.items import Item
from jetgrid.projections.store import Store

EXPECTED = "3aa91c52f8b828780327e2db863e815ff707cd40068b456165dbe938b30c7e01"
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
GPU = GpuTelemetry(
    index=0, uuid="GPU-0", name="NVIDIA H100", memory_used_mb=1000.5, memory_total_mb=81559.0,
    utilization_pct=37.25, temperature_c=55.0, power_w=250.1, ecc_errors=0, xid_errors=0,
)  # fmt: skip


def _log(settings: Settings) -> list[Item]:
    subj = settings.subjects
    w: list[tuple[str, bytes, datetime]] = []
    jobs: list[tuple[str, bytes, datetime]] = []
    events: list[tuple[str, bytes, datetime]] = []

    def worker(ev, name: str, t: datetime, id_: str) -> None:
        w.append((subj.worker_event(ev.worker_id, name), encode(ev, source="s", id=id_, time=t), t))

    for i in range(6):
        reg = WorkerRegistered(
            worker_id=f"w{i}", pools=["standard"], models=["echo"], backend="echo",
            concurrency=2, heartbeat_interval_s=1.0, boot_id="b1", hostname=f"h{i}",
        )  # fmt: skip
        worker(reg, "registered", T0, f"r{i}")
    k = 0
    for s in range(1, 150):
        t = T0 + timedelta(seconds=s)
        for i in range(6):
            if (s * 7 + i) % 11 == 0 or (i == 5 and s > 100):
                continue  # missed pings; w5 goes silent and decays
            boot = "b2" if i == 2 and s > 90 else "b1"
            n = s - 90 if boot == "b2" else s
            if i == 2 and s == 91:
                worker(WorkerRegistered(
                    worker_id="w2", pools=["standard"], models=["echo"], backend="echo",
                    concurrency=2, heartbeat_interval_s=1.0, boot_id="b2",
                ), "registered", t, "r2b")  # fmt: skip
            ping = WorkerHeartbeat(
                worker_id=f"w{i}", n=n, healthy=(s * 3 + i) % 13 != 0, interval_s=1.0,
                in_flight=s % 3, completed=s, nvml=True, gpus=[GPU] * (i % 3), boot_id=boot,
            )  # fmt: skip
            worker(ping, "heartbeat", t, f"p{i}-{s}")
            k += 1
            if k % 25 == 0:
                jid = f"j{k}"
                sub = JobSubmitted(job_id=jid, model="echo", pool="standard", prompt="hi")
                body = encode(sub, source="s", id=jid, time=t)
                jobs.append((subj.submit("standard", "echo"), body, t))
                final = (
                    JobCompleted(job_id=jid, worker_id=f"w{i}", attempt=1, output={"text": "hi"},
                                 usage={"tokens": 2}, duration_s=0.25)
                    if k % 50 else JobFailed(job_id=jid, worker_id=f"w{i}", attempt=1, reason="x")
                )  # fmt: skip
                for ev, name in (
                    (
                        JobClaimed(job_id=jid, worker_id=f"w{i}", attempt=1, jobs_seq=len(jobs)),
                        "claimed",
                    ),
                    (JobStarted(job_id=jid, worker_id=f"w{i}", attempt=1), "started"),
                    (final, "completed" if isinstance(final, JobCompleted) else "failed"),
                ):
                    body = encode(ev, source="s", id=f"{jid}-{name}", time=t)
                    events.append((subj.job_event(jid, name), body, t))
        if s == 60:  # a duplicate, a late ping and an invalid message
            w.append(w[-3])
            late = WorkerHeartbeat(worker_id="w1", n=58, healthy=True, interval_s=1.0,
                                   in_flight=0, boot_id="b1")  # fmt: skip
            worker(late, "heartbeat", t - timedelta(seconds=2), "late")
            w.append((subj.worker_event("w3", "heartbeat"), b'{"not": "an event"}', t))
        if s == 120:
            worker(WorkerDraining(worker_id="w4", reason="upgrade"), "draining", t, "d4")
        if s == 130:
            worker(WorkerDeregistered(worker_id="w4", reason="bye"), "deregistered", t, "x4")
    jobs.append((subj.submit("standard", "echo"), b'{"model": "echo", "prompt": "bare"}', T0))
    out: list[Item] = []
    for logical, rows in ((WORKERS, w), (JOBS, jobs), (JOB_EVENTS, events)):
        out += [Item(logical, n + 1, s, d, t) for n, (s, d, t) in enumerate(rows)]
    return out


@pytest.mark.parametrize("batch", [5000, 37])
async def test_a_fixed_log_gives_the_pinned_digest(tmp_path: Path, batch: int) -> None:
    settings = Settings(subject_prefix="pin", stream_prefix="PIN_")
    config = fold_config(settings)
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'pin.db'}")
    try:
        await store.open(config)
        folder = Folder(settings, store, Fold(settings.subjects, config))
        items = _log(settings)
        for i in range(0, len(items), batch):
            await folder.apply(items[i : i + batch])
        assert folder.fold.counts["invalid"] == 1 and folder.fold.counts["duplicates"] >= 1
        assert await store.digest() == EXPECTED
    finally:
        await store.close()
