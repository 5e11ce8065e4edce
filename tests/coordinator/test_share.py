"""Fair share between tenants (coordinator.share): weights from the pools file, the virtual
times that keep idle tenants from banking credit, and how a worker splits its free slots."""

from __future__ import annotations

import itertools

import pytest

from jetgrid.coordinator.pools import PoolConfig
from jetgrid.coordinator.share import FairShare, Shares, Tenant, allocate, queue_tenant


def _pool(**extra: object) -> PoolConfig:
    return PoolConfig("standard", extra=dict(extra))


def test_fair_share_is_off_unless_the_pool_says_so() -> None:
    assert FairShare.for_pool(_pool()) is None
    assert FairShare.for_pool(_pool(fair_share=False)) is None
    fair = FairShare.for_pool(_pool(fair_share=True, tenant_weights={"ci": 2, "batch": 0.25}))
    assert fair is not None
    assert (fair.weight("ci"), fair.weight("batch"), fair.weight("x"), fair.weight(None)) == (
        2.0,
        0.25,
        1.0,
        1.0,
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"fair_share": "yes"}, "fair_share must be true or false"),
        ({"fair_share": True, "tenant_weights": [1]}, "tenant_weights must be a table"),
        ({"fair_share": True, "tenant_weights": {"a": 0}}, r"tenant_weights.a must be .*> 0"),
        ({"fair_share": True, "tenant_weights": {"a": "2"}}, r"tenant_weights.a must be"),
        ({"fair_share": True, "tenant_weights": {"a": True}}, r"tenant_weights.a must be"),
        ({"tenant_weights": {"a": 1}}, "without fair_share = true"),
    ],
)
def test_bad_weights_are_one_sentence_naming_the_pool(extra: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message) as err:
        FairShare.for_pool(_pool(**extra))
    assert "'standard'" in str(err.value)


def test_queue_tenant_is_the_submitter_only_in_a_fair_pool() -> None:
    assert queue_tenant(_pool(fair_share=True), "ci") == "ci"
    assert queue_tenant(_pool(fair_share=True), None) is None
    assert queue_tenant(_pool(), "ci") is None


def _tenant(q: tuple[str, Tenant]) -> Tenant:
    return q[1]


def test_a_flood_does_not_take_the_small_tenants_slot() -> None:
    fair, shares = FairShare(), Shares()
    pending = {("m", "flood"): 1000, ("m", "small"): 3}
    plan = allocate(4, pending, _tenant, fair, shares)
    assert plan == {("m", "flood"): 2, ("m", "small"): 2}
    # The flood took more earlier: the small tenant goes first now.
    shares.charge("flood", 10, 1.0)
    assert allocate(1, pending, _tenant, fair, shares) == {("m", "small"): 1}
    # And a slot the small tenant cannot use goes to the flood (work conserving).
    assert allocate(5, pending, _tenant, fair, shares) == {("m", "small"): 3, ("m", "flood"): 2}


def test_weights_divide_the_slots() -> None:
    fair = FairShare({"big": 3.0})
    plan = allocate(8, {("m", "big"): 100, ("m", "one"): 100}, _tenant, fair, Shares())
    assert plan == {("m", "big"): 6, ("m", "one"): 2}


def test_ties_go_to_the_shared_queue_then_by_name_and_a_tenants_fullest_queue() -> None:
    pending = {("m", "b"): 5, ("m", "a"): 5, ("m", None): 5}
    assert allocate(1, pending, _tenant, FairShare(), Shares()) == {("m", None): 1}
    assert allocate(2, pending, _tenant, FairShare(), Shares()) == {("m", None): 1, ("m", "a"): 1}
    two = {("m1", "a"): 1, ("m2", "a"): 4}
    assert allocate(2, two, _tenant, FairShare(), Shares()) == {("m2", "a"): 2}


def test_a_tenant_back_from_idle_wins_the_tie_with_a_flood_for_one_freed_slot() -> None:
    """It starts level with the flood (no banked credit), and the one slot that frees goes to
    it, not to whichever name sorts first: its job does not wait for a second slot."""
    fair, shares = FairShare(), Shares()
    shares.wake({"a-flood"})
    shares.charge("a-flood", 30, 1.0)
    shares.charge("z-small", 1, 1.0)
    shares.charge("a-flood", 60, 1.0)  # z-small went idle meanwhile; the flood went on
    pending = {("m", "a-flood"): 1000, ("m", "z-small"): 1}
    shares.wake({"a-flood", "z-small"})
    assert shares.vt["z-small"] == shares.vt["a-flood"]
    assert allocate(1, pending, _tenant, fair, shares) == {("m", "z-small"): 1}
    shares.charge("z-small", 1, 1.0)
    assert allocate(1, pending, _tenant, fair, shares) == {("m", "a-flood"): 1}


def test_nothing_pending_nothing_asked() -> None:
    assert allocate(4, {("m", "a"): 0}, _tenant, FairShare(), Shares()) == {}
    assert allocate(0, {("m", "a"): 9}, _tenant, FairShare(), Shares()) == {}
    assert allocate(-1, {("m", "a"): 9}, _tenant, FairShare(), Shares()) == {}


def test_a_tenant_back_from_idle_banks_no_credit() -> None:
    shares = Shares()
    shares.wake({"a", "b"})
    shares.charge("a", 100, 1.0)
    shares.charge("b", 100, 1.0)
    shares.wake({"a"})  # b went idle; a goes on
    shares.charge("a", 50, 1.0)
    shares.wake({"a", "b"})  # b is back: it starts where a is, not 50 jobs behind
    assert shares.vt["b"] == shares.vt["a"] == 150
    shares.wake({"c", "a", "b"})  # a new tenant starts at the busy tenants' smallest time
    assert shares.vt["c"] == 150
    shares.charge("a", 0, 1.0)  # nothing taken, nothing charged
    assert shares.vt["a"] == 150


def test_after_everyone_was_idle_the_most_served_sets_the_floor() -> None:
    shares = Shares(vt={"a": 5.0, "b": 9.0})
    shares.wake({"a"})
    assert shares.vt["a"] == 9.0  # nobody stayed busy: nobody is behind


@pytest.mark.parametrize("free", range(0, 7))
def test_allocation_laws_over_every_small_case(free: int) -> None:
    """Every split of up to 6 slots over three tenants (weights 1, 2, 0.5) with 0-3 jobs each
    and virtual times 0-2: never more than a queue holds, all slots used while jobs remain, and
    no tenant that could still take one ends further than one slot behind its weighted share."""
    fair = FairShare({"b": 2.0, "c": 0.5})
    tenants: list[Tenant] = [None, "b", "c"]
    for counts in itertools.product(range(4), repeat=3):
        for vts in itertools.product(range(3), repeat=3):
            pending = {("m", t): n for t, n in zip(tenants, counts, strict=True)}
            shares = Shares(vt={t: float(v) for t, v in zip(tenants, vts, strict=True)})
            plan = allocate(free, pending, _tenant, fair, shares)
            assert all(0 < n <= pending[q] for q, n in plan.items())
            assert sum(plan.values()) == min(free, sum(counts))
            final = {t: shares.vt[t] + plan.get(("m", t), 0) / fair.weight(t) for t in tenants}
            for t in tenants:
                if plan.get(("m", t), 0) < pending[("m", t)]:  # t could have taken more
                    for u in tenants:
                        if plan.get(("m", u), 0):  # u got a slot: at that moment u was not
                            # ahead of t, so u ends at most one of its slots past t
                            assert final[u] - 1 / fair.weight(u) <= final[t] + 1e-9
