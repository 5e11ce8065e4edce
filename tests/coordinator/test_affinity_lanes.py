"""Cache affinity (coordinator.share): the affinity key of a job, the lane it picks, and when a
worker may take a lane's jobs (its owner at once, anyone after the wait: nothing is stranded)."""

from __future__ import annotations

import itertools

import pytest

from jetgrid.coordinator.pools import PoolConfig
from jetgrid.coordinator.share import (
    Affinity,
    affinity_key,
    lane_of,
    may_take_lane,
    owns_after,
    queue_lane,
)

SYS = {"role": "system", "content": "be brief"}


def _chat(*contents: str, system: bool = True) -> dict:  # type: ignore[type-arg]
    roles = itertools.cycle(["user", "assistant"])
    msgs = [{"role": next(roles), "content": c} for c in contents]
    return {"messages": ([SYS] if system else []) + msgs}


def test_every_turn_of_a_conversation_has_one_key() -> None:
    turns = [_chat("hi", "hello", "more"), _chat("hi", "hello", "more", "ok", "again")]
    keys = {affinity_key(session=None, kind="chat", input=t) for t in turns}
    assert len(keys) == 1 and next(iter(keys)).startswith("prefix:")  # type: ignore[union-attr]
    other = affinity_key(session=None, kind="chat", input=_chat("bye", "x", "y"))
    assert other not in keys
    # Without a system message the first message leads.
    assert affinity_key(session=None, kind="chat", input=_chat("a", "b", system=False))
    # The first turn shares it: its worker then holds the start of the conversation.
    assert affinity_key(session=None, kind="chat", input=_chat("hi")) in keys
    assert affinity_key(session=None, kind="chat", input={"messages": [SYS]}) is None
    assert affinity_key(session=None, kind="chat", input={"messages": []}) is None
    assert affinity_key(session=None, kind="generate", input=None) is None
    assert affinity_key(session=None, kind="chat", input={"messages": "x"}) is None


def test_a_session_key_wins() -> None:
    assert affinity_key(session="s1", kind="chat", input=_chat("hi", "a", "b")) == "session:s1"
    assert affinity_key(session="s1", kind="generate") == "session:s1"


def test_lanes_spread_and_stay_put() -> None:
    lanes = [lane_of(f"session:{i}", 16) for i in range(1000)]
    assert set(lanes) == set(range(16))
    assert max(lanes.count(i) for i in range(16)) < 2 * 1000 / 16
    assert lane_of("session:x", 16) == lane_of("session:x", 16)


def _pool(**extra: object) -> PoolConfig:
    return PoolConfig("standard", extra={"fair_share": True, **extra})


def test_lanes_are_configured_per_pool() -> None:
    assert Affinity.for_pool(_pool()) is None
    assert Affinity.for_pool(_pool(affinity_lanes=8, affinity_wait_s=1)) == Affinity(8, 1.0)
    for bad in ({"affinity_lanes": -1}, {"affinity_lanes": 1001}, {"affinity_lanes": "8"},
                {"affinity_lanes": 4, "affinity_wait_s": -1},
                {"affinity_lanes": 4, "affinity_ttl_s": "x"}):  # fmt: skip
        with pytest.raises(ValueError, match="'standard'"):
            Affinity.for_pool(_pool(**bad))
    with pytest.raises(ValueError, match="without fair_share"):
        Affinity.for_pool(PoolConfig("standard", extra={"affinity_lanes": 4}))


def test_queue_lane_needs_lanes_a_tenant_and_a_key() -> None:
    chat = _chat("hi", "a", "b")
    pool = _pool(affinity_lanes=16)
    lane = queue_lane(pool, "ci", session=None, kind="chat", input=chat)
    assert lane is not None and 0 <= lane < 16
    assert queue_lane(pool, "ci", session="s", kind="generate") == lane_of("session:s", 16)
    assert queue_lane(pool, None, session="s", kind="generate") is None
    assert queue_lane(pool, "ci", session=None, kind="generate") is None
    assert queue_lane(_pool(), "ci", session="s", kind="generate") is None


@pytest.mark.parametrize(
    ("owned_at", "now", "oldest", "take"),
    [
        (100.0, 100.0, None, True),  # the owner asks at once, even before it sees a job
        (100.0, 399.9, 0.0, True),
        (100.0, 400.0, 0.0, False),  # ownership ends after ttl_s
        (100.0, 400.0, 0.5, True),  # ... then it waits like anyone
        (None, 0.0, None, False),  # nothing waits
        (None, 0.0, 0.49, False),  # the owner's first chance
        (None, 0.0, 0.5, True),  # anyone, after the wait: never stranded
        (None, 0.0, 1e9, True),
    ],
)
def test_who_may_take_a_lane(
    owned_at: float | None, now: float, oldest: float | None, take: bool
) -> None:
    aff = Affinity(16, wait_s=0.5, ttl_s=300.0)
    assert may_take_lane(aff, owned_at=owned_at, now=now, oldest_wait_s=oldest) is take


def test_no_lane_job_waits_past_the_wait_whoever_owns_what() -> None:
    """Exhaustively over small grids: once a job waited wait_s every worker may take it."""
    for wait, ttl in itertools.product((0.0, 0.5, 2.0), (0.0, 1.0, 300.0)):
        aff = Affinity(4, wait_s=wait, ttl_s=ttl)
        for owned_at, now in itertools.product((None, 0.0, 50.0), (0.0, 10.0, 1000.0)):
            assert may_take_lane(aff, owned_at=owned_at, now=now, oldest_wait_s=wait)


@pytest.mark.parametrize(
    ("stolen", "steals", "owns"),
    [(False, 0, True), (True, 1, False), (True, 2, True), (True, 5, True)],
)
def test_one_late_pickup_makes_no_second_owner(stolen: bool, steals: int, owns: bool) -> None:
    assert owns_after(stolen=stolen, steals=steals) is owns
