"""A worker view's stored form: `to_dict` / `from_dict`, and its JSON text, with the parts that
rarely change encoded once (`ViewEncoder`).

`to_dict` holds the whole view (uptime tracker and dedupe keys included); `from_dict` gives an
equal view back, and reads views stored before a field was added.

A live projector writes every pinging worker's row in every batch, and encoding the ~2 KB view
(`to_dict` then `json.dumps`) was the largest single cost of a ping. Most
of the view does not change between pings: the worker's identity and registration details, its
lifecycle times, its tier history, and the static parts of its uptime tracker. `ViewEncoder`
keeps, per worker, the text of those parts with the values they were made from, and re-encodes
a part only when one of its values differs (compared with ``==``: tuples of the same objects
compare by identity first, so an unchanged part costs a tuple comparison).

The text is exactly ``json.dumps(to_dict(view), separators=(",", ":"))``: every piece comes
from that same encoder, and a JSON object is ``{`` + its members joined by ``,`` + ``}``, so
encoding a dict of some of the members and gluing the pieces gives the same bytes. The stored
views (and the store's digest) do not change; tests/projections/test_view_json.py compares the
two on varied views.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jetgrid.events.codec import format_time as _format_time
from jetgrid.events.codec import parse_time
from jetgrid.events.errors import InvalidEvent
from jetgrid.events.workers import GpuTelemetry
from jetgrid.projections import workers as wr
from jetgrid.projections.uptime import _FORMAT as _UPTIME_FORMAT
from jetgrid.projections.uptime import UptimeTracker
from jetgrid.projections.workers import LastPing, WorkerView

__all__ = [
    "ViewEncoder",
    "format_optional_time",
    "format_time",
    "from_dict",
    "parse_optional_time",
    "to_dict",
    "view_json",
]

_ENC = json.JSONEncoder(separators=(",", ":"))
# The C encoder that _ENC.encode builds on every call, built once (no circular-reference
# markers: a view's parts are trees): the same text, without a per-call setup that cost as
# much as encoding the small parts of a view.
_C_ENCODE: Any = getattr(json.encoder, "c_make_encoder", None)
if _C_ENCODE is not None:
    _C_ENCODE = _C_ENCODE(
        None, _ENC.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False,
        True,
    )  # fmt: skip


def _encode(obj: Any) -> str:
    """`json.dumps(obj, separators=(",", ":"))`."""
    if _C_ENCODE is None:
        return _ENC.encode(obj)
    return "".join(_C_ENCODE(obj, 0))


_FORMAT = 1


@functools.lru_cache(maxsize=16384)
def format_time(t: datetime) -> str:
    """events.codec.format_time, memoised: a view repeats the same few times in every to_dict
    (first seen, registration, tier history), and strftime was a tenth of a projector's work."""
    return _format_time(t)


def format_optional_time(t: datetime | None) -> str | None:
    """format_time, or None."""
    return None if t is None else format_time(t)


# GpuTelemetry.model_dump() without its per-call keyword handling (the same dict).
_gpu_dict = GpuTelemetry.__pydantic_serializer__.to_python


def _ping_dict(p: LastPing) -> dict[str, Any]:
    # The model lists are added only when non-empty, so views stored before they existed (and
    # the views of backends without models) keep their exact text and digest.
    d: dict[str, Any] = {
        "time": format_time(p.time),
        "n": p.n,
        "healthy": p.healthy,
        "interval_s": p.interval_s,
        "in_flight": p.in_flight,
        "completed": p.completed,
        "failed": p.failed,
        "accepting": p.accepting,
        "nvml": p.nvml,
        "nvml_error": p.nvml_error,
        "gpus": [_gpu_dict(g) for g in p.gpus] if p.gpus else [],
        "gpu_count": p.gpu_count,
        "gpus_unresponsive": p.gpus_unresponsive,
        "tier_factor": p.tier_factor,
        "boot_id": p.boot_id,
    }
    if p.models_loaded:
        d["models_loaded"] = list(p.models_loaded)
    if p.models_available:
        d["models_available"] = list(p.models_available)
    return d


def to_dict(view: WorkerView) -> dict[str, Any]:
    """The whole view (tracker and dedupe keys included) as JSON-able data; see from_dict."""
    return {
        "v": _FORMAT,
        "worker_id": view.worker_id,
        "first_seen": format_time(view.first_seen),
        "last_seen": format_time(view.last_seen),
        "as_of": format_time(view.as_of),
        "registered": view.registered,
        "registered_at": format_optional_time(view.registered_at),
        "registrations": view.registrations,
        "pools": list(view.pools),
        "models": list(view.models),
        "backend": view.backend,
        "concurrency": view.concurrency,
        "hostname": view.hostname,
        "jetgrid_version": view.jetgrid_version,
        "boot_id": view.boot_id,
        "heartbeat_interval_s": view.heartbeat_interval_s,
        "draining_at": format_optional_time(view.draining_at),
        "drain_reason": view.drain_reason,
        "deregistered_at": format_optional_time(view.deregistered_at),
        "deregister_reason": view.deregister_reason,
        "last_ping": None if view.last_ping is None else _ping_dict(view.last_ping),
        "pings": view.pings,
        "healthy_pings": view.healthy_pings,
        "late_pings": view.late_pings,
        "uptime": None if view.uptime is None else view.uptime.to_json(),
        "tier": view.tier,
        "tier_since": format_optional_time(view.tier_since),
        "tier_history": [[format_time(t), name] for t, name in view.tier_history],
        "recent": list(view.recent),
        "seen_boot": view.seen_boot,
        "seen_n": view.seen_n,
        "seen_mask": format(view.seen_mask, "x"),
        "reanchor": view.reanchor,
    }


def parse_optional_time(value: str | None) -> datetime | None:
    """parse_time, or None."""
    return None if value is None else parse_time(value)


def from_dict(data: Mapping[str, Any]) -> WorkerView:
    """Inverse of to_dict: an equal view; ValueError if `data` is not one."""
    try:
        if data["v"] != _FORMAT:
            raise ValueError(f"Worker view format {data['v']!r} is not {_FORMAT}.")
        p = data["last_ping"]
        ping = None
        if p is not None:
            ping = LastPing(
                time=parse_time(p["time"]),
                n=p["n"],
                healthy=p["healthy"],
                interval_s=p["interval_s"],
                in_flight=p["in_flight"],
                completed=p["completed"],
                failed=p["failed"],
                accepting=p["accepting"],
                nvml=p["nvml"],
                nvml_error=p["nvml_error"],
                gpus=tuple(GpuTelemetry.model_validate(g) for g in p["gpus"]),
                tier_factor=p["tier_factor"],
                boot_id=p["boot_id"],
                models_loaded=tuple(p.get("models_loaded", ())),
                models_available=tuple(p.get("models_available", ())),
            )
        return WorkerView(
            worker_id=data["worker_id"],
            first_seen=parse_time(data["first_seen"]),
            last_seen=parse_time(data["last_seen"]),
            as_of=parse_time(data["as_of"]),
            registered=data["registered"],
            registered_at=parse_optional_time(data["registered_at"]),
            registrations=data["registrations"],
            pools=tuple(data["pools"]),
            models=tuple(data["models"]),
            backend=data["backend"],
            concurrency=data["concurrency"],
            hostname=data["hostname"],
            jetgrid_version=data["jetgrid_version"],
            boot_id=data["boot_id"],
            heartbeat_interval_s=data["heartbeat_interval_s"],
            draining_at=parse_optional_time(data["draining_at"]),
            drain_reason=data["drain_reason"],
            deregistered_at=parse_optional_time(data["deregistered_at"]),
            deregister_reason=data["deregister_reason"],
            last_ping=ping,
            pings=data["pings"],
            healthy_pings=data["healthy_pings"],
            late_pings=data["late_pings"],
            uptime=None if data["uptime"] is None else UptimeTracker.from_json(data["uptime"]),
            tier=data["tier"],
            tier_since=parse_optional_time(data["tier_since"]),
            tier_history=tuple((parse_time(t), n) for t, n in data["tier_history"]),
            recent=tuple(data["recent"]),
            seen_boot=data["seen_boot"],
            seen_n=data["seen_n"],
            seen_mask=int(data["seen_mask"], 16),
            reanchor=data["reanchor"],
        )
    except (KeyError, TypeError, ValueError, InvalidEvent) as exc:
        raise ValueError(f"Not a serialised worker view: {exc!r}.") from exc


def view_json(view: wr.WorkerView) -> str:
    """The reference: the view's JSON text without any caching."""
    return _encode(to_dict(view))


def _members(d: dict[str, Any]) -> str:
    """The members of an encoded dict, without the braces (`d` must not be empty)."""
    return _encode(d)[1:-1]


class _Cached:
    """The last key and text of each cached part of one worker's view."""

    __slots__ = (
        "ident",
        "ident_text",
        "reg",
        "reg_text",
        "rings",
        "tier",
        "tier_text",
        "up",
        "up_text",
    )

    def __init__(self) -> None:
        self.ident: Any = None
        self.ident_text = ""
        self.reg: Any = None
        self.reg_text = ""
        self.tier: Any = None
        self.tier_text = ""
        self.up: Any = None
        self.up_text = ""
        self.rings: list[_RingText] = []


class _RingText:
    """The text of one uptime ring (`_Ring.to_json`, encoded) and what it was made from.

    A ring's counts change at their newest bucket (`tail`: a healthy slot leaving the exact
    horizon adds one there, or starts a new bucket and joins the complete ones, `done`); the
    complete buckets keep their text. `head` is the text up to the counts, `prefix` that of
    every complete bucket, each followed by ``,``.
    """

    __slots__ = ("done", "head", "head_key", "prefix", "ring", "text")

    def __init__(self) -> None:
        self.ring: Any = None
        self.text = ""
        self.head_key: Any = None
        self.head = ""
        self.done: Any = None  # the complete buckets `prefix` was made from (never mutated)
        self.prefix = ""

    def encode(self, ring: Any) -> str:
        if ring is self.ring:
            return self.text
        key = (ring.window_s, type(ring.window_s), ring.slots, ring.bucket, ring.keep, ring.base)
        if key != self.head_key:
            self.head_key = key
            self.head = _encode({**ring.to_json(), "counts": []})[: -len("]}")]
            self.done = None
        done, old = ring.done, self.done
        if ring.tail is None:
            self.done, self.prefix = None, ""
            text = f"{self.head}]}}"
        else:
            if old is None or (done is not old and done != old):
                if old is not None and len(old) == len(done) - 1 and old == done[:-1]:
                    self.prefix = f"{self.prefix}{done[-1]},"  # a new bucket: one more done
                else:
                    self.prefix = "".join(f"{c}," for c in done)
            self.done = done
            text = f"{self.head}{self.prefix}{ring.tail}]}}"
        self.ring, self.text = ring, text
        return text


class ViewEncoder:
    """`encode(view)` == `view_json(view)`, faster for a worker encoded before (see module)."""

    def __init__(self) -> None:
        self._cache: dict[str, _Cached] = {}

    def encode(self, view: wr.WorkerView) -> str:
        c = self._cache.get(view.worker_id)
        if c is None:
            c = self._cache[view.worker_id] = _Cached()
        iso = format_optional_time
        fmt = format_time
        # v, worker_id, first_seen
        key: Any = view.first_seen
        if c.ident != key or not c.ident_text:
            c.ident = key
            c.ident_text = _members(
                {"v": _FORMAT, "worker_id": view.worker_id, "first_seen": fmt(view.first_seen)}
            )
        # registered .. deregister_reason
        key = (
            view.registered, view.registered_at, view.registrations, view.pools, view.models,
            view.backend, view.concurrency, view.hostname, view.jetgrid_version, view.boot_id,
            view.heartbeat_interval_s, view.draining_at, view.drain_reason, view.deregistered_at,
            view.deregister_reason,
            # 1 == 1.0 but they encode differently: the type is part of the key.
            type(view.heartbeat_interval_s),
        )  # fmt: skip
        if c.reg != key or not c.reg_text:
            c.reg = key
            c.reg_text = _members(
                {
                    "registered": view.registered,
                    "registered_at": iso(view.registered_at),
                    "registrations": view.registrations,
                    "pools": list(view.pools),
                    "models": list(view.models),
                    "backend": view.backend,
                    "concurrency": view.concurrency,
                    "hostname": view.hostname,
                    "jetgrid_version": view.jetgrid_version,
                    "boot_id": view.boot_id,
                    "heartbeat_interval_s": view.heartbeat_interval_s,
                    "draining_at": iso(view.draining_at),
                    "drain_reason": view.drain_reason,
                    "deregistered_at": iso(view.deregistered_at),
                    "deregister_reason": view.deregister_reason,
                }
            )
        # tier, tier_since, tier_history
        key = (view.tier, view.tier_since, view.tier_history)
        if c.tier != key or not c.tier_text:
            c.tier = key
            c.tier_text = _members(
                {
                    "tier": view.tier,
                    "tier_since": iso(view.tier_since),
                    "tier_history": [[fmt(t), name] for t, name in view.tier_history],
                }
            )
        ping = view.last_ping
        # format_time's text is digits and "-:.TZ": JSON needs only the quotes around it.
        head = f'"last_seen":"{fmt(view.last_seen)}","as_of":"{fmt(view.as_of)}"'
        middle = _members(
            {
                "last_ping": None if ping is None else _ping_dict(ping),
                "pings": view.pings,
                "healthy_pings": view.healthy_pings,
                "late_pings": view.late_pings,
            }
        )
        tail = _members(
            {
                "recent": list(view.recent),
                "seen_boot": view.seen_boot,
                "seen_n": view.seen_n,
                "seen_mask": format(view.seen_mask, "x"),
                "reanchor": view.reanchor,
            }
        )
        uptime = "null" if view.uptime is None else self._uptime(c, view.uptime)
        return (
            f"{{{c.ident_text},{head},{c.reg_text},{middle},"
            f'"uptime":{uptime},{c.tier_text},{tail}}}'
        )

    @staticmethod
    def _uptime(c: _Cached, tracker: UptimeTracker) -> str:
        # UptimeTracker.to_json, encoded: everything but top, mask and the rings' base and
        # counts is fixed for a tracker's life (origin moves only on a reboot or a resume, the
        # pause fields only at a pause or a resume).
        key = (
            type(tracker.interval),
            type(tracker.origin),
            tracker.interval,
            tracker.horizon,
            tracker.origin,
            tracker.first_slot,
            tracker.away,
            tracker.provisional,
            tracker.resumed,
            type(tracker.resumed),
            tuple((r.window_s, r.slots, r.bucket, r.keep) for r in tracker.rings),
        )
        if c.up != key or not c.up_text:
            c.up = key
            c.up_text = _encode(
                {
                    "v": _UPTIME_FORMAT,
                    "interval": tracker.interval,
                    "horizon": tracker.horizon,
                    "origin": tracker.origin,
                    "first_slot": tracker.first_slot,
                    "away": tracker.away,
                    "provisional": tracker.provisional,
                    "resumed": tracker.resumed,
                    "top": 0,
                }
            )[: -len("0}")]
        texts = c.rings
        while len(texts) < len(tracker.rings):
            texts.append(_RingText())
        rings = ",".join(texts[i].encode(r) for i, r in enumerate(tracker.rings))
        return f'{c.up_text}{tracker.top},"mask":"{tracker.mask:x}","windows":[{rings}]}}'
