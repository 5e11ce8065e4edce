"""Archive files: the raw log, kept beyond the streams' retention, readable back as stream Items.

**Format** (``jetgrid-archive/1``). A directory holds ``manifest.json`` and one gzip file of JSON
lines per stream and sequence range, ``<STREAM>-<first seq>-<last seq>.jsonl.gz`` (the logical
stream name, sequences zero-padded to 12 digits). Each line is one stored message exactly as
JetStream kept it: ``{"seq": 42, "subject": "...", "time": "<stream timestamp, ISO 8601>",
"headers": {...} | null, "data": "<base64 of the raw bytes>"}``, in sequence order. The manifest
names the format, the deployment's subject and stream prefixes, and every file with its stream,
first and last sequence, message count and sha256; a file is written under a temporary name
and renamed, and the manifest replaced atomically after it, so an interrupted archive leaves no
file the manifest names half-written.

`ArchiveDir.append` adds the next range of one stream (it refuses a range that does not start
after the last archived sequence, so archiving twice never duplicates); `ArchiveDir.batches`
reads a stream back in sequence order, checking each file's hash and that ranges are
contiguous. Nothing here talks to NATS: projections.archiver reads the streams into it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jetgrid.coordinator.settings import Settings
from jetgrid.projections.errors import ArchiveError
from jetgrid.projections.items import Item

__all__ = ["FORMAT", "MANIFEST", "ArchiveDir", "ArchiveFile", "decode_line", "encode_line"]

FORMAT = "jetgrid-archive/1"
MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One file of the archive: messages `first`..`last` of `stream` (logical name)."""

    stream: str
    first: int
    last: int
    count: int
    name: str
    sha256: str


def encode_line(item: Item) -> bytes:
    """One stored message as its archive line (with the trailing newline)."""
    rec = {
        "seq": item.seq,
        "subject": item.subject,
        "time": item.time.isoformat(),
        "headers": dict(item.headers) if item.headers else None,
        "data": base64.b64encode(item.data).decode("ascii"),
    }
    return json.dumps(rec, separators=(",", ":")).encode() + b"\n"


def decode_line(stream: str, line: bytes) -> Item:
    """The Item of one archive line of `stream`; ValueError/KeyError/TypeError if malformed."""
    rec = json.loads(line)
    headers = rec["headers"]
    return Item(
        stream,
        int(rec["seq"]),
        str(rec["subject"]),
        base64.b64decode(rec["data"], validate=True),
        datetime.fromisoformat(rec["time"]),
        {str(k): str(v) for k, v in headers.items()} if headers else None,
    )


class ArchiveDir:
    """An archive directory of one deployment (see the module docstring)."""

    def __init__(self, path: Path, settings: Settings, *, create: bool = False) -> None:
        self.path = path
        self.prefixes = {
            "subject_prefix": settings.subject_prefix,
            "stream_prefix": settings.stream_prefix,
        }
        self.files: list[ArchiveFile] = []
        manifest = path / MANIFEST
        if not manifest.exists():
            if not create:
                raise ArchiveError(
                    f"{path} holds no archive ({MANIFEST} is missing); give the directory "
                    "`jetgrid archive` wrote to."
                )
            path.mkdir(parents=True, exist_ok=True)
            return
        try:
            data = json.loads(manifest.read_text())
            fmt = data["format"]
            files = [ArchiveFile(**f) for f in data["files"]]
            theirs = {k: data[k] for k in self.prefixes}
        except (ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(
                f"{manifest} is not a jetgrid archive manifest ({exc!r}); restore it from a "
                "backup or archive into a new directory."
            ) from None
        if fmt != FORMAT:
            raise ArchiveError(
                f"{manifest} has format {fmt!r}, this jetgrid reads {FORMAT!r}; use a matching "
                "jetgrid version."
            )
        if theirs != self.prefixes:
            raise ArchiveError(
                f"{path} archives the deployment with prefixes {theirs}, not this one's "
                f"{self.prefixes}; give this deployment's archive or its prefixes."
            )
        self.files = sorted(files, key=lambda f: (f.stream, f.first))

    def of(self, stream: str) -> list[ArchiveFile]:
        return [f for f in self.files if f.stream == stream]

    def last(self, stream: str) -> int:
        """The last archived sequence of `stream` (0: none)."""
        return max((f.last for f in self.of(stream)), default=0)

    def first_item(self, stream: str) -> Item | None:
        """The first archived message of `stream` (None: none archived)."""
        files = self.of(stream)
        return next(self._read(files[0]), None) if files else None

    def append(self, stream: str, items: list[Item]) -> ArchiveFile:
        """Write `items` (consecutive messages of `stream`, in order) as one new file."""
        first, last = items[0].seq, items[-1].seq
        if first <= self.last(stream):
            raise ArchiveError(
                f"{stream} sequence {first} is already archived in {self.path} (up to "
                f"{self.last(stream)}); archive only what follows it."
            )
        name = f"{stream}-{first:012d}-{last:012d}.jsonl.gz"
        tmp = self.path / f".{name}.tmp"
        digest = hashlib.sha256()
        with open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                for it in items:
                    gz.write(encode_line(it))
            raw.flush()
            os.fsync(raw.fileno())
        digest.update(tmp.read_bytes())
        tmp.replace(self.path / name)
        entry = ArchiveFile(stream, first, last, len(items), name, digest.hexdigest())
        self.files.append(entry)
        self.files.sort(key=lambda f: (f.stream, f.first))
        self._write_manifest()
        return entry

    def _write_manifest(self) -> None:
        body: dict[str, Any] = {
            "format": FORMAT,
            **self.prefixes,
            "files": [asdict(f) for f in self.files],
        }
        tmp = self.path / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(body, indent=1) + "\n")
        tmp.replace(self.path / MANIFEST)

    def batches(
        self, stream: str, upto: int, until_time: datetime | None, batch_max: int
    ) -> Iterator[list[Item]]:
        """Archived messages of `stream` up to sequence `upto` (and stream time `until_time`),
        in sequence order and batches of at most `batch_max`."""
        expect = 0
        batch: list[Item] = []
        for f in self.of(stream):
            if expect and f.first != expect + 1:
                raise ArchiveError(
                    f"The archive in {self.path} misses {stream} sequences {expect + 1}.."
                    f"{f.first - 1} (between its files); archive them again from a log that "
                    "still holds them, or replay without --archive."
                )
            expect = f.last
            for it in self._read(f):
                if it.seq > upto or (until_time is not None and it.time > until_time):
                    if batch:
                        yield batch
                    return
                batch.append(it)
                if len(batch) >= batch_max:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _read(self, f: ArchiveFile) -> Iterator[Item]:
        path = self.path / f.name
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ArchiveError(
                f"Archive file {path} named in the manifest is missing; restore it."
            ) from None
        if hashlib.sha256(raw).hexdigest() != f.sha256:
            raise ArchiveError(
                f"Archive file {path} does not match the sha256 in the manifest; it was "
                "changed or damaged: restore it from a backup."
            )
        try:
            lines = gzip.decompress(raw).splitlines()
            for line in lines:
                yield decode_line(f.stream, line)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(
                f"Archive file {path} cannot be read ({exc!r}); restore it from a backup."
            ) from None
