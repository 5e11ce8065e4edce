"""Read-model snapshots: the projector's tables and stream positions, in a JetStream object store.

A new projector with an empty database loads the newest snapshot and follows the streams from
its positions instead of replaying from sequence 1; the messages before those positions may
have aged out of the streams already.

**Format** (``jetgrid-snapshot/1``): one gzip JSON object, stored as the object
``read-models`` of the bucket Settings.snapshot_bucket (a newer snapshot replaces it):
``{"format", "subject_prefix", "stream_prefix", "meta" (the config the views were built under,
the store's meta table), "positions" (per stream), "digest" (Store.digest of the rows),
"tables" (Store.dump)}``.

**Trust.** A snapshot is refused (SnapshotError, and the projector replays from sequence 1
instead) when it does not decode, has another format, belongs to another deployment (other
prefixes), was built under another config (uptime windows, tier policy, ...), or its rows do
not hash to its digest once restored. Only the projector role may write the bucket.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.errors import NotFound
from jetgrid.coordinator.settings import Settings
from jetgrid.projections.errors import SnapshotError
from jetgrid.projections.fold import FoldConfig
from jetgrid.projections.schema import SCHEMA_VERSION, TABLES
from jetgrid.projections.store import Store

__all__ = ["FORMAT", "OBJECT", "Snapshot", "decode", "due", "encode", "load", "publish"]

FORMAT = "jetgrid-snapshot/1"
OBJECT = "read-models"


@dataclass(frozen=True, slots=True)
class Snapshot:
    positions: dict[str, int]
    digest: str
    tables: dict[str, dict[str, Any]]


def due(
    since: int, now: datetime | None, last: datetime | None, every: int, every_s: float
) -> bool:
    """Whether a snapshot is due: `since` messages folded since the last one reached `every`,
    or the stream time moved `every_s` past the last one's (`last`); 0 turns a rule off."""
    if since <= 0:
        return False
    if every > 0 and since >= every:
        return True
    return (
        every_s > 0
        and now is not None
        and last is not None
        and ((now - last).total_seconds() >= every_s)
    )


def _identity(settings: Settings, config: FoldConfig) -> dict[str, Any]:
    return {
        "subject_prefix": settings.subject_prefix,
        "stream_prefix": settings.stream_prefix,
        "meta": {"schema_version": SCHEMA_VERSION, **config.meta()},
    }


def encode(settings: Settings, config: FoldConfig, snap: Snapshot) -> bytes:
    body = {
        "format": FORMAT,
        **_identity(settings, config),
        "positions": snap.positions,
        "digest": snap.digest,
        "tables": snap.tables,
    }
    return gzip.compress(json.dumps(body, separators=(",", ":")).encode(), mtime=0)


def decode(data: bytes, settings: Settings, config: FoldConfig) -> Snapshot:
    """The snapshot in `data` if it is this deployment's under this config; else SnapshotError."""
    try:
        body = json.loads(gzip.decompress(data))
        fmt = body["format"]
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"The snapshot does not decode ({exc!r}).") from None
    if fmt != FORMAT:
        raise SnapshotError(f"The snapshot has format {fmt!r}, this jetgrid reads {FORMAT!r}.")
    want = _identity(settings, config)
    for key in ("subject_prefix", "stream_prefix"):
        if body.get(key) != want[key]:
            raise SnapshotError(
                f"The snapshot belongs to the deployment with {key} {body.get(key)!r}, not "
                f"{want[key]!r}."
            )
    if body.get("meta") != want["meta"]:
        raise SnapshotError(
            f"The snapshot was built under config {body.get('meta')}, not this projector's "
            f"{want['meta']}."
        )
    try:
        positions = {str(k): int(v) for k, v in body["positions"].items()}
        tables = body["tables"]
        for t in TABLES:
            got = tables[t.name]
            if not isinstance(got["columns"], list) or not isinstance(got["rows"], list):
                raise TypeError(f"table {t.name} is not columns and rows")
        digest = str(body["digest"])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"The snapshot is incomplete ({exc!r}).") from None
    return Snapshot(positions, digest, tables)


async def publish(bus: Bus, store: Store, settings: Settings, config: FoldConfig) -> Snapshot:
    """Dump `store` and put it in the snapshot bucket (replacing the previous snapshot)."""
    tables, digest = await store.dump()
    positions = {r[0]: int(r[1]) for r in tables["checkpoints"]["rows"]}
    snap = Snapshot(positions, digest, tables)
    bucket = settings.snapshot_bucket
    action = f"put a snapshot in object store {bucket}"
    obs = await bus.call(bus.js.object_store(bucket), action)
    await bus.call(obs.put(OBJECT, encode(settings, config, snap)), action)
    return snap


async def load(bus: Bus, store: Store, settings: Settings, config: FoldConfig) -> Snapshot | None:
    """Restore the newest snapshot into the (empty) `store`; None when there is none.
    SnapshotError when there is one but it cannot be used (the store is left empty)."""
    bucket = settings.snapshot_bucket
    action = f"read the snapshot in object store {bucket}"
    try:
        obs = await bus.call(bus.js.object_store(bucket), action)
        result = await bus.call(obs.get(OBJECT), action)
    except NotFound:  # no bucket, or no snapshot in it yet
        return None
    snap = decode(result.data or b"", settings, config)
    if not await store.restore(snap.tables, snap.digest):
        raise SnapshotError(
            f"The snapshot's rows do not match its digest sha256:{snap.digest[:12]}...; it is "
            "damaged or was not written by a jetgrid projector."
        )
    return snap
