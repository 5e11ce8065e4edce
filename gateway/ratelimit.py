"""Token-bucket rate limiting as a pure function over plain data (time is an input)."""

from __future__ import annotations

from dataclasses import dataclass


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
