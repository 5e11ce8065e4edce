"""Which jobs a worker looks up for a stored cancel request: by the server's clock while the
mark taken when its listener went live holds, by its own clock (with the margin) after."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from jetgrid.coordinator.bus import Bus, Continuity
from jetgrid.coordinator.settings import Settings
from jetgrid.worker.cancels import Cancels
from jetgrid.worker.held import Held
from jetgrid.worker.options import Counters


def at(s: float) -> datetime:
    return datetime.fromtimestamp(s, UTC)


def cancels() -> tuple[Cancels, Any]:
    bus = SimpleNamespace(continuity=Continuity(1000.0))
    c = Cancels(bus=cast(Bus, bus), settings=Settings(), counters=Counters(), held=Held())
    c.heard_since = 1000.0  # listening since, by this worker's clock
    return c, bus


def test_unmarked_it_judges_by_its_own_clock_with_the_margin() -> None:
    c, _ = cancels()
    assert not c.heard_live(at(1001.9))  # within the 2 s margin: looked up
    assert c.heard_live(at(1002.1))


def test_marked_it_judges_by_the_servers_clock_until_a_reconnect() -> None:
    c, bus = cancels()
    c.heard_since_server, c._marked_under = 1000.1, (1000.0, 1000.0)  # what `mark` records
    assert not c.heard_live(at(1000.3))  # two servers' clocks may be 0.25 s apart
    assert c.heard_live(at(1000.4))  # long before the worker's own 2 s margin
    bus.continuity.since = 1500.0  # reconnected: requests may have been missed meanwhile
    assert not c.heard_live(at(1500.4))
    assert c.heard_live(at(1502.1))
    c2, _ = cancels()
    c2.heard_since_server, c2._marked_under = 1000.1, (1000.0, 1000.0)
    c2.heard_since = 1200.0  # it forgot a request: the mark no longer holds
    assert not c2.heard_live(at(1200.4)) and c2.heard_live(at(1202.1))
