"""The record of a message that failed validation, on INVALID as ``<prefix>.invalid.<stream>``."""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import Field

from jetgrid.events.base import Event

KEEP_BYTES = 256 * 1024


class InvalidMessage(Event):
    """Original bytes (base64) and the reason they were rejected; `seq` is their stream seq."""

    type: Literal["jetgrid.invalid.message"] = "jetgrid.invalid.message"
    version: Literal[1] = 1
    stream: str
    subject: str
    seq: int | None = None
    reason: str
    original_b64: str
    detected_by: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    original_size: int = Field(default=0, ge=0)
    truncated: bool = False

    @property
    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)

    @classmethod
    def of(
        cls,
        data: bytes,
        *,
        stream: str,
        subject: str,
        reason: str,
        seq: int | None = None,
        detected_by: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> InvalidMessage:
        """Record `data`, keeping at most KEEP_BYTES of it so the record itself always fits."""
        kept = data[:KEEP_BYTES]
        return cls(
            stream=stream,
            subject=subject,
            seq=seq,
            reason=reason,
            original_b64=base64.b64encode(kept).decode("ascii"),
            detected_by=detected_by,
            headers=headers or {},
            original_size=len(data),
            truncated=len(kept) < len(data),
        )
