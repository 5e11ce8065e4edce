"""The pull allowance: free slots, tier factor and budget tokens -> how many jobs to ask for."""

from __future__ import annotations

import pytest

from jetgrid.coordinator.allowance import pull_allowance

# concurrency, busy, outstanding, factor, tokens, max_batch -> expected
CASES = [
    # no base rate: concurrency-bound, the factor only gates
    (4, 0, 0, 1.0, None, None, 4),
    (4, 0, 0, 0.5, None, None, 4),
    (4, 0, 0, 0.1, None, None, 4),
    (4, 0, 0, 0.0, None, None, 0),
    (4, 3, 0, 1.0, None, None, 1),
    (4, 2, 2, 1.0, None, None, 0),
    (4, 4, 1, 1.0, None, None, 0),  # never negative
    (8, 0, 0, 1.0, None, 3, 3),
    # a base rate: whole tokens not reserved by open requests, within free slots
    (4, 0, 0, 1.0, 10.0, None, 4),
    (4, 0, 0, 0.5, 2.0, None, 2),
    (4, 0, 0, 0.1, 0.99, None, 0),  # not a whole token yet
    (4, 0, 0, 0.1, 0.9999999999, None, 1),  # float noise counts as whole
    (4, 0, 1, 1.0, 2.0, None, 1),  # one token reserved by an open request
    (4, 0, 3, 1.0, 2.0, None, 0),
    (4, 1, 0, 1.0, 3.0, None, 3),
    (4, 3, 0, 1.0, 3.0, None, 1),
    (4, 0, 0, 0.0, 5.0, None, 0),  # factor 0 wins over tokens
    (4, 0, 0, 1.0, 0.0, None, 0),
    (16, 0, 0, 1.0, 20.0, 5, 5),
]

# concurrency, busy, finishing, tokens -> expected: outcomes being stored hold no slot, until
# there are more of them than slots
FINISHING = [
    (4, 0, 4, None, 4),
    (4, 2, 3, None, 2),
    (4, 0, 5, None, 0),
    (1, 0, 1, None, 1),
    (1, 0, 2, None, 0),
    (4, 0, 4, 2.0, 2),
    (4, 0, 9, 10.0, 0),
]


@pytest.mark.parametrize(
    ("concurrency", "busy", "outstanding", "factor", "tokens", "max_batch", "expected"), CASES
)
def test_pull_allowance(concurrency, busy, outstanding, factor, tokens, max_batch, expected):
    got = pull_allowance(
        concurrency=concurrency,
        busy=busy,
        outstanding=outstanding,
        factor=factor,
        tokens=tokens,
        max_batch=max_batch,
    )
    assert got == expected


@pytest.mark.parametrize("factor", [-0.1, 1.5])
def test_a_factor_outside_0_1_is_refused(factor: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        pull_allowance(concurrency=1, busy=0, outstanding=0, factor=factor, tokens=None)


@pytest.mark.parametrize(("concurrency", "busy", "finishing", "tokens", "expected"), FINISHING)
def test_outcomes_being_stored_free_their_slots_up_to_a_cap(
    concurrency: int, busy: int, finishing: int, tokens: float | None, expected: int
) -> None:
    got = pull_allowance(
        concurrency=concurrency,
        busy=busy,
        outstanding=0,
        factor=1.0,
        tokens=tokens,
        finishing=finishing,
    )
    assert got == expected
