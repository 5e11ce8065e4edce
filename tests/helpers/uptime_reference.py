"""A reference uptime tracker for tests: the straightforward implementation the production one
(jetgrid.projections.uptime) must match exactly.

Every bucket lives in one `counts` array that each fold copies whole, and a window read sums the
buckets it covers; slow, but obviously the rules of the module docstring of
jetgrid.projections.uptime. tests/projections/test_uptime_exact.py drives both through generated
histories and compares every reading and the persisted JSON.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, replace
from typing import Any

from jetgrid.projections.uptime import DEFAULT_WINDOWS, UptimeWindows, WindowUptime

_FORMAT = 2


@dataclass(frozen=True, slots=True)
class RefRing:
    """Healthy counts of folded slots for one window: counts[j] covers bucket `base + j`."""

    window_s: float
    slots: int  # N: slots in the window
    bucket: int  # S: slots per bucket
    keep: int  # buckets kept: enough to cover any window ending at or after the newest one
    base: int
    counts: array  # type: ignore[type-arg]  # array('I'), never mutated once in a ring

    def to_json(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "slots": self.slots,
            "bucket": self.bucket,
            "keep": self.keep,
            "base": self.base,
            "counts": self.counts.tolist(),
        }

    def fold(self, xs: list[int]) -> RefRing:
        counts = array("I", self.counts)
        base = self.base
        for x in xs:
            b = x // self.bucket
            if not counts or b - (base + len(counts) - 1) >= self.keep:
                counts, base = array("I", [1]), b
                continue
            last = base + len(counts) - 1
            if b > last:
                counts.extend([0] * (b - last - 1))
                counts.append(1)
            else:
                counts[b - base] += 1
        if len(counts) > self.keep:
            drop = len(counts) - self.keep
            del counts[:drop]
            base += drop
        return RefRing(self.window_s, self.slots, self.bucket, self.keep, base, counts)

    def healthy(self, lo: int, hi: int, first: int, fold_hi: int) -> float:
        """Healthy folded slots in [lo, hi), prorating buckets cut by the range."""
        hi = min(hi, fold_hi)
        lo = max(lo, first)
        if hi <= lo or not self.counts:
            return 0.0
        s = self.bucket
        j_lo = max(lo // s - self.base, 0)
        j_hi = min((hi - 1) // s - self.base, len(self.counts) - 1)
        if j_hi < j_lo:
            return 0.0
        total = 0.0
        for j in (j_lo,) if j_lo == j_hi else (j_lo, j_hi):
            c = self.counts[j]
            if c:
                b_lo = max((self.base + j) * s, first)
                b_hi = min((self.base + j) * s + s, fold_hi)
                part = min(b_hi, hi) - max(b_lo, lo)
                total += c if part >= b_hi - b_lo else c * part / (b_hi - b_lo)
        if j_hi - j_lo > 1:
            total += sum(self.counts[j_lo + 1 : j_hi])
        return total


@dataclass(frozen=True, slots=True)
class RefTracker:
    """One worker's healthy slots: an exact recent bitmap plus per-window bucket counts."""

    interval: float
    horizon: int
    rings: tuple[RefRing, ...]
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
    def start(cls, interval: float, windows: UptimeWindows = DEFAULT_WINDOWS) -> RefTracker:
        """An empty tracker for pings every `interval` seconds."""
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"A heartbeat interval must be > 0 seconds, got {interval!r}.")
        rings = []
        for w in windows.windows_s:
            n = max(1, round(w / interval))
            s = max(1, math.ceil(n / windows.max_buckets))
            rings.append(RefRing(w, n, s, math.ceil(n / s) + 2, 0, array("I")))
        return cls(float(interval), windows.horizon_slots, tuple(rings))

    def slot_of(self, t: float) -> int:
        """The slot holding event time `t` (only meaningful after the first ping)."""
        return math.floor((t - self.origin) / self.interval)

    # -- folding pings in -----------------------------------------------------------------------
    def ping(self, t: float, healthy: bool, *, reanchor: bool = False) -> RefTracker:
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

    def _reanchored(self, t: float) -> RefTracker:
        half = self.interval / 2
        delta = (t - half - self.origin) % self.interval
        if delta >= half:
            delta -= self.interval
        if delta == 0:
            return self
        return self._with(self.origin + delta, self.first_slot, self.top, self.mask, self.rings)

    def _advance(self, s: int, healthy: bool) -> RefTracker:
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
            rings = tuple(r.fold(xs) for r in rings)
        mask = ((self.mask << d) & ((1 << h) - 1)) if d < h else 0
        return self._with(self.origin, self.first_slot, s, mask | int(healthy), rings)

    def _with(
        self, origin: float, first: int | None, top: int, mask: int, rings: tuple[RefRing, ...]
    ) -> RefTracker:
        # Positional construction: dataclasses.replace costs several times more, once per ping.
        return RefTracker(
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
    def pause(self, t: float, *, until: float | None = None) -> RefTracker:
        """The tracker with its slot clock stopped at event time `t` (module docstring).

        `until`: a provisional pause for a silence that ended then (kept as `provisional`, for
        the reducer to `resume` at or `cancel`). Self if already paused or never pinged.
        """
        if self.first_slot is None or self.away is not None:
            return self
        return replace(self, away=max(self.slot_of(t), self.top), provisional=until)

    def resume(self, t: float) -> RefTracker:
        """The tracker counting again from event time `t`, the paused slots cut out."""
        if self.away is None:
            return self
        start = self.away + 1 if self.away == self.top and self.mask & 1 else self.away
        origin = t - self.interval / 2 - start * self.interval
        return replace(self, origin=origin, away=None, provisional=None, resumed=t)

    def cancel(self) -> RefTracker:
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

    def _ring(self, window_s: float) -> RefRing:
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
    def from_json(cls, data: dict[str, Any]) -> RefTracker:
        """Inverse of to_json; ValueError if `data` is not a tracker this code wrote."""
        try:
            if data["v"] not in (1, _FORMAT):
                raise ValueError(f"Uptime tracker format {data['v']!r} is not {_FORMAT}.")
            rings = tuple(
                RefRing(
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
