"""Simulated unreliable workers (``--simulate-uptime 0.92 --seed S``): a reproducible schedule.

`UptimeSchedule.ping_outcome(n)` says what the worker does at heartbeat tick n: send a healthy
ping, skip it ("missed"), or send an unhealthy one. The healthy ticks are spread evenly, like
Bresenham's line: with p = a/q, tick n is healthy when ``floor((n+1)a/q + phase)`` steps up, so
any W consecutive ticks hold floor(Wp) or ceil(Wp) healthy ones, i.e. their healthy share is
within 1/W of p. That is what makes 99.5%, 98%, 92% and 85% workers land in four different tiers
after a few hundred pings, where random misses would blur 99.5% and 98% for thousands. The seed
picks the phase (so simulated workers do not miss in lockstep) and, for each bad tick, whether
it is missed or unhealthy (``unhealthy_share`` of them on average). Everything is integer
arithmetic and a keyed hash: the same seed gives the same schedule on any machine.

Ticks count heartbeat intervals, not pings sent: the worker must advance n on every tick,
including the ones it skips, so slot k of the uptime tracker is tick k.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from jetgrid.events.errors import ConfigError

__all__ = ["Outcome", "UptimeSchedule", "parse_uptime"]

Outcome = Literal["healthy", "missed", "unhealthy"]
_MAX_DENOMINATOR = 1_000_000


def parse_uptime(value: str | float) -> float:
    """``"0.92"``, ``0.92`` or ``"92%"`` -> 0.92; ConfigError quoting anything else."""
    text = str(value).strip()
    try:
        p = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        p = float("nan")
    if not 0.0 <= p <= 1.0:  # also rejects nan
        raise ConfigError(
            f"Simulated uptime has value {value!r}. Must be a share between 0 and 1 "
            "(e.g. 0.92) or a percentage (e.g. 92%)."
        )
    return p


@dataclass(frozen=True, slots=True)
class UptimeSchedule:
    """Which ticks are healthy, missed or unhealthy for a worker simulating `uptime`."""

    uptime: float
    seed: int = 0
    unhealthy_share: float = 0.5
    _num: int = field(init=False, repr=False, compare=False)
    _den: int = field(init=False, repr=False, compare=False)
    _phase: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        p = parse_uptime(self.uptime)
        if not 0.0 <= self.unhealthy_share <= 1.0:
            raise ConfigError(
                f"Simulated unhealthy_share has value {self.unhealthy_share!r}. "
                "Must be between 0 and 1."
            )
        frac = Fraction(p).limit_denominator(_MAX_DENOMINATOR)
        object.__setattr__(self, "uptime", p)
        object.__setattr__(self, "_num", frac.numerator)
        object.__setattr__(self, "_den", frac.denominator)
        object.__setattr__(self, "_phase", random.Random(self.seed).randrange(frac.denominator))

    def healthy(self, n: int) -> bool:
        """Whether tick `n` (0, 1, 2, ...) is a healthy ping."""
        if n < 0:
            raise ValueError(f"Tick numbers start at 0, got {n}.")
        a, q, phi = self._num, self._den, self._phase
        return ((n + 1) * a + phi) // q > (n * a + phi) // q

    def ping_outcome(self, n: int) -> Outcome:
        """What the worker does at tick `n`: ``healthy``, ``missed`` or ``unhealthy``."""
        if self.healthy(n):
            return "healthy"
        digest = hashlib.blake2b(f"{self.seed}:{n}".encode(), digest_size=8).digest()
        draw = int.from_bytes(digest, "big") / 2**64
        return "unhealthy" if draw < self.unhealthy_share else "missed"

    def outcomes(self, start: int, count: int) -> list[Outcome]:
        """Outcomes of ticks start .. start+count-1."""
        return [self.ping_outcome(n) for n in range(start, start + count)]
