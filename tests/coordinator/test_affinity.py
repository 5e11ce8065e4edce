from __future__ import annotations

import pytest

from jetgrid.coordinator.affinity import AffinityPolicy, cold_share, decide, may_pull
from jetgrid.coordinator.pools import PoolConfig

P = AffinityPolicy(cold_wait_s=10.0, cold_backlog=3)


@pytest.mark.parametrize(
    ("accepting", "warm", "pending", "oldest", "decision"),
    [
        (True, True, 0, None, "warm"),  # warm: always ask (a long poll waits for work)
        (True, True, 50, 99.0, "warm"),
        (False, True, 5, 1.0, "hold_unhealthy"),  # backend down: ask for nothing
        (False, False, 50, 99.0, "hold_unhealthy"),
        (True, False, 0, None, "hold_empty"),  # cold and nothing waiting
        (True, False, 1, 2.0, "hold_cold"),  # warm workers will get to it
        (True, False, 3, 9.9, "hold_cold"),  # backlog at the threshold is not over it
        (True, False, 1, 10.0, "cold_wait"),  # waited long enough: load the model
        (True, False, 2, 60.0, "cold_wait"),
        (True, False, 4, 0.5, "cold_backlog"),  # more than cold_backlog waiting
        (True, False, 4, None, "cold_backlog"),
        (True, False, 2, None, "hold_cold"),
        (True, None, 50, 99.0, "hold_missing"),  # the backend lacks the model: never ask
    ],
)
def test_warm_before_cold(accepting, warm, pending, oldest, decision) -> None:
    d = decide(
        P,
        accepting=accepting,
        warm=bool(warm),
        pending=pending,
        oldest_wait_s=oldest,
        available=warm is not None,
    )
    assert d == decision
    assert may_pull(d) is (not decision.startswith("hold"))


@pytest.mark.parametrize(("pending", "share"), [(4, 1), (5, 2), (20, 17), (1, 1)])
def test_a_cold_worker_asks_for_the_overflow_only(pending: int, share: int) -> None:
    assert cold_share(P, pending) == share


def test_thresholds_come_from_the_pool() -> None:
    pool = PoolConfig("gpu", extra={"cold_wait_s": 2, "cold_backlog": "0"})
    assert AffinityPolicy.for_pool(pool) == AffinityPolicy(cold_wait_s=2.0, cold_backlog=0)
    assert AffinityPolicy.for_pool(PoolConfig("x")) == AffinityPolicy()
    with pytest.raises(ValueError, match="pool 'bad'"):
        AffinityPolicy.for_pool(PoolConfig("bad", extra={"cold_wait_s": "soon"}))
    with pytest.raises(ValueError, match=">= 0"):
        AffinityPolicy.for_pool(PoolConfig("bad", extra={"cold_backlog": -1}))
