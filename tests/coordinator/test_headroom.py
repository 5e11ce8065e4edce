"""Headroom in a fair-share pool (coordinator.share.headroom): which tenants may take a worker's
reserved slots, checked over every small case."""

from __future__ import annotations

import itertools

import pytest

from jetgrid.coordinator.pools import PoolConfig
from jetgrid.coordinator.share import FairShare, Tenant, headroom

TENANTS: tuple[Tenant, ...] = (None, "a", "b")
WEIGHTS = ({}, {"a": 3.0}, {"a": 0.5, "b": 2.0})


def _cases() -> itertools.product[tuple[int, ...]]:
    return itertools.product(range(0, 5), range(0, 5), range(0, 5), range(1, 7), range(0, 4))


def test_reserve_slots_come_from_the_pools_file_and_need_fair_share() -> None:
    fair = FairShare.for_pool(PoolConfig("p", extra={"fair_share": True, "reserve_slots": 2}))
    assert fair is not None and fair.reserve == 2
    assert FairShare.for_pool(PoolConfig("p", extra={"fair_share": True})) == FairShare()
    for bad, message in (
        ({"fair_share": True, "reserve_slots": -1}, "reserve_slots must be a whole number"),
        ({"fair_share": True, "reserve_slots": 1.5}, "reserve_slots must be a whole number"),
        ({"fair_share": True, "reserve_slots": True}, "reserve_slots must be a whole number"),
        ({"reserve_slots": 1}, "without fair_share = true"),
    ):
        with pytest.raises(ValueError, match=message) as err:
            FairShare.for_pool(PoolConfig("p", extra=bad))
        assert "'p'" in str(err.value)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_every_small_case_keeps_the_rules(weights: dict[str, float]) -> None:
    """Over 3 tenants x 0-4 jobs each, 1-6 slots, reserve 0-3, every subset waiting: the free
    slots split whole; without a reserve all are open (today's behaviour); tenants over their
    share never exceed concurrency - reserve together; the under ones are exactly those below
    their weighted share; a tenant alone is never under it, and still gets concurrency -
    reserve slots (nothing stranded)."""
    for (*held, conc, reserve), waiting_bits in itertools.product(_cases(), range(8)):
        running = dict(zip(TENANTS, held, strict=True))
        used = sum(held)
        if used > conc:
            continue
        waiting = {t for i, t in enumerate(TENANTS) if waiting_bits >> i & 1}
        fair = FairShare(weights, reserve=reserve)
        free = conc - used
        room = headroom(free, running, waiting, fair, conc)
        assert room.open + room.reserved == free and room.open >= 0 and room.reserved >= 0
        if reserve == 0:
            assert room.open == free
        kept = min(reserve, conc - 1)
        over = sum(n for t, n in running.items() if t not in room.under)
        assert over + room.open <= max(conc - kept, over)
        if over < conc - kept:  # the over-share tenants still get their slots up to the cap
            assert room.open == min(free, conc - kept - over)
        active = {t for t, n in running.items() if n} | waiting
        w = sum(fair.weight(t) for t in active)
        for t in active:
            assert (t in room.under) == (running[t] / used < fair.weight(t) / w if used else False)
        assert room.under <= active
        if len(active) == 1:
            assert not room.under
            if used == 0:
                assert room.open == conc - kept  # a lone tenant: capped, never stranded


def test_a_flood_leaves_the_reserved_slot_to_the_small_tenant() -> None:
    fair = FairShare(reserve=1)
    room = headroom(1, {"flood": 15}, {"flood", "small"}, fair, 16)
    assert (room.open, room.reserved, room.under) == (0, 1, frozenset({"small"}))
    # The small tenant got it; a flood job ends: that slot is the flood's again.
    room = headroom(1, {"flood": 14, "small": 1}, {"flood", "small"}, fair, 16)
    assert (room.open, room.reserved) == (1, 0)
    # The flood alone: 15 of 16 slots, the last kept.
    room = headroom(16, {}, {"flood"}, fair, 16)
    assert (room.open, room.reserved, room.under) == (15, 1, frozenset())


def test_a_worker_keeps_at_most_all_slots_but_one() -> None:
    room = headroom(2, {}, {"a"}, FairShare(reserve=5), 2)
    assert (room.open, room.reserved) == (1, 1)
