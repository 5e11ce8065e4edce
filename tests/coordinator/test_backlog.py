"""Backlogs of pool consumers: a (pool, model)'s priority consumers add up to one row."""

from __future__ import annotations

from jetgrid.coordinator.backlog import Backlog, merge_priorities


def test_priority_consumers_add_up_to_one_row() -> None:
    rows = merge_priorities(
        [
            Backlog("fast", "m", "pool-fast-m_high", pending=1, oldest_ts=20.0),
            Backlog("fast", "m", "pool-fast-m", pending=3, running=2, oldest_ts=10.0),
            Backlog("fast", "m", "pool-fast-m_low", pending=0),
            Backlog("fast", "other", "pool-fast-other", pending=5),
        ]
    )
    assert rows == [
        Backlog("fast", "m", "pool-fast-m", pending=4, running=2, oldest_ts=10.0),
        Backlog("fast", "other", "pool-fast-other", pending=5),
    ]
