"""One message as read from a stream: what every reader (a replay, the projector, the audit,
the archive) hands the fold. A module of its own, so that a replay's reader child
(projections.pump) imports it without the fold and the store."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from jetgrid.events.records import record

__all__ = ["Item"]


@record
class Item:
    """One message as read from a stream."""

    stream: str  # logical name
    seq: int
    subject: str
    data: bytes
    time: datetime  # the stream's timestamp
    headers: Mapping[str, str] | None = None
