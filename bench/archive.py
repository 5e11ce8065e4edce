# ruff: noqa: E501  (a benchmark script: long print lines read better unwrapped)
"""Archive and snapshot costs, in one run on a fresh nats-server.

Fills the mixed log of bench/replay.py, then measures:

  replay     the full log from sequence 1 (time, digest)
  snapshot   publishing the read models to the snapshot bucket (time, size)
  projector  a fresh projector catching up, from the snapshot and from sequence 1 (time)
  archive    `jetgrid archive` of the whole log (time, size beside the streams' bytes)
  replay+    after purging every archived message from the streams: replay --archive (time,
             and that its digest equals the full log's)

    .venv/bin/python bench/archive.py [--workers 200] [--seconds 300] [--jobs 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import nats
from replay import CONF, fill  # bench/replay.py: the same mixed log

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.provision import ensure_snapshot_bucket, provision_streams
from jetgrid.coordinator.settings import Settings
from jetgrid.events import stream_specs
from jetgrid.natsserver import NatsServer
from jetgrid.projections import snapshot
from jetgrid.projections.archive import ArchiveDir
from jetgrid.projections.archiver import archive_streams
from jetgrid.projections.fold import fold_config
from jetgrid.projections.replay import replay
from jetgrid.projections.runner import Projector
from jetgrid.projections.store import Store

LATER = datetime(2100, 1, 1, tzinfo=UTC)


async def catch_up(
    settings: Settings, bus: Bus, db: Path, snapshots: bool
) -> tuple[float, Projector]:
    store = Store(f"sqlite+aiosqlite:///{db}")
    t = time.perf_counter()
    proj = Projector(settings, store, bus, publish=False, snapshots=snapshots)
    await proj.start()
    await proj.wait_caught_up(within=3600)
    seconds = time.perf_counter() - t
    await proj.stop()
    return seconds, proj


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workers", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        server = NatsServer(tmp / "nats", conf=CONF, port=0)
        server.start()
        try:
            s = Settings(nats_url=server.url, subject_prefix="bench", stream_prefix="B_",
                         snapshot_every=0, snapshot_every_s=0)  # fmt: skip
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            bus = Bus(nc, s)
            await provision_streams(js, stream_specs(s.subjects, s.streams))
            await ensure_snapshot_bucket(js, s.snapshot_bucket)
            n = await fill(s, nc, args.workers, args.seconds, args.jobs)
            stream_bytes = 0
            for name in (s.streams.workers, s.streams.jobs, s.streams.job_events):
                stream_bytes += (await js.stream_info(name)).state.bytes
            print(f"log: {n:,} messages, {stream_bytes / 2**20:.1f} MiB in the streams")

            store = Store(f"sqlite+aiosqlite:///{tmp / 'full.db'}")
            full = await replay(s, store, bus)
            print(
                f"replay from sequence 1          : {full.seconds:6.2f} s  digest {full.digest[:16]}"
            )
            t = time.perf_counter()
            snap = await snapshot.publish(bus, store, s, fold_config(s))
            size = (await (await js.object_store(s.snapshot_bucket)).get_info(snapshot.OBJECT)).size
            print(
                f"snapshot publish                : {time.perf_counter() - t:6.2f} s  {size / 2**20:.2f} MiB at {snap.positions}"
            )
            await store.close()

            sec_snap, p1 = await catch_up(s.replace(snapshot_every=1), bus, tmp / "p1.db", True)
            sec_full, p2 = await catch_up(s, bus, tmp / "p2.db", False)
            same = await p1.store.digest() == await p2.store.digest() == full.digest
            print(
                f"fresh projector from snapshot   : {sec_snap:6.2f} s  ({p1.stats.messages:,} messages folded)"
            )
            print(
                f"fresh projector from sequence 1 : {sec_full:6.2f} s  ({p2.stats.messages:,} messages folded); digests equal: {same}"
            )
            await p1.store.close()
            await p2.store.close()

            archive = ArchiveDir(tmp / "arch", s, create=True)
            t = time.perf_counter()
            await archive_streams(s, bus, archive, now=datetime.now(UTC), before=LATER)
            arch_s = time.perf_counter() - t
            arch_bytes = sum(p.stat().st_size for p in (tmp / "arch").iterdir())
            print(
                f"archive                         : {arch_s:6.2f} s  {arch_bytes / 2**20:.1f} MiB ({arch_bytes / stream_bytes:.0%} of the streams' bytes)"
            )
            for logical, name in (
                ("WORKERS", s.streams.workers),
                ("JOBS", s.streams.jobs),
                ("JOB_EVENTS", s.streams.job_events),
            ):
                await js.purge_stream(name, seq=archive.last(logical) + 1)
            store = Store(f"sqlite+aiosqlite:///{tmp / 'arch.db'}")
            res = await replay(s, store, bus, archive=archive)
            print(
                f"replay --archive (streams purged): {res.seconds:6.2f} s  digest equals the full log's: {res.digest == full.digest}"
            )
            await store.close()
            await nc.close()
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
