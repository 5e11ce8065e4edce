"""How a replay reads and writes: one commit per `batch_max` messages folded, whatever the
batches that arrive, and each message's position read as nats-py's metadata gives it."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.msg import Msg

from jetgrid.coordinator.position import position
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


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.B_WORKERS.abc.1.4242.17.1764950400123456789.0",
        "$JS.ACK.S.c.3.1.1.1700000000000000001.99",
        # the form with a domain and an account hash: left to nats-py
        "$JS.ACK.dom.ACCHASH.S.c.1.77.5.1764950400123456789.2.rnd",
        "$JS.ACK._.ACCHASH.S.c.1.78.6.1764950400123456789.2",
    ],
)
def test_a_position_is_what_nats_metadata_says(reply: str) -> None:
    msg = Msg(_client=None, subject="s", reply=reply, data=b"")  # type: ignore[arg-type]
    md = msg.metadata
    seq, stamp = position(Msg(_client=None, subject="s", reply=reply, data=b""))  # type: ignore[arg-type]
    assert (seq, stamp) == (md.sequence.stream, md.timestamp)
    assert stamp.tzinfo is not None and stamp.utcoffset() == md.timestamp.utcoffset()
