"""The quarantine rule: a job whose runs keep ending with no outcome is dead, not run again."""

from __future__ import annotations

import pytest

from jetgrid.coordinator.delivery import may_quarantine, quarantine_reason, runs_without_outcome
from jetgrid.coordinator.pools import PoolConfig, parse_pools
from jetgrid.events import ConfigError

POOL = PoolConfig("p", max_deliver=5, quarantine_after=2)


@pytest.mark.parametrize(
    ("attempt", "started", "ended", "lost"),
    [
        (1, [], [], []),
        (2, [1], [], [1]),  # the worker died while running delivery 1
        (2, [1], [1], []),  # delivery 1 said `retrying`
        (3, [1, 2], [2], [1]),
        (2, [], [], [1]),  # delivery 1 said no `started`: its worker died within a moment
        (3, [2], [], [1, 2]),
        (3, [2], [1], [2]),  # delivery 1 said `retrying` (carrying its claim)
        (4, [1, 2, 3], [], [1, 2, 3]),
        (3, [1, 2, 3, 4], [], [1, 2]),  # only deliveries before this one count
        (3, [0, -1, 1], [], [1]),  # nonsense attempts are ignored
    ],
)
def test_runs_without_outcome(attempt, started, ended, lost) -> None:
    assert runs_without_outcome(attempt, started, ended) == lost


@pytest.mark.parametrize(
    ("attempt", "started", "ended", "quarantined"),
    [
        (2, [1], [], False),  # one crash may be the worker's fault
        (3, [2], [], True),  # the first run said no `started`: the worker died within a moment
        (3, [1, 2], [], True),
        (3, [1, 2], [1], False),
        (4, [1, 2, 3], [2], True),
        (5, [1, 2, 3, 4], [1, 2, 3], False),  # transient failures are MaxDeliver's business
    ],
)
def test_quarantine_after_the_pools_number_of_lost_runs(
    attempt, started, ended, quarantined
) -> None:
    reason = quarantine_reason(attempt, started, ended, POOL)
    assert (reason is not None) == quarantined
    assert may_quarantine(attempt, POOL) or not quarantined


def test_the_reason_says_why_and_which_runs() -> None:
    assert quarantine_reason(3, [1, 2], [], POOL) == (
        "quarantined: 2 runs (deliveries 1, 2) ended with no outcome, as when the job kills "
        "the worker running it (pool 'p' allows 2); it is not run again"
    )


def test_no_history_lookup_before_enough_deliveries() -> None:
    assert [a for a in range(1, 6) if may_quarantine(a, POOL)] == [3, 4, 5]
    assert PoolConfig("d").quarantine_after == 3  # the default: before MaxDeliver's 5 runs


def test_quarantine_after_is_read_from_the_pools_file_and_checked() -> None:
    pools = parse_pools('[[pool]]\nname = "gpu"\nquarantine_after = 1\n', default="gpu")
    assert pools["gpu"].quarantine_after == 1
    with pytest.raises(ConfigError, match="quarantine_after 0; give 1 or more"):
        parse_pools('[[pool]]\nname = "gpu"\nquarantine_after = 0\n', default="gpu")
