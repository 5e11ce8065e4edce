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
    held, asked = range(0, 4), range(0, 2)
    return itertools.product(held, held, held, asked, asked, asked, range(1, 7), range(0, 4))


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
    """Over 3 tenants x 0-3 held jobs x 0-1 open requests each, 1-6 slots, reserve 0-3, every
    subset waiting: the free slots split whole; without a reserve all are open (today's
    behaviour); once the open slots are taken, the reserve (at most concurrency - 1) is still
    free or asked for by tenants under their share, and no more is held back; the under ones
    are exactly those below their weighted share; a tenant alone is never under it, and still
    gets concurrency - reserve slots (nothing stranded)."""
    for (*jobs, conc, reserve), waiting_bits in itertools.product(_cases(), range(8)):
        held = dict(zip(TENANTS, jobs[:3], strict=True))
        asked = dict(zip(TENANTS, jobs[3:], strict=True))
        used = sum(jobs)
        if used > conc:
            continue
        waiting = {t for i, t in enumerate(TENANTS) if waiting_bits >> i & 1}
        fair = FairShare(weights, reserve=reserve)
        free = conc - used
        room = headroom(free, held, asked, waiting, fair, conc)
        assert room.open + room.reserved == free and room.open >= 0 and room.reserved >= 0
        if reserve == 0:
            assert room.open == free
        kept = min(reserve, conc - 1)
        asked_under = sum(asked[t] for t in room.under)
        assert room.reserved + asked_under >= min(kept, free + asked_under)
        assert room.reserved == 0 or room.reserved + asked_under <= kept  # no more held back
        n = {t: held[t] + asked[t] for t in TENANTS}
        active = {t for t in TENANTS if n[t]} | waiting
        w = sum(fair.weight(t) for t in active)
        for t in active:
            assert (t in room.under) == (n[t] / used < fair.weight(t) / w if used else False)
        assert room.under <= active
        if len(active) == 1:
            assert not room.under
            if used == 0:
                assert room.open == conc - kept  # a lone tenant: capped, never stranded


def test_a_flood_leaves_the_reserved_slot_to_the_small_tenant() -> None:
    fair, both = FairShare(reserve=1), {"flood", "small"}
    room = headroom(1, {"flood": 15}, {}, both, fair, 16)
    assert (room.open, room.reserved, room.under) == (0, 1, frozenset({"small"}))
    # The small tenant got it; a flood job ends: that slot is kept for the next small job.
    room = headroom(1, {"flood": 14, "small": 1}, {}, both, fair, 16)
    assert (room.open, room.reserved) == (0, 1)
    # The small tenant long-polls that slot: the next one to free is the flood's.
    room = headroom(1, {"flood": 14, "small": 1}, {"small": 1}, both, fair, 16)
    assert (room.open, room.reserved) == (1, 0)
    # The flood alone: 15 of 16 slots, the last kept.
    room = headroom(16, {}, {}, {"flood"}, fair, 16)
    assert (room.open, room.reserved, room.under) == (15, 1, frozenset())


def test_a_worker_keeps_at_most_all_slots_but_one() -> None:
    room = headroom(2, {}, {}, {"a"}, FairShare(reserve=5), 2)
    assert (room.open, room.reserved) == (1, 1)
