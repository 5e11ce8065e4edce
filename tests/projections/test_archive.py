"""Archive and replay beyond retention: archive a log, purge what was archived (standing in for
retention), and replay archive + live log to the digest of the whole log."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jetgrid.coordinator.consumers import pool_consumer
from jetgrid.coordinator.provision import ensure_consumer
from jetgrid.events import JOB_EVENTS, JOBS, WORKERS
from jetgrid.projections.archive import MANIFEST, ArchiveDir
from jetgrid.projections.archiver import archive_streams, at_risk, cutoff
from jetgrid.projections.audit_log import gather
from jetgrid.projections.errors import ArchiveError
from jetgrid.projections.fold import fold_config
from jetgrid.projections.replay import replay

pytestmark = pytest.mark.integration
JETGRID = str(Path(sys.executable).parent / "jetgrid")
LATER = datetime(2100, 1, 1, tzinfo=UTC)


def test_cutoff_is_before_then_retention_minus_margin_and_none_when_kept_forever() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert cutoff(7 * 86400, now, 86400, None) == now - timedelta(days=6)
    assert cutoff(7 * 86400, now, 86400, LATER) == LATER
    assert cutoff(0, now, 86400, None) is None
    assert cutoff(3600, now, 86400, None) == now


async def _history(log, start: int, workers: int = 3, pings: int = 60, jobs: int = 6) -> None:
    for w in range(workers):
        if start == 0:
            await log.register(f"w{w}")
        await log.pings(f"w{w}", start + 1, pings, miss=set(range(2, pings, 5 + w)))
    for j in range(jobs):
        await log.job(f"j{start}-{j}", f"w{j % workers}", start + 3 + j)


async def _purge_before(js, stream: str, seq: int) -> None:
    await js.purge_stream(stream, seq=seq)  # removes every message below seq, like retention


async def test_replay_with_the_archive_after_a_purge_gives_the_full_log_digest(
    log, nc, bus, make_store, tmp_path
) -> None:
    s, js = log.settings, nc.jetstream()
    await _history(log, 0)
    archive = ArchiveDir(tmp_path / "arch", s, create=True)
    first = await archive_streams(s, bus, archive, now=datetime.now(UTC), before=LATER, file_max=70)
    archived = {k: archive.last(k) for k in (WORKERS, JOBS, JOB_EVENTS)}
    assert all(archived.values()) and len(first.files[WORKERS]) > 1
    again = await archive_streams(s, bus, archive, now=datetime.now(UTC), before=LATER)
    assert again.files[WORKERS] == [] and "nothing new" in again.lines()[0]
    assert ArchiveDir(tmp_path / "arch", s).files == archive.files  # re-read from the manifest

    await _history(log, 100)  # the log moves on after the archive
    full = await replay(s, make_store(), bus)
    part = await replay(s, make_store(), bus, until_seq={WORKERS: 40, JOBS: 3})
    mid = next(archive.batches(WORKERS, 50, None, 100))[-1].time  # a stream time in the archive
    at_mid = await replay(s, make_store(), bus, until_time=mid)
    audit_full = await gather(s, bus, fold_config(s))

    # WORKERS loses half of what was archived (archive and stream overlap), JOBS and JOB_EVENTS
    # all of it.
    await _purge_before(js, s.streams.workers, archived[WORKERS] // 2)
    await _purge_before(js, s.streams.jobs, archived[JOBS] + 1)
    await _purge_before(js, s.streams.job_events, archived[JOB_EVENTS] + 1)
    without = await replay(s, make_store(), bus)
    assert without.digest != full.digest

    rebuilt = await replay(s, make_store(), bus, archive=archive)
    assert rebuilt.positions == full.positions
    assert rebuilt.digest == full.digest
    audit = await gather(s, bus, fold_config(s), archive=archive)
    assert audit.timelines == audit_full.timelines and audit.claims == audit_full.claims
    assert audit.terminal == audit_full.terminal

    before_all = datetime(2000, 1, 1, tzinfo=UTC)  # the time limit ends inside the archive
    early = await replay(s, make_store(), bus, archive=archive, until_time=before_all)
    assert early.positions == {WORKERS: 0, JOBS: 0, JOB_EVENTS: 0}
    mid_again = await replay(s, make_store(), bus, archive=archive, until_time=mid)
    assert (mid_again.positions, mid_again.digest) == (at_mid.positions, at_mid.digest)
    half = await replay(s, make_store(), bus, archive=archive, until_seq={WORKERS: 40, JOBS: 3})
    assert (half.positions, half.digest) == (part.positions, part.digest)


async def test_a_gap_a_foreign_or_a_damaged_archive_is_refused_in_one_sentence(
    log, nc, bus, make_store, tmp_path
) -> None:
    s, js = log.settings, nc.jetstream()
    await _history(log, 0, workers=1, pings=20, jobs=2)
    archive = ArchiveDir(tmp_path / "arch", s, create=True)
    await archive_streams(s, bus, archive, now=datetime.now(UTC), before=LATER)
    await _history(log, 100, workers=1, pings=10, jobs=1)
    last = archive.last(WORKERS)
    await _purge_before(js, s.streams.workers, last + 5)  # 4 messages in neither
    with pytest.raises(ArchiveError, match=rf"sequences {last + 1}\.\.{last + 4} are in neither"):
        await replay(s, make_store(), bus, archive=archive)
    with pytest.raises(ArchiveError, match="not this one's"):
        ArchiveDir(tmp_path / "arch", s.replace(stream_prefix="OTHER_"))
    with pytest.raises(ArchiveError, match="holds no archive"):
        ArchiveDir(tmp_path / "empty", s)
    f = archive.of(JOBS)[0]
    path = tmp_path / "arch" / f.name
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ArchiveError, match="does not match the sha256"):
        list(archive.batches(JOBS, 10**9, None, 100))
    (tmp_path / "arch" / MANIFEST).write_text("{not json")
    with pytest.raises(ArchiveError, match="not a jetgrid archive manifest"):
        ArchiveDir(tmp_path / "arch", s)


async def _run(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        JETGRID,
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_archive_and_replay_commands(log, nc, bus, make_store, tmp_path) -> None:
    s = log.settings
    await _history(log, 0, workers=2, pings=30, jobs=3)
    env = {
        "JETGRID_NATS_URL": s.nats_url,
        "JETGRID_SUBJECT_PREFIX": s.subject_prefix,
        "JETGRID_STREAM_PREFIX": s.stream_prefix,
    }
    arch = str(tmp_path / "arch")
    rc, out = await _run("archive", "--dir", arch, "--before", "2100-01-01T00:00:00Z", env=env)
    assert rc == 0, out
    assert "WORKERS: archived" in out and "JOBS: archived 3 messages" in out
    rc, out = await _run(
        "archive", "--dir", arch, "--before", "2100-01-01T00:00:00Z", "--quiet", env=env
    )
    assert rc == 0 and out.count("nothing new") == 4, out
    rc, out = await _run("archive", "--dir", arch, "--quiet", env=env)  # default: retention - 1d
    assert rc == 0 and "WORKERS: nothing new stored before" in out, out
    full = await replay(s, make_store(), bus)
    await nc.jetstream().purge_stream(s.streams.workers)
    rc, out = await _run(
        "replay", "--db", str(tmp_path / "r.db"), "--archive", arch, "--quiet", env=env
    )
    assert rc == 0 and out.strip() == f"digest sha256:{full.digest}", out
    rc, out = await _run(
        "replay", "--db", str(tmp_path / "x.db"), "--archive", str(tmp_path), env=env
    )
    assert rc == 1 and out.startswith("Error:") and "holds no archive" in out, out
    assert "Traceback" not in out


def test_at_risk_names_consumers_with_unfinished_jobs_before_the_cut() -> None:
    warnings = at_risk([("pool-b", 9, 2), ("pool-a", 3, 1), ("idle", 2, 0), ("ahead", 20, 4)], 10)
    assert [w.split()[2] for w in warnings] == ["pool-a", "pool-b"]
    assert "has 1 unfinished jobs and has acked only up to sequence 3" in warnings[0]


async def test_archive_reports_gaps_and_queued_jobs_about_to_age_out(
    log, nc, bus, tmp_path
) -> None:
    s, js = log.settings, nc.jetstream()
    spec = pool_consumer(
        s.subjects, s.streams.jobs, "standard", "echo", ack_wait_s=30, max_deliver=3,
        max_ack_pending=10,
    )  # fmt: skip
    await ensure_consumer(js, spec)
    await _history(log, 0, workers=1, pings=10, jobs=3)  # 3 queued jobs nobody takes
    await _purge_before(js, s.streams.workers, 4)
    archive = ArchiveDir(tmp_path / "arch", s, create=True)
    report = await archive_streams(s, bus, archive, now=datetime.now(UTC), before=LATER)
    assert report.gaps == {WORKERS: (1, 3)}
    assert "WORKERS: sequences 1..3 aged out before they were archived" in report.lines()[0]
    assert len(report.at_risk) == 1 and spec.name in report.at_risk[0]
    assert "has 3 unfinished jobs" in report.at_risk[0]
