"""Retry rules: how long a transiently failed job waits before its next delivery."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff from `base_s`, doubling per attempt, capped at `max_s`."""

    base_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the `attempt`-th delivery failed transiently (attempt >= 1)."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        return float(min(self.max_s, self.base_s * self.factor ** (attempt - 1)))
