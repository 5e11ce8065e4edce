"""Uptime tiers: which share of its base pull rate a worker may use, given its uptime.

A policy is an ordered list of tiers, each a minimum uptime and a rate factor. The defaults are
the Livepeer runner's::

    uptime >= 0.99   full    factor 1.0
    uptime >= 0.95   half    factor 0.5
    uptime >= 0.90   tenth   factor 0.1
    below            none    factor 0.0   (still pings, and climbs back as its uptime recovers)

Boundaries are inclusive at the bottom: exactly 0.99 is `full`, exactly 0.95 is `half`. Which
slots the uptime counts is projections.absence's rule: planned absences (``draining`` or
``deregistered`` until the next registration) and silences of the whole fleet (a broker outage)
are cut out; unplanned silence while registered counts.

**New workers: probation.** A worker with fewer than ``probation_slots`` (default 100) complete
heartbeat slots since its first ping is in the ``probation`` tier, factor ``probation_factor``
(default 0.5), whatever its uptime so far. Why:

- Uptime from a handful of slots is noise. One missed ping among the first ten reads as 90%
  (the `tenth` tier, or `none` among the first five), while ten lucky pings read as 100% (`full`).
  Neither says anything about the machine; a hundred slots do (one slot is then 1%, the width of
  the top tier).
- An unproven machine should not take a full share at once: a worker that dies holds its jobs
  until AckWait expires, so the damage a flaky newcomer does grows with its rate. Half bounds it.
- It should not take nothing either: on a fresh cluster every worker is new, and a dev cluster
  (`jetgrid up`) must serve jobs from the first second. Uptime is measured from pings, not from
  jobs, so a worker proves itself while serving at half rate.
- Re-registering under a new worker id (or restarting with another heartbeat interval, which
  restarts the uptime record) therefore buys at most ``probation_slots`` slots at half rate, never
  a full share: gaming probation pays less than being reliable.

``probation_slots = 0`` turns probation off: the uptime of the first complete slot decides.

**Hysteresis** (default 0, off): climbing into a higher tier needs its threshold plus
``hysteresis``; falling uses the plain thresholds. It damps flapping for a worker that sits on a
boundary (each slot moves a 1 h window at 5 s pings by 0.14%).

A policy loads from a TOML file (``[tiers]`` table, see `TierPolicy.from_toml_text`) or from a
compact string such as ``"0.99:1.0,0.95:0.5,0.90:0.1,0:0"`` (``name=`` prefixes optional).
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jetgrid.events.errors import ConfigError

__all__ = [
    "DEFAULT_POLICY",
    "PROBATION",
    "Tier",
    "TierPolicy",
    "load_policy",
]

PROBATION = "probation"
# Absorbs float noise in an uptime computed as a ratio: 0.99 must be `full` however it was summed.
_EPS = 1e-12
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_DEFAULT_NAMES = {1.0: "full", 0.5: "half", 0.1: "tenth", 0.0: "none"}


@dataclass(frozen=True, slots=True)
class Tier:
    """One tier: workers with uptime >= `min_uptime` (and below the next tier up) get `factor`."""

    name: str
    min_uptime: float
    factor: float


def _number(value: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"Tier policy {what} has value {value!r}. Not a number.")
    f = float(value)
    if not math.isfinite(f) or not lo <= f <= hi:
        raise ConfigError(f"Tier policy {what} has value {value!r}. Must be between {lo} and {hi}.")
    return f


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"Tier policy {what} has value {value!r}. Not a whole number >= 0.")
    return value


@dataclass(frozen=True, slots=True)
class TierPolicy:
    """Tiers ordered by `min_uptime`, highest first, plus the probation rule for new workers."""

    tiers: tuple[Tier, ...]
    probation_slots: int = 100
    probation_factor: float = 0.5
    hysteresis: float = 0.0
    # Derived once in __post_init__ (the policy is frozen): tier_for runs on every ping.
    _probation: Tier = field(init=False, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _rank: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tiers = tuple(self.tiers)
        if not tiers:
            raise ConfigError("Tier policy has no tiers. Give at least one, starting at 0.")
        tiers = tuple(
            Tier(
                t.name,
                _number(t.min_uptime, f"tier {t.name!r} min_uptime", 0.0, 1.0),
                _number(t.factor, f"tier {t.name!r} factor", 0.0, 1.0),
            )
            for t in tiers
        )
        for t in tiers:
            if not isinstance(t.name, str) or not _NAME_RE.match(t.name) or t.name == PROBATION:
                raise ConfigError(
                    f"Tier name {t.name!r} is not allowed. Use 1-32 lower-case letters, digits, "
                    f"'-' or '_', starting with a letter, and not {PROBATION!r}."
                )
        names = [t.name for t in tiers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"Tier policy names {dup[0]!r} more than once.")
        ordered = tuple(sorted(tiers, key=lambda t: -t.min_uptime))
        for upper, lower in itertools.pairwise(ordered):
            if upper.min_uptime == lower.min_uptime:
                raise ConfigError(
                    f"Tiers {upper.name!r} and {lower.name!r} both start at uptime "
                    f"{upper.min_uptime!r}."
                )
            if upper.factor < lower.factor:
                raise ConfigError(
                    f"Tier {upper.name!r} (uptime >= {upper.min_uptime!r}) has factor "
                    f"{upper.factor!r}, less than the lower tier {lower.name!r} with factor "
                    f"{lower.factor!r}. A more reliable worker must not get less work."
                )
        if ordered[-1].min_uptime != 0.0:
            raise ConfigError(
                f"The lowest tier {ordered[-1].name!r} starts at uptime "
                f"{ordered[-1].min_uptime!r}; it must start at 0 so every uptime has a tier "
                "(add e.g. '0:0')."
            )
        object.__setattr__(self, "tiers", ordered)
        _count(self.probation_slots, "probation_slots")
        factor = _number(self.probation_factor, "probation_factor", 0.0, 1.0)
        object.__setattr__(self, "probation_factor", factor)
        object.__setattr__(self, "hysteresis", _number(self.hysteresis, "hysteresis", 0.0, 1.0))
        object.__setattr__(self, "_probation", Tier(PROBATION, 0.0, factor))
        object.__setattr__(self, "_names", (*(t.name for t in ordered), PROBATION))
        object.__setattr__(self, "_rank", {t.name: i for i, t in enumerate(ordered)})

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def default(cls) -> TierPolicy:
        """The Livepeer runner's tiers with the default probation rule."""
        return DEFAULT_POLICY

    @classmethod
    def from_string(
        cls,
        spec: str,
        *,
        probation_slots: int = 100,
        probation_factor: float = 0.5,
        hysteresis: float = 0.0,
    ) -> TierPolicy:
        """Parse ``"0.99:1.0,0.95:0.5,0.90:0.1,0:0"`` (each item ``[name=]min_uptime:factor``)."""
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigError(
                f"Tier policy {spec!r} is empty. Expected e.g. '0.99:1,0.95:0.5,0:0'."
            )
        tiers: list[Tier] = []
        for i, item in enumerate(p.strip() for p in spec.split(",")):
            name, _, body = item.rpartition("=")
            lo, sep, factor = body.partition(":")
            try:
                if not sep:
                    raise ValueError
                min_uptime, rate = float(lo), float(factor)
            except ValueError:
                raise ConfigError(
                    f"Tier policy item {item!r} (in {spec!r}) is not '[name=]min_uptime:factor', "
                    "e.g. '0.95:0.5' or 'half=0.95:0.5'."
                ) from None
            tiers.append(Tier(name.strip() or _default_name(rate, i, tiers), min_uptime, rate))
        return cls(
            tuple(tiers),
            probation_slots=probation_slots,
            probation_factor=probation_factor,
            hysteresis=hysteresis,
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TierPolicy:
        """Build from parsed TOML: a ``[tiers]`` table, or the same keys at the top level."""
        table = data.get("tiers", data)
        if not isinstance(table, Mapping):
            raise ConfigError(f"Tier policy 'tiers' has value {table!r}. Expected a table.")
        known = {"tier", "probation_slots", "probation_factor", "hysteresis"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(
                f"Tier policy has unknown key {unknown[0]!r}; known: {sorted(known)}."
            )
        items = table.get("tier")
        if not isinstance(items, list) or not items:
            raise ConfigError(
                f"Tier policy 'tier' has value {items!r}. Expected [[tiers.tier]] entries with "
                "name, min_uptime and factor."
            )
        tiers: list[Tier] = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or set(item) - {"name", "min_uptime", "factor"}:
                raise ConfigError(
                    f"Tier entry {item!r} must have only 'name', 'min_uptime' and 'factor'."
                )
            if "min_uptime" not in item or "factor" not in item:
                raise ConfigError(f"Tier entry {item!r} needs both 'min_uptime' and 'factor'.")
            factor = _number(item["factor"], f"entry {i} factor", 0.0, 1.0)
            tiers.append(
                Tier(
                    item.get("name", _default_name(factor, i, tiers)),
                    _number(item["min_uptime"], f"entry {i} min_uptime", 0.0, 1.0),
                    factor,
                )
            )
        return cls(
            tuple(tiers),
            probation_slots=table.get("probation_slots", 100),
            probation_factor=table.get("probation_factor", 0.5),
            hysteresis=table.get("hysteresis", 0.0),
        )

    @classmethod
    def from_toml_text(cls, text: str, source: str = "<string>") -> TierPolicy:
        """Parse TOML such as::

        [tiers]
        probation_slots = 100
        probation_factor = 0.5
        [[tiers.tier]]
        name = "full"
        min_uptime = 0.99
        factor = 1.0
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Tier policy file {source} is not valid TOML: {exc}.") from exc
        return cls.from_mapping(data)

    @classmethod
    def from_toml(cls, path: str | Path) -> TierPolicy:
        """Load a policy from a TOML file (see from_toml_text for the format)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"Tier policy file {str(p)!r} cannot be read: {exc}.") from exc
        return cls.from_toml_text(text, source=repr(str(p)))

    # -- decisions ------------------------------------------------------------------------------
    @property
    def probation(self) -> Tier:
        """The probation tier (one object for the policy's life)."""
        return self._probation

    @property
    def names(self) -> tuple[str, ...]:
        """Every tier name, highest first, then probation."""
        return self._names

    def tier_named(self, name: str) -> Tier:
        """The tier called `name` (probation included); KeyError if there is none."""
        if name == PROBATION:
            return self.probation
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(name)

    def factor(self, name: str) -> float:
        return self.tier_named(name).factor

    def by_uptime(self, uptime: float) -> Tier:
        """The tier an uptime earns by the thresholds alone (no probation, no hysteresis)."""
        for t in self.tiers:
            if uptime + _EPS >= t.min_uptime:
                return t
        return self.tiers[-1]

    def tier_for(
        self, uptime: float | None, observed_slots: int, current: str | None = None
    ) -> Tier:
        """The tier of a worker with `uptime` after `observed_slots` complete slots.

        `uptime` None (nothing observed yet) or fewer than `probation_slots` slots -> probation.
        `current`, the worker's tier now, only matters when hysteresis is on.
        """
        if uptime is None or observed_slots < self.probation_slots:
            return self._probation
        plain = self.by_uptime(uptime)
        if not self.hysteresis or current is None or current == PROBATION:
            return plain
        rank = self._rank
        if current not in rank or rank[plain.name] >= rank[current]:
            return plain  # staying or falling: plain thresholds
        for t in self.tiers[: rank[current]]:
            if uptime + _EPS >= t.min_uptime + self.hysteresis:
                return t
        return self.tiers[rank[current]]

    # -- views ----------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """The policy as plain JSON-able data, e.g. for ``GET /v1/tiers``."""
        tiers = []
        upper: float | None = None
        for t in self.tiers:
            tiers.append(
                {
                    "name": t.name,
                    "min_uptime": t.min_uptime,
                    "max_uptime": upper,
                    "factor": t.factor,
                }
            )
            upper = t.min_uptime
        return {
            "tiers": tiers,
            "probation": {
                "name": PROBATION,
                "slots": self.probation_slots,
                "factor": self.probation_factor,
            },
            "hysteresis": self.hysteresis,
        }

    def to_string(self) -> str:
        """The tiers in the compact form that from_string reads."""
        return ",".join(f"{t.name}={t.min_uptime!r}:{t.factor!r}" for t in self.tiers)


def _default_name(factor: float, index: int, taken: Iterable[Tier]) -> str:
    """`full`/`half`/`tenth`/`none` for the default factors, else (or if taken) ``tier<i>``."""
    name = _DEFAULT_NAMES.get(factor, f"tier{index}")
    return f"tier{index}" if any(t.name == name for t in taken) else name


def _tiers(items: Iterable[tuple[str, float, float]]) -> tuple[Tier, ...]:
    return tuple(Tier(n, u, f) for n, u, f in items)


DEFAULT_POLICY = TierPolicy(
    _tiers([("full", 0.99, 1.0), ("half", 0.95, 0.5), ("tenth", 0.90, 0.1), ("none", 0.0, 0.0)])
)


def load_policy(
    path: str | Path | None = None,
    spec: str | None = None,
    *,
    probation_slots: int | None = None,
    probation_factor: float | None = None,
    hysteresis: float | None = None,
) -> TierPolicy:
    """The policy from a TOML file or a compact string (not both), else the defaults.

    The keyword arguments, when given, override what the file or string says.
    """
    if path and spec:
        raise ConfigError(
            f"Both a tier policy file ({str(path)!r}) and a tier string ({spec!r}) are set; "
            "use one."
        )
    if path:
        policy = TierPolicy.from_toml(path)
    elif spec:
        policy = TierPolicy.from_string(spec)
    else:
        policy = DEFAULT_POLICY
    if probation_slots is None and probation_factor is None and hysteresis is None:
        return policy
    return TierPolicy(
        policy.tiers,
        probation_slots=policy.probation_slots if probation_slots is None else probation_slots,
        probation_factor=policy.probation_factor if probation_factor is None else probation_factor,
        hysteresis=policy.hysteresis if hysteresis is None else hysteresis,
    )
