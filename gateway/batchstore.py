"""The Batch API's storage, shared by every gateway and webhook service: files in the files
object store (`FileStore`, settings.files_bucket) and batch records in the batches KV bucket
(`BatchStore`, settings.batches_bucket).

A file is one object named by its id (``file-<hex>``); its description holds the file's
attributes as JSON (`FileInfo`: owner, purpose, name, size, creation time).

Keys: ``<batch_id>`` holds the record (`BatchRecord`: owner, endpoint, input file, number of
lines, webhook, metadata, when it was created and when a cancel was asked); ``own.<owner>.<id>``
indexes it under its owner for listing; ``<batch_id>.line.<n>`` marks line n done (its job's
terminal status), written by the webhook service as each line's terminal event arrives;
``deleted.<job_id>`` marks a deleted response (gateway.responses). The
record changes only when every line's job is stored (`submitted`) and when a cancel is asked;
a batch's progress and outcome come from its jobs' own events (gateway.batches), the line marks
only tell the webhook service when the last line ended (their count, from an ephemeral
consumer's pending count, no key listing).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, ObjectMeta
from pydantic import BaseModel, ConfigDict, Field

from jetgrid.coordinator.bus import Bus
from jetgrid.coordinator.errors import NotFound
from jetgrid.coordinator.settings import Settings

__all__ = [
    "BatchRecord",
    "BatchStore",
    "FileInfo",
    "FileStore",
    "batch_of",
    "line_of",
    "owner_token",
]


class BatchRecord(BaseModel):
    """What a batch was asked to do; its state is derived from its jobs."""

    model_config = ConfigDict(extra="ignore")
    id: str
    owner: str  # owner_token of the key that created it ("open" on a gateway without keys)
    key_name: str | None = None  # the API key's name: its webhook secret signs
    endpoint: str
    input_file_id: str
    completion_window: str = "24h"
    total: int = Field(ge=0)
    created_at: int
    webhook: str | None = None
    metadata: dict[str, str] | None = None
    cancelled_at: int | None = None
    # False until every line's job is stored; a create that died half-way is finished by the
    # next read (gateway.batches.resume).
    submitted: bool = False

    def job_id(self, line: int) -> str:
        """The job that runs line `line` (0-based) of the input file."""
        return f"{self.id}-{line}"


def owner_token(principal: str) -> str:
    """A KV-key-safe token for the owner `principal` (an API key's hash, "" when keys are off)."""
    if not principal:
        return "open"
    return hashlib.sha256(principal.encode()).hexdigest()[:32]


_BATCH_JOB = re.compile(r"^(batch_[0-9a-f]{32})-[0-9]+$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # what a file or batch id may be


def batch_of(job_id: str) -> str | None:
    """The batch a job id belongs to (``<batch_id>-<line>``), or None."""
    m = _BATCH_JOB.match(job_id)
    return m.group(1) if m else None


def line_of(batch_id: str, job_id: str) -> int | None:
    """The line a batch job runs, from its id (None when the id is not one of the batch's)."""
    tail = job_id.removeprefix(f"{batch_id}-")
    return int(tail) if tail != job_id and tail.isdigit() else None


class BatchStore:
    """The batches bucket, through the bus."""

    def __init__(self, bus: Bus, settings: Settings) -> None:
        self.bus = bus
        self.bucket = settings.batches_bucket

    async def _kv(self) -> Any:
        return await self.bus.call(self.bus.js.key_value(self.bucket), f"open {self.bucket}")

    async def put(self, record: BatchRecord) -> None:
        kv = await self._kv()
        action = f"store batch {record.id} in {self.bucket}"
        await self.bus.call(kv.put(record.id, record.model_dump_json().encode()), action)
        await self.bus.call(kv.put(f"own.{record.owner}.{record.id}", b""), action)

    async def get(self, batch_id: str) -> BatchRecord | None:
        if not _ID.match(batch_id):
            return None
        kv = await self._kv()
        try:
            entry = await self.bus.call(kv.get(batch_id), f"read batch {batch_id}")
        except NotFound:
            return None
        return BatchRecord.model_validate_json(entry.value or b"{}")

    async def owned(self, owner: str) -> list[str]:
        """The ids of `owner`'s batches (oldest key first)."""
        kv = await self._kv()

        async def keys() -> list[str]:
            # A watch on the owner's index keys only (kv.keys() would read every key).
            watcher = await kv.watch(f"own.{owner}.*", meta_only=True, ignore_deletes=True)
            found: list[str] = []
            try:
                async for entry in watcher:
                    if entry is None:  # the watch caught up
                        break
                    found.append(entry.key)
            finally:
                await watcher.stop()
            return found

        return [k.rsplit(".", 1)[-1] for k in await self.bus.call(keys(), "list batches")]

    async def cancel(self, record: BatchRecord, when: datetime | None = None) -> BatchRecord:
        """Mark the batch cancelled (once; the first time counts)."""
        if record.cancelled_at is not None:
            return record
        stamp = int((when or datetime.now(UTC)).timestamp())
        done = record.model_copy(update={"cancelled_at": stamp})
        await self.put(done)
        return done

    async def mark_response_deleted(self, job_id: str, when: datetime | None = None) -> None:
        """Mark the response of `job_id` deleted (``deleted.<job_id>``: its time)."""
        stamp = str(int((when or datetime.now(UTC)).timestamp())).encode()
        await self.bus.put(self.bucket, f"deleted.{job_id}", stamp)

    async def response_deleted(self, job_id: str) -> bool:
        """Whether the response of `job_id` is marked deleted: one message get (the bucket
        has no direct gets); no bucket means none was ever deleted."""
        stream, subject = f"KV_{self.bucket}", f"$KV.{self.bucket}.deleted.{job_id}"
        try:
            await self.bus.call(
                self.bus.js.get_last_msg(stream, subject), f"read the mark of {subject}"
            )
        except NotFound:
            return False
        return True

    async def line_done(self, batch_id: str, job_id: str, status: str) -> BatchRecord | None:
        """Mark the line `job_id` runs as ended with `status`; the batch's record when this made
        every line ended (else None)."""
        record = await self.get(batch_id)
        line = line_of(batch_id, job_id)
        if record is None or line is None or line >= record.total:
            return None
        kv = await self._kv()
        await self.bus.call(kv.put(f"{batch_id}.line.{line}", status.encode()), "mark a line")
        return record if await self.lines_done(batch_id) >= record.total else None

    async def line_statuses(self, batch_id: str) -> list[str]:
        """The terminal status each marked line of the batch ended with (a watch on its marks)."""
        kv = await self._kv()

        async def read() -> list[str]:
            watcher = await kv.watch(f"{batch_id}.line.*", ignore_deletes=True)
            found: list[str] = []
            try:
                async for entry in watcher:
                    if entry is None:  # the watch caught up
                        break
                    found.append((entry.value or b"").decode("utf-8", "replace"))
            finally:
                await watcher.stop()
            return found

        return await self.bus.call(read(), f"read {batch_id}'s lines")

    async def lines_done(self, batch_id: str) -> int:
        """How many lines of the batch are marked done (an ephemeral consumer's pending count:
        each key holds one message, history 1)."""
        stream = f"KV_{self.bucket}"
        config = ConsumerConfig(
            filter_subject=f"$KV.{self.bucket}.{batch_id}.line.*",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=10.0,
            mem_storage=True,
        )
        js = self.bus.js
        info = await self.bus.call(js.add_consumer(stream, config), f"count {batch_id}'s lines")
        try:
            await self.bus.call(js.delete_consumer(stream, info.name), "drop a counter")
        except Exception:  # it goes away on its own after inactive_threshold
            pass
        return int(info.num_pending or 0)


class FileInfo(BaseModel):
    """A stored file's attributes (the object's description)."""

    model_config = ConfigDict(extra="ignore")
    id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    created_at: int

    def public(self) -> dict[str, Any]:
        """The file as OpenAI's API shows it."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


class FileStore:
    """The files object store, through the bus."""

    def __init__(self, bus: Bus, settings: Settings) -> None:
        self.bus = bus
        self.bucket = settings.files_bucket

    async def _obs(self) -> Any:
        return await self.bus.call(self.bus.js.object_store(self.bucket), f"open {self.bucket}")

    async def put(self, info: FileInfo, data: bytes) -> None:
        obs = await self._obs()
        meta = ObjectMeta(name=info.id, description=info.model_dump_json())
        await self.bus.call(obs.put(info.id, data, meta=meta), f"store file {info.id}")

    async def info(self, file_id: str, *, deleted: bool = False) -> FileInfo | None:
        """The file's attributes; None if there is no such file (with `deleted`, a deleted
        file's are given too, to tell "deleted" from "never written")."""
        if not _ID.match(file_id):
            return None
        obs = await self._obs()
        try:
            raw = await self.bus.call(obs.get_info(file_id, deleted), f"read file {file_id}")
        except NotFound:
            return None
        return FileInfo.model_validate_json(raw.description or "{}")

    async def listed(self) -> list[FileInfo]:
        """Every file's attributes (deleted files left out): one watch over the bucket's
        metadata, so its cost grows with the files kept, not with their bytes."""
        obs = await self._obs()
        try:
            found = await self.bus.call(obs.list(ignore_deletes=True), f"list {self.bucket}")
        except NotFound:  # an empty bucket
            return []
        out = []
        for raw in found:
            with contextlib.suppress(ValueError):
                out.append(FileInfo.model_validate_json(raw.description or "{}"))
        return out

    async def delete(self, file_id: str) -> None:
        """Delete the file: its chunks are purged, a deletion mark stays under its name."""
        obs = await self._obs()
        await self.bus.call(obs.delete(file_id), f"delete file {file_id}")

    async def content(self, file_id: str) -> bytes | None:
        obs = await self._obs()
        try:
            result = await self.bus.call(obs.get(file_id), f"read file {file_id}")
        except NotFound:
            return None
        return bytes(result.data or b"")
