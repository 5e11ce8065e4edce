"""How a replay reads and writes: one commit per `batch_max` messages folded, whatever the
batches that arrive, and each message's position read as nats-py's metadata gives it."""

from __future__ import annotations

from typing import Any

import pytest

from jetgrid.events import JOB_EVENTS, WORKERS
from jetgrid.projections.replay import replay
from jetgrid.projections.store import Store


async def _history(log: Any) -> None:
    for w in range(3):
        await log.register(f"w{w}")
        await log.pings(f"w{w}", 1, 60, miss={7, 8, 30 + w})
    for j in range(6):
        await log.job(f"j{j}", f"w{j % 3}", 5 + j)


@pytest.mark.integration
async def test_a_replay_commits_once_per_batch_max_and_the_views_do_not_depend_on_it(
    log, nc, bus, make_store, monkeypatch
) -> None:
    await _history(log)
    writes: list[dict[str, int]] = []
    write = Store.write

    async def counting(self: Store, changes: Any, factor: Any) -> None:
        writes.append(dict(changes.positions))
        await write(self, changes, factor)

    monkeypatch.setattr(Store, "write", counting)
    whole = await replay(log.settings, make_store(), bus, batch_max=100_000)
    # Three streams, many arriving batches: one transaction at the end.
    assert writes == [whole.positions]
    writes.clear()
    small = await replay(log.settings, make_store(), bus, batch_max=40)
    total = sum(small.positions.values())
    assert len(writes) in (total // 40, total // 40 + 1)
    assert writes[-1] == small.positions
    assert small.digest == whole.digest and small.positions[JOB_EVENTS] > 0
    assert small.positions[WORKERS] == whole.positions[WORKERS]
