"""A worker's tier: watched in the tiers KV bucket, applied to its pulls through a `PullGate`.

The projector puts key ``<worker_id>`` in bucket ``Settings.tiers_bucket`` whenever the worker's
tier or factor changes (value: JSON with at least ``tier`` and ``factor``; see the README). The
worker trusts only its own key, and only for how much it takes, never for anything else:

- **No bucket yet** (no projector has run, or provisioning has not created it): the worker uses
  the probation factor and looks for the bucket again every ``retry_s`` (a worker's comes from
  coordinator.backoff.tier_watch_retry_s).
- **No key yet** (the projector has not seen this worker), or the key was deleted or purged:
  the probation factor, as for any new worker.
- **A value that does not parse** (not JSON, no factor, a factor outside 0..1): ignored with a
  warning; the worker keeps the factor it had. A broken writer must not stop or unleash it.
- **Connection lost**: the watch is set up again after ``retry_s``; the factor holds meanwhile.

`PullGate` holds the factor and the pull budget (coordinator.budget, coordinator.allowance);
it takes time as an argument-free injected clock, so it is tested without a server.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError

from jetgrid.coordinator.allowance import pull_allowance
from jetgrid.coordinator.backoff import TIER_WATCH_RETRY_S
from jetgrid.coordinator.budget import Budget, new_budget, take, wait_time, with_factor
from jetgrid.coordinator.tiers import PROBATION
from jetgrid.events import InvalidEvent, load_json

__all__ = ["PullGate", "TierUpdate", "TierWatch", "parse_tier_value"]

log = logging.getLogger("jetgrid.worker.tiers")


@dataclass(frozen=True, slots=True)
class TierUpdate:
    """What the worker learnt from its key: a tier name and its factor."""

    tier: str
    factor: float
    revision: int | None = None


def parse_tier_value(data: bytes) -> TierUpdate:
    """A KV value -> TierUpdate; ValueError quoting the value when it is not a valid one."""
    try:
        doc: Any = load_json(data)
    except InvalidEvent as exc:
        raise ValueError(f"Tier value {data[:80]!r} is not JSON ({exc.reason})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"Tier value {data[:80]!r} is not a JSON object.")
    factor, tier = doc.get("factor"), doc.get("tier")
    if isinstance(factor, bool) or not isinstance(factor, int | float):
        raise ValueError(f"Tier value field 'factor' has value {factor!r}. Not a number.")
    if not (math.isfinite(factor) and 0.0 <= factor <= 1.0):
        raise ValueError(f"Tier value field 'factor' has value {factor!r}. Must be 0..1.")
    if not isinstance(tier, str) or not tier:
        raise ValueError(f"Tier value field 'tier' has value {tier!r}. Not a tier name.")
    return TierUpdate(tier, float(factor))


class PullGate:
    """The worker's tier factor and pull budget; `allowance` says how many jobs to ask for.

    `rate` 0 means no base rate: concurrency-bound, and the factor only gates (0 stops pulls).
    """

    def __init__(
        self,
        *,
        concurrency: int,
        rate: float = 0.0,
        burst: float = 0.0,
        factor: float = 0.5,
        tier: str = PROBATION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.concurrency = concurrency
        self.rate = rate
        self.clock = clock
        self.tier = tier
        self._factor = float(factor)
        self._budget: Budget | None = None
        if rate > 0:
            self._budget = new_budget(rate, burst or max(1.0, rate), factor, clock())
        self.changes = 0

    def __repr__(self) -> str:
        rate = f"{self.rate:g}/s" if self.rate else "unlimited"
        return f"<PullGate tier={self.tier} factor={self._factor:g} rate={rate}>"

    @property
    def factor(self) -> float:
        return self._factor

    @property
    def effective_rate(self) -> float | None:
        """Jobs/s this worker may take now; None when it has no base rate."""
        return self.rate * self._factor if self.rate else None

    def set_factor(self, factor: float, tier: str) -> bool:
        """Apply a new tier; True if the factor changed."""
        self.tier = tier
        if factor == self._factor:
            return False
        if self._budget is not None:
            self._budget = with_factor(self._budget, factor, self.clock())
        self._factor = float(factor)
        self.changes += 1
        return True

    def allowance(self, busy: int, outstanding: int, finishing: int = 0) -> int:
        """How many jobs to ask for now (coordinator.allowance)."""
        tokens = None
        if self._budget is not None:
            self._budget, _ = take(self._budget, 0, self.clock())  # refill to now
            tokens = self._budget.tokens
        return pull_allowance(
            concurrency=self.concurrency,
            busy=busy,
            outstanding=outstanding,
            factor=self._factor,
            tokens=tokens,
            finishing=finishing,
        )

    def charge(self, n: int = 1) -> bool:
        """A delivered job spends a token (a late delivery after a cut spends what is left).

        True when the budget covered all `n`; False when it did not (a factor-0 tier, or no
        whole token left): the jobs were taken for want of better (coordinator.fallback)."""
        if self._budget is None:
            return self._factor > 0
        self._budget, granted = take(self._budget, n, self.clock())
        return granted == n

    def wait_s(self, cap: float) -> float:
        """How long the pull loop may sleep before the budget can allow more (at most `cap`)."""
        if self._budget is None:
            return cap
        w = wait_time(self._budget, self.clock())
        return cap if math.isinf(w) else min(cap, max(w, 0.001))


class TierWatch:
    """Follows ``<bucket>/<worker_id>`` and calls `on_update` with each tier (None: no key)."""

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        worker_id: str,
        on_update: Callable[[TierUpdate | None], None],
        *,
        retry_s: float = TIER_WATCH_RETRY_S,
    ) -> None:
        self.js = js
        self.bucket = bucket
        self.worker_id = worker_id
        self.on_update = on_update
        self.retry_s = retry_s
        self.attached = asyncio.Event()
        self.bad_values = 0

    async def run(self) -> None:
        """Watch until cancelled; never raises anything but CancelledError."""
        missing_logged = False
        while True:
            try:
                kv = await self.js.key_value(self.bucket)
            except (BucketNotFoundError, NotFoundError):
                if not missing_logged:
                    log.info(
                        "tiers bucket %s does not exist yet; using the probation factor and "
                        "looking again every %ss",
                        self.bucket,
                        self.retry_s,
                    )
                    missing_logged = True
                await asyncio.sleep(self.retry_s)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away or slow: keep the factor, try again
                log.warning("cannot open tiers bucket %s: %s", self.bucket, exc)
                await asyncio.sleep(self.retry_s)
                continue
            try:
                await self._follow(kv)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("tier watch on %s/%s ended: %s", self.bucket, self.worker_id, exc)
            await asyncio.sleep(self.retry_s)

    async def _follow(self, kv: Any) -> None:
        watcher = await kv.watch(self.worker_id)
        try:
            self.attached.set()
            async for entry in watcher:
                if entry is None:  # caught up; with no key yet, the probation factor holds
                    continue
                if entry.operation is not None or not entry.value:  # DEL / PURGE
                    self.on_update(None)
                    continue
                try:
                    update = parse_tier_value(entry.value)
                except ValueError as exc:
                    self.bad_values += 1
                    log.warning("ignoring tier for %s: %s", self.worker_id, exc)
                    continue
                self.on_update(
                    TierUpdate(update.tier, update.factor, getattr(entry, "revision", None))
                )
        finally:
            self.attached.clear()
            try:
                await watcher.stop()
            except Exception:  # the connection may be gone already; nothing to unsubscribe
                pass
