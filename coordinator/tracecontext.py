"""W3C Trace Context as plain data: parse, make and format a ``traceparent``.

``traceparent: 00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>``, lowercase. Rules
(www.w3.org/TR/trace-context, "traceparent Header"): version ``ff`` is invalid; version ``00``
has exactly four fields; a later version may add fields after the flags (ignored, and the first
four read as in ``00``); an all-zero trace id or parent id is invalid. An invalid header is
treated as absent, and a new trace starts (`parse` returns None).

A traceparent travels from the gateway (the request's, or a new one) in the ``traceparent``
header of the job's message in JOBS to the worker, whose spans are its children, and from the
worker in the ``traceparent`` header of its backend's HTTP calls (worker.tracing).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["HEADER", "TraceParent", "new_trace", "parse"]

HEADER = "traceparent"
_HEX = re.compile(r"^[0-9a-f]+$")
SAMPLED = 0x01


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: str  # 32 lowercase hex
    parent_id: str  # 16 lowercase hex: the span this one's children hang under
    flags: int = SAMPLED

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags:02x}"

    def child(self, span_id: str) -> TraceParent:
        """The traceparent that names span `span_id` of this trace as the parent."""
        return TraceParent(self.trace_id, span_id, self.flags)


def _hex(value: str, size: int) -> bool:
    return len(value) == size and bool(_HEX.match(value)) and value != "0" * size


def parse(value: str | None) -> TraceParent | None:
    """The traceparent in a header value, or None if it is absent or invalid (see above)."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4:
        return None
    version, trace_id, parent_id, flags = parts[:4]
    if len(version) != 2 or not _HEX.match(version) or version == "ff":
        return None
    if version == "00" and len(parts) != 4:
        return None
    if not (_hex(trace_id, 32) and _hex(parent_id, 16)):
        return None
    if len(flags) != 2 or not _HEX.match(flags):
        return None
    return TraceParent(trace_id, parent_id, int(flags, 16))


def new_trace(random: Callable[[int], bytes] = os.urandom) -> TraceParent:
    """A new sampled trace with a random trace id and parent id (never all zeros)."""
    while True:
        trace_id, parent_id = random(16).hex(), random(8).hex()
        if _hex(trace_id, 32) and _hex(parent_id, 16):
            return TraceParent(trace_id, parent_id, SAMPLED)
