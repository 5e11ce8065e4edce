"""Rate and concurrency limits over plain data: a token bucket (time is an input) and counted
slots."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    at: float  # the clock reading `tokens` was computed at


def take(
    bucket: Bucket | None, now: float, rate: float, burst: float, cost: float = 1.0
) -> tuple[Bucket, float]:
    """Spend `cost` tokens from a bucket refilled at `rate`/s up to `burst`.

    Returns the new bucket and 0.0 when allowed, or the unchanged (refilled) bucket and the
    seconds until `cost` tokens will be there when refused. A rate of 0 or less never limits.
    """
    if rate <= 0:
        return bucket or Bucket(burst, now), 0.0
    if bucket is None:
        bucket = Bucket(burst, now)
    tokens = min(burst, bucket.tokens + max(0.0, now - bucket.at) * rate)
    if tokens >= cost:
        return Bucket(tokens - cost, now), 0.0
    return Bucket(tokens, now), (cost - tokens) / rate


@dataclass(slots=True)
class Slots:
    """Concurrent leases (open streams, open waits), at most `per_owner` per owner and `total`
    in all, as plain counters: `acquire` says which limit refuses, `release` gives one back."""

    per_owner: int
    total: int
    held: dict[str, int] = field(default_factory=dict)
    in_use: int = 0

    def acquire(self, owner: str) -> str | None:
        """Take a slot for `owner`; None when granted, else "owner" or "total": the limit that
        refuses (nothing is taken then)."""
        if self.held.get(owner, 0) >= self.per_owner:
            return "owner"
        if self.in_use >= self.total:
            return "total"
        self.held[owner] = self.held.get(owner, 0) + 1
        self.in_use += 1
        return None

    def release(self, owner: str) -> None:
        """Give back one slot of `owner` (one it does not hold is ignored)."""
        n = self.held.get(owner, 0)
        if n <= 0:
            return
        if n == 1:
            del self.held[owner]
        else:
            self.held[owner] = n - 1
        self.in_use -= 1
