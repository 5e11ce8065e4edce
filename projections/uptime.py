"""Uptime from the log: the share of heartbeat slots in a window that held a healthy ping.

Definitions (all times are event times, in seconds; nothing here reads a clock):

- **Slots.** A worker's time is cut into slots one heartbeat interval long (the ``interval_s``
  its pings carry). The grid is anchored on the worker's first ping, half an interval before
  it, so pings on schedule fall mid-slot and scheduling jitter of up to half an interval never
  pushes two pings into one slot. After a reboot (the reducer passes ``reanchor=True`` on the
  first ping after a registration or a new boot id) the grid shifts by less than half a slot to
  the new phase; slot numbers carry on.
- **Healthy slot.** A slot is healthy if at least one ping with ``healthy=True`` fell in it. A
  second ping in the same slot, a duplicate, or an unhealthy ping changes nothing; a missed ping
  and an unhealthy ping both leave the slot unhealthy.
- **Window.** Uptime over a window of W seconds at log time ``now`` looks at the N = W/interval
  complete slots before the slot holding ``now`` (the slot in progress is not judged yet), or at
  fewer if the worker's first ping is more recent: a new worker is judged over the slots since
  its first ping. ``now`` is the projection's log clock, so a worker that stops pinging decays as
  the log moves on, and a replay computes the same numbers.
- **Pauses.** `pause` at event time t stops the slot clock: from the slot holding t (or the
  newest slot seen, if later) nothing is judged and pings are ignored, and while paused the
  window ends at that slot, so the uptime and the tier stand still. `resume` at t restarts it
  there: the grid is moved so that the slots in between vanish (they count neither for nor
  against), the window reaches back over the pause to the slots before it, and a ping older than
  the resume is ignored. The first slot after a resume is the paused slot itself if it holds no
  ping yet, else the next one. `cancel` ends a pause without moving the grid: the paused slots
  count, as missed unless pinged. The reducer pauses for planned absences (``draining`` or
  ``deregistered`` until the next registration) and, provisionally, for a silence of the whole
  fleet (rules in projections.absence); unplanned silence while registered is never paused.
- **Interval change.** Slots of different lengths cannot be compared: a tracker has one interval
  for life, and the reducer starts a new tracker (and probation) when a worker's pings change it.

Memory is bounded: the last ``horizon_slots`` slots (default 256) are kept exactly, one bit
each, which makes duplicates and out-of-order pings exact; older slots are folded into per-window
buckets of S slots holding healthy counts, with at most ``max_buckets`` buckets per window (for a
24 h window at 1 Hz: 256 buckets of 338 slots, about 1 KiB per worker and window). The one
bucket cut by the window's old edge is prorated, so an uptime is exact except for up to one
bucket's share at that edge; with ``max_buckets`` 256 that is at most 0.4% of the window, and
zero for a worker that behaves the same across the edge. A ping older than the exact horizon
arrives too late to be checked against its slot and is ignored.

The tracker is immutable: `UptimeTracker.ping` returns a new tracker, so reducers can keep the
old state. `to_json`/`from_json` turn it into plain JSON-able data and back, exactly.
"""

from __future__ import annotations

import math
import re
from array import array
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import Any, NamedTuple

from jetgrid.events.errors import ConfigError
from jetgrid.events.records import record

__all__ = [
    "DEFAULT_WINDOWS",
    "UptimeTracker",
    "UptimeWindows",
    "WindowUptime",
    "parse_duration",
    "window_label",
]

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_FORMAT = 2  # 2 added the pause fields; 1 is still read


def window_label(seconds: float) -> str:
    """A window's short name: 3600 -> ``1h``, 86400 -> ``24h``, 300 -> ``5m``, 90 -> ``90s``."""
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds!r}s"


def parse_duration(value: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"1h"``, ``"1.5d"`` -> seconds; ConfigError otherwise."""
    m = _DURATION_RE.match(value)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(
            f"Uptime window {value!r} is not a positive duration such as '90s', '15m', '1h'."
        )
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True, slots=True)
class UptimeWindows:
    """Which windows uptime is computed over, and which one decides the tier."""

    windows_s: tuple[float, ...] = (3600.0, 86400.0)
    tier_window_s: float | None = None  # None: the first window
    max_buckets: int = 256
    horizon_slots: int = 256

    def __post_init__(self) -> None:
        ws = tuple(float(w) for w in self.windows_s)
        if not ws or any(not math.isfinite(w) or w <= 0 for w in ws):
            raise ConfigError(f"Uptime windows {self.windows_s!r} must be positive durations.")
        if len(set(ws)) != len(ws):
            raise ConfigError(f"Uptime windows {self.windows_s!r} name a window twice.")
        object.__setattr__(self, "windows_s", ws)
        tier = ws[0] if self.tier_window_s is None else float(self.tier_window_s)
        if tier not in ws:
            raise ConfigError(
                f"Tier window {self.tier_window_s!r} is not one of the uptime windows {ws!r}."
            )
        object.__setattr__(self, "tier_window_s", tier)
        if self.max_buckets < 1 or self.horizon_slots < 1:
            raise ConfigError(
                f"Uptime max_buckets ({self.max_buckets!r}) and horizon_slots "
                f"({self.horizon_slots!r}) must be at least 1."
            )

    @classmethod
    def parse(cls, spec: str, tier_window: str | None = None) -> UptimeWindows:
        """From ``"1h,24h"`` (and optionally ``tier_window="1h"``)."""
        ws = tuple(parse_duration(p) for p in spec.split(","))
        return cls(ws, None if tier_window is None else parse_duration(tier_window))

    @property
    def tier_window(self) -> float:
        return self.tier_window_s  # type: ignore[return-value]  # set in __post_init__

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(window_label(w) for w in self.windows_s)


DEFAULT_WINDOWS = UptimeWindows()


@record
class WindowUptime:
    """Uptime over one window at one log time: `healthy` of `slots` complete slots."""

    window_s: float
    slots: int
    healthy: float
    uptime: float | None  # None when no complete slot has been observed

    @property
    def label(self) -> str:
        return window_label(self.window_s)


class _Ring(NamedTuple):
    """Healthy counts of folded slots for one window, bucket `base + j` in position j.

    The newest bucket is the one a steady ping folds into, so it is kept apart: `done[j]` is
    complete bucket `base + j`, `tail` the count of bucket `base + len(done)` (None while the
    ring is empty), and `sums[j]` the total of `done[:j]`. Folding a slot into the tail makes a
    new ring sharing `done` and `sums`; they are copied only when a new bucket starts, and a
    window's sum over whole buckets is one subtraction. `counts` is every bucket in one array,
    as persisted. `done` and `sums` are never mutated once in a ring. (A named tuple, not a
    dataclass: one is made per window on every folding ping, and a tuple is made 4x faster.)
    """

    window_s: float
    slots: int  # N: slots in the window
    bucket: int  # S: slots per bucket
    keep: int  # buckets kept: enough to cover any window ending at or after the newest one
    base: int
    done: array[int]  # array('I')
    tail: int | None
    sums: array[int]  # array('Q'), len(done) + 1 entries

    @classmethod
    def of(
        cls,
        window_s: float,
        slots: int,
        bucket: int,
        keep: int,
        base: int,
        counts: array[int],
    ) -> _Ring:
        """The ring holding `counts` (array('I'), every bucket from `base` on; not kept)."""
        if not counts:
            return cls(window_s, slots, bucket, keep, base, counts, None, _EMPTY_SUMS)
        done = counts[:-1]
        return cls(window_s, slots, bucket, keep, base, done, counts[-1], _sums(done))

    @property
    def counts(self) -> array[int]:
        """Every bucket's count from `base` on, in a new array('I')."""
        counts = array("I", self.done)
        if self.tail is not None:
            counts.append(self.tail)
        return counts

    def to_json(self) -> dict[str, Any]:
        head = zip(("window_s", "slots", "bucket", "keep", "base"), self, strict=False)
        return {**dict(head), "counts": self.counts.tolist()}

    def fold(self, xs: list[int]) -> _Ring:
        """The ring with one healthy slot added for each slot in `xs` (ascending)."""
        window_s, slots, bucket, keep, base, done, tail, sums = self
        if len(xs) == 1 and tail is not None:
            n = len(done)
            b = xs[0] // bucket - base - n
            if b == 0 and n < keep:  # the common case: into the newest bucket
                return _Ring(window_s, slots, bucket, keep, base, done, tail + 1, sums)
            if b == 1 and n + 2 <= keep:  # the next bucket, none dropped
                done = array("I", done)
                done.append(tail)
                sums = array("Q", sums)
                sums.append(sums[-1] + tail)
                return _Ring(window_s, slots, bucket, keep, base, done, 1, sums)
        counts = self.counts
        for x in xs:
            b = x // bucket
            if not counts or b - (base + len(counts) - 1) >= keep:
                counts, base = array("I", [1]), b
                continue
            last = base + len(counts) - 1
            if b > last:
                counts.extend([0] * (b - last - 1))
                counts.append(1)
            else:
                counts[b - base] += 1
        if len(counts) > keep:
            drop = len(counts) - keep
            del counts[:drop]
            base += drop
        return _Ring.of(window_s, slots, bucket, keep, base, counts)

    def healthy(self, lo: int, hi: int, first: int, fold_hi: int) -> float:
        """Healthy folded slots in [lo, hi), prorating buckets cut by the range."""
        _, _, s, _, base, done, tail, sums = self
        hi = min(hi, fold_hi)
        lo = max(lo, first)
        if hi <= lo or tail is None:
            return 0.0
        n = len(done)  # the tail's position
        j_lo = max(lo // s - base, 0)
        j_hi = min((hi - 1) // s - base, n)
        if j_hi < j_lo:
            return 0.0
        total = 0.0
        for j in (j_lo,) if j_lo == j_hi else (j_lo, j_hi):
            c = done[j] if j < n else tail
            if c:
                b_lo = max((base + j) * s, first)
                b_hi = min((base + j) * s + s, fold_hi)
                part = min(b_hi, hi) - max(b_lo, lo)
                total += c if part >= b_hi - b_lo else c * part / (b_hi - b_lo)
        if j_hi - j_lo > 1:
            total += sums[j_hi] - sums[j_lo + 1]
        return total


_EMPTY_SUMS = array("Q", [0])


def _sums(done: array[int]) -> array[int]:
    """Prefix sums of `done`: entry j is the total of done[:j]."""
    return array("Q", accumulate(done, initial=0))


@record
class UptimeTracker:
    """One worker's healthy slots: an exact recent bitmap plus per-window bucket counts."""

    interval: float
    horizon: int
    rings: tuple[_Ring, ...]
    origin: float = 0.0
    first_slot: int | None = None  # None until the first ping
    top: int = 0  # newest slot seen; bit i of `mask` is slot top - i
    mask: int = 0
    away: int | None = None  # paused at this slot (module docstring), None while counting
    # A fleet silence not yet decided (the reducer's): the event time the silence ended.
    provisional: float | None = None
    resumed: float | None = None  # event time of the last resume: older pings are ignored

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def start(cls, interval: float, windows: UptimeWindows = DEFAULT_WINDOWS) -> UptimeTracker:
        """An empty tracker for pings every `interval` seconds."""
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"A heartbeat interval must be > 0 seconds, got {interval!r}.")
        rings = []
        for w in windows.windows_s:
            n = max(1, round(w / interval))
            s = max(1, math.ceil(n / windows.max_buckets))
            rings.append(_Ring.of(w, n, s, math.ceil(n / s) + 2, 0, array("I")))
        return cls(float(interval), windows.horizon_slots, tuple(rings))

    def slot_of(self, t: float) -> int:
        """The slot holding event time `t` (only meaningful after the first ping)."""
        return math.floor((t - self.origin) / self.interval)

    # -- folding pings in -----------------------------------------------------------------------
    def ping(self, t: float, healthy: bool, *, reanchor: bool = False) -> UptimeTracker:
        """The tracker after a ping at event time `t` (self when nothing changes)."""
        if self.first_slot is None:
            return self._with(t - self.interval / 2, 0, 0, int(healthy), self.rings)
        if self.resumed is not None and t < self.resumed:
            return self  # from before a pause: its slot is gone (module docstring)
        if self.away is not None:
            if self.slot_of(t) >= self.away:
                return self  # paused: neither for nor against
            reanchor = False
        tracker = self._reanchored(t) if reanchor else self
        s = tracker.slot_of(t)
        if s > tracker.top:
            return tracker._advance(s, healthy)
        if s <= tracker.top - tracker.horizon:
            return tracker  # too old to check against its slot: ignored (module docstring)
        bit = 1 << (tracker.top - s)
        first = s if tracker.first_slot is None else min(tracker.first_slot, s)
        mask = tracker.mask | bit if healthy else tracker.mask
        if mask == tracker.mask and first == tracker.first_slot:
            return tracker
        return tracker._with(tracker.origin, first, tracker.top, mask, tracker.rings)

    def _reanchored(self, t: float) -> UptimeTracker:
        half = self.interval / 2
        delta = (t - half - self.origin) % self.interval
        if delta >= half:
            delta -= self.interval
        if delta == 0:
            return self
        return self._with(self.origin + delta, self.first_slot, self.top, self.mask, self.rings)

    def _advance(self, s: int, healthy: bool) -> UptimeTracker:
        d = s - self.top
        h = self.horizon
        shift = h - d if d < h else 0
        expiring = self.mask >> shift
        rings = self.rings
        if expiring:
            xs = []
            while expiring:
                j = expiring.bit_length() - 1
                xs.append(self.top - (j + shift))
                expiring ^= 1 << j
            rings = tuple([r.fold(xs) for r in rings])
        mask = ((self.mask << d) & ((1 << h) - 1)) if d < h else 0
        return self._with(self.origin, self.first_slot, s, mask | int(healthy), rings)

    def _with(
        self, origin: float, first: int | None, top: int, mask: int, rings: tuple[_Ring, ...]
    ) -> UptimeTracker:
        # Positional construction: dataclasses.replace costs several times more, once per ping.
        return UptimeTracker(
            self.interval,
            self.horizon,
            rings,
            origin,
            first,
            top,
            mask,
            self.away,
            self.provisional,
            self.resumed,
        )

    # -- pauses ---------------------------------------------------------------------------------
    def pause(self, t: float, *, until: float | None = None) -> UptimeTracker:
        """The tracker with its slot clock stopped at event time `t` (module docstring).

        `until`: a provisional pause for a silence that ended then (kept as `provisional`, for
        the reducer to `resume` at or `cancel`). Self if already paused or never pinged.
        """
        if self.first_slot is None or self.away is not None:
            return self
        return replace(self, away=max(self.slot_of(t), self.top), provisional=until)

    def resume(self, t: float) -> UptimeTracker:
        """The tracker counting again from event time `t`, the paused slots cut out."""
        if self.away is None:
            return self
        start = self.away + 1 if self.away == self.top and self.mask & 1 else self.away
        origin = t - self.interval / 2 - start * self.interval
        return replace(self, origin=origin, away=None, provisional=None, resumed=t)

    def cancel(self) -> UptimeTracker:
        """The tracker unpaused without moving its grid: the paused slots count."""
        if self.away is None:
            return self
        return replace(self, away=None, provisional=None)

    def _judged_slot(self, now: float) -> int:
        """The slot in progress at `now`: the window ends before it (at the pause if paused)."""
        hi = self.slot_of(now)
        return hi if self.away is None else min(hi, self.away)

    # -- reading --------------------------------------------------------------------------------
    def observed_slots(self, now: float) -> int:
        """Complete slots since the first ping, as of log time `now`."""
        if self.first_slot is None:
            return 0
        return max(0, self._judged_slot(now) - self.first_slot)

    def window(self, now: float, window_s: float) -> WindowUptime:
        """Uptime over the configured window `window_s` as of log time `now`."""
        ring = self._ring(window_s)
        if self.first_slot is None:
            return WindowUptime(window_s, 0, 0.0, None)
        hi = self._judged_slot(now)
        lo = max(hi - ring.slots, self.first_slot)
        if hi <= lo:
            return WindowUptime(window_s, 0, 0.0, None)
        healthy: float = 0
        a, b = max(lo, self.top - self.horizon + 1), min(hi, self.top + 1)
        if b > a:
            healthy = ((self.mask >> (self.top - b + 1)) & ((1 << (b - a)) - 1)).bit_count()
        healthy += ring.healthy(lo, hi, self.first_slot, self.top - self.horizon + 1)
        return WindowUptime(window_s, hi - lo, healthy, healthy / (hi - lo))

    def uptime(self, now: float, window_s: float) -> float | None:
        """Share of healthy slots in the window, or None before any complete slot."""
        return self.window(now, window_s).uptime

    def windows(self, now: float) -> tuple[WindowUptime, ...]:
        """Uptime over every configured window as of `now`."""
        return tuple(self.window(now, r.window_s) for r in self.rings)

    def _ring(self, window_s: float) -> _Ring:
        for r in self.rings:
            if r.window_s == window_s:
                return r
        have = [r.window_s for r in self.rings]
        raise KeyError(f"No uptime window of {window_s!r} s; have {have}.")

    @property
    def windows_s(self) -> tuple[float, ...]:
        return tuple(r.window_s for r in self.rings)

    # -- persistence ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able data that from_json turns back into an equal tracker."""
        return {
            "v": _FORMAT,
            "interval": self.interval,
            "horizon": self.horizon,
            "origin": self.origin,
            "first_slot": self.first_slot,
            "away": self.away,
            "provisional": self.provisional,
            "resumed": self.resumed,
            "top": self.top,
            "mask": format(self.mask, "x"),
            "windows": [r.to_json() for r in self.rings],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UptimeTracker:
        """Inverse of to_json; ValueError if `data` is not a tracker this code wrote."""
        try:
            if data["v"] not in (1, _FORMAT):
                raise ValueError(f"Uptime tracker format {data['v']!r} is not {_FORMAT}.")
            rings = tuple(
                _Ring.of(
                    float(r["window_s"]),
                    int(r["slots"]),
                    int(r["bucket"]),
                    int(r["keep"]),
                    int(r["base"]),
                    array("I", (int(c) for c in r["counts"])),
                )
                for r in data["windows"]
            )
            first = data["first_slot"]
            away, resumed, held = data.get("away"), data.get("resumed"), data.get("provisional")
            return cls(
                interval=float(data["interval"]),
                horizon=int(data["horizon"]),
                rings=rings,
                origin=float(data["origin"]),
                first_slot=None if first is None else int(first),
                top=int(data["top"]),
                mask=int(data["mask"], 16),
                away=None if away is None else int(away),
                provisional=None if held is None else float(held),
                resumed=None if resumed is None else float(resumed),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"Not a serialised uptime tracker: {exc!r}.") from exc
